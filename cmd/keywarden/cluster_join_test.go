//go:build cgo

package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/cluster/join"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/apptest/appserver"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/clusterapi"
)

// etcdLearnerMember is cluster.Member on a real embedded etcd member.
type etcdLearnerMember struct{ cli *clientv3.Client }

func (m etcdLearnerMember) AddLearner(ctx context.Context, name string, peerURLs []string) (uint64, string, error) {
	rsp, err := m.cli.MemberAddAsLearner(ctx, peerURLs)
	if err != nil {
		return 0, "", err
	}
	return rsp.Member.ID, name + "=" + strings.Join(peerURLs, ","), nil
}

func (m etcdLearnerMember) ClusterID() uint64 {
	rsp, err := m.cli.MemberList(context.Background())
	if err != nil {
		return 0
	}
	return rsp.Header.ClusterId
}

// TestClusterJoinCommands: `keywarden cluster join` on a node whose TPM is
// a swtpm, `keywarden cluster approve -yes` against the approving member
// (an appliance on the simulator, a member of an embedded etcd cluster):
// the joiner ends with the member's root key and writes cluster_joined in
// its own audit log; the member audits the request and the approval.
func TestClusterJoinCommands(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	c := etcddev.Embedded(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx := context.Background()
	// The cluster's policy: the joiner's (swtpm's) PCR values.
	raw, err := tpmdev.Open(ctx, sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	values, err := attest.ReadPCRs(ctx, raw, join.DefaultPCRs)
	_ = raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	policy, err := attest.PolicyFromPCRs(values)
	if err != nil {
		t.Fatal(err)
	}
	app := appserver.New(t, appserver.Before(func(a *appserver.App, o *server.Options) {
		svc, err := join.New(join.Options{DB: a.DB, Audit: a.Audit, Root: a.Root, Member: etcdLearnerMember{cli},
			AllowUnverifiedEK: true, // as in dev mode: the simulator has no maker's EK certificate
			Policy:            func(context.Context) (*attest.Policy, error) { return policy, nil }})
		if err != nil {
			t.Fatal(err)
		}
		o.ClusterJoins = clusterapi.NewJoins(svc)
	}))

	data := t.TempDir()
	t.Setenv("KEYWARDEN_DEV", "1")
	t.Setenv("KEYWARDEN_TPM_PATH", sw.Spec)
	t.Setenv("KEYWARDEN_DATA_DIR", data)
	t.Setenv("KEYWARDEN_ADMIN_KEY", apptest.AdminKey)
	var got cluster.Joined
	saved := saveJoined
	saveJoined = func(_ context.Context, _ transport.TPM, cfg config.Config, j cluster.Joined) error {
		if cfg.Data.Dir != data {
			t.Errorf("saveJoined got data dir %s", cfg.Data.Dir)
		}
		got = j
		got.RootKey = secret.CopyBytes(j.RootKey.Reveal()) // the command wipes its own
		return nil
	}
	t.Cleanup(func() { saveJoined = saved })

	done := make(chan error, 1)
	go func() {
		done <- cmdClusterJoin(ctx, []string{"-name", "n2", "-peer", "https://10.0.0.2:2380", "-poll", "20ms", app.URL})
	}()
	// The operator waits for the request to show up, then approves it.
	var id string
	for id == "" {
		r := app.Admin(http.MethodGet, "/v1/admin/cluster/joins", nil)
		var l struct{ Joins []join.Pending }
		r.Decode(t, &l)
		if len(l.Joins) == 1 {
			id = l.Joins[0].ID
		}
		select {
		case err := <-done:
			t.Fatalf("cluster join ended before the approval: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := cmdClusterApprove(ctx, []string{"-url", app.URL, "-yes", id}); err != nil {
		t.Fatalf("cluster approve: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("cluster join: %v", err)
	}
	rid, err := enclave.RootID(got.RootKey)
	if err != nil || rid != app.Root.RootID() {
		t.Fatalf("the joiner kept another root key (%v)", err)
	}
	if got.Name != "n2" || got.MemberID == 0 || got.ClusterID == 0 {
		t.Fatalf("joined: %+v", got)
	}
	files, _ := filepath.Glob(filepath.Join(data, "audit", "*.jsonl"))
	var joinerLog strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(f)
		joinerLog.Write(b)
	}
	if !strings.Contains(joinerLog.String(), `"action":"cluster_joined"`) {
		t.Fatalf("the joiner's audit log lacks cluster_joined: %s", joinerLog.String())
	}
	lines := app.AuditLines(t)
	for _, want := range []string{`"action":"cluster_join_requested"`, `"action":"cluster_join_approved"`} {
		if !strings.Contains(lines, want) {
			t.Errorf("the member's audit log lacks %s", want)
		}
	}

	// A second approval of the same request, and a refusal, are refused.
	if err := cmdClusterApprove(ctx, []string{"-url", app.URL, "-yes", id}); err == nil || !strings.Contains(err.Error(), "join_not_pending") {
		t.Fatalf("second approval: %v", err)
	}
	if err := cmdClusterRefuse(ctx, []string{"-url", app.URL, id}); err == nil || !strings.Contains(err.Error(), "join_not_pending") {
		t.Fatalf("refusal after approval: %v", err)
	}
}
