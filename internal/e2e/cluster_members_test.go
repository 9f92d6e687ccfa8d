package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
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
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/internal/tpmsim"
)

const clusterAdminKey = "cluster-e2e-admin-key-0123456789"

// clusterHTTP is the cluster tests' client; TestMain checks its exchanges
// against openapi.yaml like opsClient's. No timeout: a member removal
// waits out etcd's health interval.
var clusterHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// clusterNode is one appliance of the embedded backend for this test.
type clusterNode struct {
	*proc.Node
	dataDir, peer, client string
	seed                  int64
}

func startClusterNode(t *testing.T, bin, name, dir string, seed int64, peer, client string, extra ...string) *clusterNode {
	t.Helper()
	n := &clusterNode{dataDir: filepath.Join(dir, name, "data"), peer: peer, client: client, seed: seed}
	if err := os.MkdirAll(filepath.Dir(n.dataDir), 0o700); err != nil {
		t.Fatal(err)
	}
	n.Node = proc.StartNode(t, bin, proc.NodeOptions{Name: name, DataDir: n.dataDir, Env: append([]string{
		"KEYWARDEN_ADMIN_KEY=" + clusterAdminKey,
		"KEYWARDEN_STORE_BACKEND=embedded",
		"KEYWARDEN_CLUSTER_NAME=" + name,
		"KEYWARDEN_CLUSTER_PEER_LISTEN=" + peer,
		"KEYWARDEN_CLUSTER_CLIENT_LISTEN=" + client,
		fmt.Sprintf("KEYWARDEN_TPM_SIMULATOR_SEED=%d", seed),
	}, extra...)})
	return n
}

func adminDo(t *testing.T, n *clusterNode, method, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, n.URL(path), nil)
	req.Header.Set("Authorization", "Bearer "+clusterAdminKey)
	resp, err := clusterHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// auditFiles is every audit file of dir, concatenated.
func auditFiles(t *testing.T, dir string) string {
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

func fbKey(t *testing.T, n *clusterNode, method, token string, key []byte) (int, []byte) {
	t.Helper()
	var body io.Reader
	if key != nil {
		b, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString(key)})
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, n.URL("/v1/firebase/key"), body)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := clusterHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Key string `json:"key"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	got, _ := base64.StdEncoding.DecodeString(r.Key)
	return resp.StatusCode, got
}

// TestClusterSeamTwoNodes is the seam test of the attested join: until
// package cluster/join is merged it stands in for the join protocol by
// doing what its two sides end with — the approving side's
// cluster.AddLearner, and the joiner's cluster.SaveJoined with the same
// root key sealed to ITS OWN simulated TPM (another seed, another
// process). Two `keywarden dev` processes on the embedded backend then
// form one cluster: the learner is promoted to a voter by the promotion
// loop; a key stored on node1 is released by node2; cluster status on
// either node lists both; node1 removes node2; removing the last voter is
// refused.
func TestClusterSeamTwoNodes(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("needs the TPM simulator (cgo)")
	}
	bin := proc.BuildBinary(t, "./cmd/keywarden")
	iss := firebasetest.NewIssuer(t, "proj-cluster")
	fb := []string{"KEYWARDEN_FIREBASE_PROJECT_ID=proj-cluster", "KEYWARDEN_FIREBASE_CERTS_URL=" + iss.URL()}
	dir := t.TempDir()
	ctx := context.Background()

	n1 := startClusterNode(t, bin, "node1", dir, 1101, proc.FreeAddr(t), proc.FreeAddr(t), fb...)
	n1.WaitReady(t, "/readyz")
	// A graceful stop records node1's audit head in the store; node1
	// starts again on its data (the cluster of one comes back).
	if code := n1.Stop(t); code != 0 {
		t.Fatalf("node1 exited with %d", code)
	}
	n1 = startClusterNode(t, bin, "node1", dir, 1101, n1.peer, n1.client, fb...)
	n1.WaitReady(t, "/readyz")

	// The root key, as the join hands it over: here unsealed from node1's
	// node-local state with node1's simulated TPM (its seed is public in
	// dev mode).
	st1, err := cluster.LoadState(n1.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := st1.Sealed()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := tpmsim.Open(n1.seed)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := enclave.UnsealRoot(ctx, sim, sealed)
	sim.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer rootKey.Wipe()
	root, err := enclave.NewRoot(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	// The approving side: AddLearner on node1's member (a client with a
	// certificate of the cluster CA, which only root key holders make).
	ca, err := cluster.DeriveCA(root)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ca.Issue("seam-test", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + n1.client}, TLS: ca.ClientTLS(nc), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	peer2, client2 := proc.FreeAddr(t), proc.FreeAddr(t)
	memberID, initial, err := cluster.AddLearner(ctx, cli, "node2", []string{"https://" + peer2})
	if err != nil {
		t.Fatal(err)
	}

	// The joining side: SaveJoined seals the root key to node2's TPM.
	cfg2 := config.DevDefaults()
	cfg2.Data.Dir = filepath.Join(dir, "node2", "data")
	sim2, err := tpmsim.Open(1202)
	if err != nil {
		t.Fatal(err)
	}
	err = cluster.SaveJoined(ctx, sim2, cfg2, cluster.Joined{RootKey: rootKey, Name: "node2", InitialCluster: initial, ClusterID: st1.ClusterID, MemberID: memberID})
	sim2.Close()
	if err != nil {
		t.Fatal(err)
	}
	n2 := startClusterNode(t, bin, "node2", dir, 1202, peer2, client2, fb...)
	n2.WaitReady(t, "/readyz")

	// Each node's audit chain has its own recorded head: node2's start
	// does not take node1's head for its own (no false truncation).
	for _, n := range []*clusterNode{n1, n2} {
		if txt := auditFiles(t, filepath.Join(n.dataDir, "audit")); strings.Contains(txt, "audit_truncated") {
			t.Errorf("%s's audit log has a truncation incident:\n%s", n.Name, txt)
		}
	}

	// The promotion loop makes node2 a voter (polled, bounded by count).
	var st cluster.Status
	for i := 0; ; i++ {
		code, b := adminDo(t, n1, http.MethodGet, "/v1/admin/cluster")
		st = cluster.Status{}
		if code == 200 && json.Unmarshal(b, &st) == nil && len(st.Members) == 2 && !st.Members[0].Learner && !st.Members[1].Learner {
			break
		}
		if i > 300 {
			t.Fatalf("node2 never became a voter: %d %s", code, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	code, b := adminDo(t, n2, http.MethodGet, "/v1/admin/cluster")
	var st2 cluster.Status
	if code != 200 || json.Unmarshal(b, &st2) != nil || len(st2.Members) != 2 || st2.MemberID != cluster.ID(memberID) || st2.ClusterID != st.ClusterID {
		t.Fatalf("status on node2: %d %s", code, b)
	}

	// Any node answers: stored on node1, released by node2.
	tok := iss.Mint(nil)
	key := []byte("cluster-key-0123456789abcdef0123")
	if code, _ := fbKey(t, n1, http.MethodPut, tok, key); code != 201 {
		t.Fatalf("store on node1: %d", code)
	}
	if code, got := fbKey(t, n2, http.MethodGet, tok, nil); code != 200 || !bytes.Equal(got, key) {
		t.Fatalf("release on node2: %d", code)
	}

	// node1 removes node2.
	code, b = adminDo(t, n1, http.MethodDelete, "/v1/admin/cluster/members/"+cluster.ID(memberID).String())
	if code != 200 {
		t.Fatalf("remove node2: %d %s", code, b)
	}
	code, b = adminDo(t, n1, http.MethodGet, "/v1/admin/cluster")
	if err := json.Unmarshal(b, &st); code != 200 || err != nil || len(st.Members) != 1 || st.Members[0].Name != "node1" {
		t.Fatalf("status after removal: %d %s", code, b)
	}
	code, b = adminDo(t, n1, http.MethodDelete, "/v1/admin/cluster/members/"+st.Members[0].ID.String())
	if code != http.StatusConflict || !bytes.Contains(b, []byte("last_voter")) {
		t.Fatalf("removing the last voter: %d %s", code, b)
	}
	if code, got := fbKey(t, n1, http.MethodGet, tok, nil); code != 200 || !bytes.Equal(got, key) {
		t.Fatalf("release on node1 after the removal: %d", code)
	}
}
