//go:build cgo

package clusterapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster/join"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/apptest/appserver"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/clusterapi"
)

// etcdMember is cluster.Member on a real embedded etcd member.
type etcdMember struct{ cli *clientv3.Client }

func (m etcdMember) AddLearner(ctx context.Context, name string, peerURLs []string) (uint64, string, error) {
	rsp, err := m.cli.MemberAddAsLearner(ctx, peerURLs)
	if err != nil {
		return 0, "", err
	}
	var parts []string
	for _, mem := range rsp.Members {
		n := mem.Name
		if mem.ID == rsp.Member.ID {
			n = name
		}
		for _, u := range mem.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return rsp.Member.ID, strings.Join(parts, ","), nil
}

func (m etcdMember) ClusterID() uint64 {
	rsp, err := m.cli.MemberList(context.Background())
	if err != nil {
		return 0
	}
	return rsp.Header.ClusterId
}

// newApp is an appliance (TPM simulator, root key sealed to it) that is a
// member of a one-member embedded etcd cluster, with the join routes on;
// its join policy is its own PCR values (what dev mode does).
func newApp(t *testing.T) *appserver.App {
	t.Helper()
	c := etcddev.Embedded(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return appserver.New(t, appserver.Before(func(a *appserver.App, o *server.Options) {
		svc, err := join.New(join.Options{
			DB: a.DB, Audit: a.Audit, Root: a.Root, Member: etcdMember{cli},
			AllowUnverifiedEK: true, // as in dev mode: the simulator has no maker's EK certificate
			Policy: func(ctx context.Context) (*attest.Policy, error) {
				v, err := attest.ReadPCRs(ctx, a.TPM, join.DefaultPCRs)
				if err != nil {
					return nil, err
				}
				return attest.PolicyFromPCRs(v)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		o.ClusterJoins = clusterapi.NewJoins(svc)
	}))
}

// TestJoinOverHTTP drives the wire: the joiner's routes without the admin
// key, the operator's with it, and the codes of refusals.
func TestJoinOverHTTP(t *testing.T) {
	a := newApp(t)
	ctx := context.Background()

	r := a.Do(http.MethodPost, "/v1/cluster/joins/nonce", nil)
	apptest.Want(t, r, http.StatusOK, "")
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("the join routes must not be cached")
	}
	var n join.Nonce
	r.Decode(t, &n)
	// The joiner is the same simulator here (one per process): what the
	// wire carries is what matters.
	req, ak, err := join.Prepare(ctx, a.TPM, &n, "n2", []string{"https://10.0.0.2:2380"})
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()

	big := *req
	big.EKCertificate = make([]byte, join.MaxRequestBytes)
	apptest.Want(t, a.Do(http.MethodPost, "/v1/cluster/joins", &big), http.StatusRequestEntityTooLarge, "join_request_too_large")

	r = a.Do(http.MethodPost, "/v1/cluster/joins", req)
	apptest.Want(t, r, http.StatusAccepted, "")
	var sub join.Submitted
	r.DecodeStrict(t, &sub)
	if sub.AKName != join.AKNameHex(ak) {
		t.Fatalf("akName %s", sub.AKName)
	}
	apptest.Want(t, a.Do(http.MethodPost, "/v1/cluster/joins", req), http.StatusConflict, "join_replayed")

	// The poll answers only the holder of the poll secret.
	apptest.Want(t, a.Do(http.MethodGet, "/v1/cluster/joins/"+sub.ID, nil), http.StatusNotFound, "join_not_found")
	apptest.Want(t, a.Bearer(http.MethodGet, "/v1/cluster/joins/"+sub.ID, strings.Repeat("0", 64), nil), http.StatusNotFound, "join_not_found")
	r = a.Bearer(http.MethodGet, "/v1/cluster/joins/"+sub.ID, sub.PollSecret, nil)
	apptest.Want(t, r, http.StatusOK, "")
	var st join.Status
	r.Decode(t, &st)
	if st.State != join.StatePending || st.Answer != nil {
		t.Fatalf("poll: %+v", st)
	}

	// The operator's routes need the admin key; a joiner's poll secret is
	// not one.
	apptest.Want(t, a.Do(http.MethodPost, "/v1/admin/cluster/joins/"+sub.ID+"/approve", nil), http.StatusUnauthorized, "")
	apptest.Want(t, a.Bearer(http.MethodPost, "/v1/admin/cluster/joins/"+sub.ID+"/approve", sub.PollSecret, nil), http.StatusUnauthorized, "")
	r = a.Admin(http.MethodGet, "/v1/admin/cluster/joins", nil)
	apptest.Want(t, r, http.StatusOK, "")
	if !strings.Contains(string(r.Body), sub.EKFingerprint) || strings.Contains(string(r.Body), sub.PollSecret) {
		t.Fatalf("list: %s", r.Body)
	}
	apptest.Want(t, a.Admin(http.MethodPost, "/v1/admin/cluster/joins/"+sub.ID+"/refuse", map[string]string{"reason": "Not Snake"}), http.StatusBadRequest, "join_request_invalid")
	apptest.Want(t, a.Admin(http.MethodPost, "/v1/admin/cluster/joins/"+strings.Repeat("b", 32)+"/approve", nil), http.StatusNotFound, "join_not_found")
	r = a.Admin(http.MethodPost, "/v1/admin/cluster/joins/"+sub.ID+"/approve", nil)
	apptest.Want(t, r, http.StatusOK, "")

	r = a.Bearer(http.MethodGet, "/v1/cluster/joins/"+sub.ID, sub.PollSecret, nil)
	apptest.Want(t, r, http.StatusOK, "")
	r.Decode(t, &st)
	if st.State != join.StateApproved || st.Answer == nil {
		t.Fatalf("poll: %s", r.Body)
	}
	joined, err := join.Recover(ctx, a.TPM, ak, sub.ID, "n2", st.Answer)
	if err != nil {
		t.Fatal(err)
	}
	id, err := enclave.RootID(joined.RootKey)
	if err != nil || id != a.Root.RootID() {
		t.Fatalf("the joiner recovered another root key (%v)", err)
	}
	apptest.Want(t, a.Admin(http.MethodPost, "/v1/admin/cluster/joins/"+sub.ID+"/refuse", nil), http.StatusConflict, "join_not_pending")

	lines := a.AuditLines(t)
	for _, want := range []string{`"action":"cluster_join_requested"`, `"action":"cluster_join_approved"`, `"actor":"admin:`} {
		if !strings.Contains(lines, want) {
			t.Errorf("audit lacks %s", want)
		}
	}
}
