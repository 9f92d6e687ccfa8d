package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// embeddedEnv points the appliance at the embedded backend on free
// loopback ports (kept for the whole test: a restarted member must come
// back on its advertised peer URL).
func embeddedEnv(t *testing.T) {
	t.Helper()
	t.Setenv("KEYWARDEN_STORE_BACKEND", "embedded")
	t.Setenv("KEYWARDEN_CLUSTER_NAME", "node1")
	t.Setenv("KEYWARDEN_CLUSTER_PEER_LISTEN", proc.FreeAddr(t))
	t.Setenv("KEYWARDEN_CLUSTER_CLIENT_LISTEN", proc.FreeAddr(t))
	t.Setenv("KEYWARDEN_CLUSTER_PEER_ADVERTISE", "")
}

func adminAPIFor(t *testing.T, url string) *adminAPI {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	api := adminFlags(fs)
	if err := fs.Parse([]string{"-url", url}); err != nil {
		t.Fatal(err)
	}
	return api
}

// memberKeys lists every key in the node's etcd member, as a client with
// the node's own certificate (written under data.dir/node/tls at start).
func memberKeys(t *testing.T, dataDir string) []string {
	t.Helper()
	dir := cluster.TLSDir(dataDir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"https://" + os.Getenv("KEYWARDEN_CLUSTER_CLIENT_LISTEN")},
		TLS:       &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// TestDevOnEmbedded: `keywarden dev` with store.backend embedded runs
// its own etcd member: a Firebase key stored through HTTP is released;
// cluster status lists this one member as voter, leader and this node;
// removing it (the last voter) is refused with 409 last_voter; the
// etcd metrics are exported; the shared key space holds no per-node
// state (no sealed root key, no attestation key: they are in
// data.dir/node/state.json); after a restart the key is released again.
func TestDevOnEmbedded(t *testing.T) {
	embeddedEnv(t)
	iss := firebasetest.NewIssuer(t, "proj-emb")
	t.Setenv("KEYWARDEN_FIREBASE_PROJECT_ID", "proj-emb")
	t.Setenv("KEYWARDEN_FIREBASE_CERTS_URL", iss.URL())
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	const adminKey = "embedded-admin-key-0123456789"
	key := []byte("0123456789abcdef0123456789abcdef")
	ctx := context.Background()

	url, stop := startDev(t, dir, "4343", adminKey)
	tok := iss.Mint(nil)
	if st, code, _, _ := keyCall(t, "PUT", url, tok, key); st != 201 {
		t.Fatalf("store: %d %s", st, code)
	}
	if st, code, got, _ := keyCall(t, "GET", url, tok, nil); st != 200 || !bytes.Equal(got, key) {
		t.Fatalf("release: %d %s", st, code)
	}

	api := adminAPIFor(t, url)
	st, _, err := clusterStatus(ctx, api)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 || st.Members[0].Name != "node1" || !st.Members[0].Self || !st.Members[0].Leader || st.Members[0].Learner || st.ClusterID == 0 {
		t.Fatalf("status: %+v", st)
	}
	var out bytes.Buffer
	printClusterStatus(&out, st)
	if !strings.Contains(out.String(), "node1") || !strings.Contains(out.String(), "voter, leader, this node") {
		t.Fatalf("printed status:\n%s", out.String())
	}
	err = cmdClusterRemove(ctx, []string{"-url", url, "node1"})
	if err == nil || !strings.Contains(err.Error(), "last_voter") {
		t.Fatalf("removing the last voter: %v", err)
	}
	for _, c := range []struct {
		path string
		want int
		code string
	}{{"/v1/admin/cluster/members/zz", 400, "invalid_member_id"}, {"/v1/admin/cluster/members/1234", 404, "member_not_found"}} {
		resp, err := api.do(ctx, http.MethodDelete, c.path, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error struct{ Code string } }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.want || e.Error.Code != c.code {
			t.Fatalf("DELETE %s: %d %q; want %d %s", c.path, resp.StatusCode, e.Error.Code, c.want, c.code)
		}
	}
	// Both routes are audited, the refused removal too.
	audited := auditText(t, filepath.Join(dataDir, "audit"))
	for _, want := range []string{`"action":"admin_cluster_status","outcome":"success"`, `"action":"admin_cluster_remove","outcome":"refused"`, `"reason":"last_voter"`} {
		if !strings.Contains(audited, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	// Without the admin key: nothing.
	resp, err := http.Get(url + "/v1/admin/cluster")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("cluster status without the admin key: %d", resp.StatusCode)
	}

	resp, err = http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"keywarden_etcd_has_leader 1", "keywarden_etcd_leader_changes_total", `keywarden_etcd_txn_duration_seconds_count{op="update"}`} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}

	keys := memberKeys(t, dataDir)
	var sawSchema bool
	for _, k := range keys {
		if strings.Contains(k, "sealed_root") || strings.Contains(k, "attest_ak") {
			t.Errorf("per-node state in the shared key space: %q", k)
		}
		sawSchema = sawSchema || k == embeddedPrefix+"/.schema"
	}
	if !sawSchema {
		t.Fatalf("the scan did not see the store's keys: %q", keys)
	}
	ns, err := cluster.LoadState(dataDir)
	if err != nil || len(ns.SealedRoot) == 0 || len(ns.AttestAK) == 0 || ns.MemberID != uint64(st.Members[0].ID) || ns.ClusterID != uint64(st.ClusterID) {
		t.Fatalf("node-local state: %+v %v", ns, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dataDir, "*.db")); len(m) != 0 {
		t.Fatalf("a bbolt file was written with store.backend embedded: %v", m)
	}

	url, stop = startDev(t, dir, "4343", adminKey)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	if st, code, got, _ := keyCall(t, "GET", url, tok, nil); st != 200 || !bytes.Equal(got, key) {
		t.Fatalf("release after restart: %d %s", st, code)
	}
}

// TestClusterInit: `keywarden cluster init` on a fresh data directory
// with store.backend embedded makes the root key, seals it to this TPM
// in the node-local state with the node's attestation key, bootstraps a
// one-member cluster and writes the recovery shares; a second run is
// refused, as are `keywarden init` on the embedded backend and cluster
// init on another backend. The node then serves from what init made.
func TestClusterInit(t *testing.T) {
	embeddedEnv(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	t.Setenv("KEYWARDEN_DEV", "1")
	t.Setenv("KEYWARDEN_DATA_DIR", dataDir)
	t.Setenv("KEYWARDEN_TPM_SIMULATOR_SEED", "5151")
	ops := newRKOperators(t, dir, 3)
	args := []string{"-threshold", "2", "-shares-dir", filepath.Join(dir, "shares")}
	for _, o := range ops {
		args = append(args, "-recipient", o.recipient)
	}
	ctx := context.Background()
	if err := cmdClusterInit(ctx, args); err != nil {
		t.Fatal(err)
	}
	st, err := cluster.LoadState(dataDir)
	if err != nil || st.ClusterID == 0 || st.MemberID == 0 || len(st.AttestAK) == 0 || st.ClusterState != cluster.StateNew || st.Name != "node1" {
		t.Fatalf("node-local state after init: %+v %v", st, err)
	}
	if shares, _ := filepath.Glob(filepath.Join(dir, "shares", "*")); len(shares) != 3 {
		t.Fatalf("recovery share files: %v", shares)
	}
	if err := cmdClusterInit(ctx, args); err == nil || !strings.Contains(err.Error(), "already initialized") {
		t.Fatalf("second cluster init: %v", err)
	}
	// `keywarden init` (a production command: its configuration must be
	// valid outside dev mode first).
	t.Setenv("KEYWARDEN_LISTEN_PLAIN_HTTP", "true")
	t.Setenv("KEYWARDEN_TPM_PCRS", "7")
	t.Setenv("KEYWARDEN_TPM_SIMULATOR_SEED", "0")
	if err := cmdInit(ctx, args); err == nil || !strings.Contains(err.Error(), "cluster init") {
		t.Fatalf("init on the embedded backend: %v", err)
	}
	t.Setenv("KEYWARDEN_TPM_PCRS", "")
	t.Setenv("KEYWARDEN_TPM_SIMULATOR_SEED", "5151")
	t.Setenv("KEYWARDEN_STORE_BACKEND", "bbolt")
	if err := cmdClusterInit(ctx, args); err == nil || !strings.Contains(err.Error(), "store.backend") {
		t.Fatalf("cluster init on bbolt: %v", err)
	}
	t.Setenv("KEYWARDEN_STORE_BACKEND", "embedded")

	url, stop := startDev(t, dir, "5151", "init-admin-key-0123456789")
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	cs, _, err := clusterStatus(ctx, adminAPIFor(t, url))
	if err != nil || uint64(cs.ClusterID) != st.ClusterID || len(cs.Members) != 1 || uint64(cs.Members[0].ID) != st.MemberID {
		t.Fatalf("status of the initialized node: %+v %v", cs, err)
	}
}

// auditText is every audit file of dir, concatenated.
func auditText(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		if e.Type().IsRegular() {
			data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			b.Write(data)
		}
	}
	return b.String()
}
