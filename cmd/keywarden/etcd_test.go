package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// keyCall sends a Firebase key request and returns the status, the error
// code (if any), the released key and the Retry-After header.
func keyCall(t *testing.T, method, url, token string, key []byte) (status int, code string, got []byte, retry string) {
	t.Helper()
	var body io.Reader
	if key != nil {
		b, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString(key)})
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url+"/v1/firebase/key", body)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s /v1/firebase/key: %v", method, err)
	}
	defer resp.Body.Close()
	var r struct {
		Key   string `json:"key"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	got, _ = base64.StdEncoding.DecodeString(r.Key)
	return resp.StatusCode, r.Error.Code, got, resp.Header.Get("Retry-After")
}

func readyz(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDevOnExternalEtcd: `keywarden dev` with store.backend etcd against
// the real etcd server over mutual TLS. A key stored is released; after
// the node restarts (nothing of the store on its disk) it is released
// again from etcd; with etcd stopped /readyz is 503 and a release answers
// 503 store_unavailable (never a stale key, never a 500); with etcd back
// the node is ready and releases again.
func TestDevOnExternalEtcd(t *testing.T) {
	srv, files := etcddev.External(t, etcddev.ExternalOptions{TLS: true})
	iss := firebasetest.NewIssuer(t, "proj-etcd")
	t.Setenv("KEYWARDEN_STORE_BACKEND", "etcd")
	t.Setenv("KEYWARDEN_ETCD_ENDPOINTS", srv.Endpoint)
	t.Setenv("KEYWARDEN_ETCD_PREFIX", "kw-dev-test")
	t.Setenv("KEYWARDEN_ETCD_CA_FILE", files.CA)
	t.Setenv("KEYWARDEN_ETCD_CERT_FILE", files.ClientCert)
	t.Setenv("KEYWARDEN_ETCD_KEY_FILE", files.ClientKey)
	t.Setenv("KEYWARDEN_ETCD_DIAL_TIMEOUT", "3s")
	t.Setenv("KEYWARDEN_FIREBASE_PROJECT_ID", "proj-etcd")
	t.Setenv("KEYWARDEN_FIREBASE_CERTS_URL", iss.URL())
	dir := t.TempDir()
	const adminKey = "etcd-admin-key-0123456789"
	key := []byte("0123456789abcdef0123456789abcdef")

	url, stop := startDev(t, dir, "4242", adminKey)
	tok := iss.Mint(nil)
	if st, code, _, _ := keyCall(t, "PUT", url, tok, key); st != 201 {
		t.Fatalf("store: %d %s", st, code)
	}
	if st, code, got, _ := keyCall(t, "GET", url, tok, nil); st != 200 || !bytes.Equal(got, key) {
		t.Fatalf("release: %d %s", st, code)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "data", "*.db")); len(m) != 0 {
		t.Fatalf("a bbolt file was written with store.backend etcd: %v", m)
	}

	// The node restarts: the root key, the rollback record and the key
	// come from etcd.
	url, stop = startDev(t, dir, "4242", adminKey)
	stopped := false
	defer func() {
		if stopped {
			return
		}
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	if st, code, got, _ := keyCall(t, "GET", url, tok, nil); st != 200 || !bytes.Equal(got, key) {
		t.Fatalf("release after restart: %d %s", st, code)
	}

	// backup streams the backend's snapshot (an etcd dump, checked by
	// its checksum); backup -verify checks it once the node stopped (below).
	out := filepath.Join(dir, "backup.kwetcd")
	if err := cmdBackup(context.Background(), []string{"-out", out, "-url", url}); err != nil {
		t.Fatalf("backup on etcd: %v", err)
	}
	if head, err := readHead(out, 16); err != nil || !etcdstore.IsDump(head) {
		t.Fatalf("backup on etcd is not an etcd dump: %v", err)
	}

	srv.Stop()
	if st, code, got, retry := keyCall(t, "GET", url, tok, nil); st != 503 || code != "store_unavailable" || retry == "" || len(got) != 0 {
		t.Fatalf("release with etcd stopped: %d %q Retry-After %q (key released: %v)", st, code, retry, len(got) != 0)
	}
	// Readiness caches its store check for two seconds: poll until the
	// check runs again (bounded by the poll count, not a clock).
	if !pollReadyz(t, url, 503) {
		t.Fatal("readyz stayed 200 with etcd stopped")
	}
	srv.Restart(t)
	if !pollReadyz(t, url, 200) {
		t.Fatal("not ready after etcd came back")
	}
	if st, code, got, _ := keyCall(t, "GET", url, tok, nil); st != 200 || !bytes.Equal(got, key) {
		t.Fatalf("release after etcd came back: %d %s", st, code)
	}
	// The simulator is one per process: verify the dump once the node stopped.
	stopped = true
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if err := cmdBackup(context.Background(), []string{"-verify", out, "-dev"}); err != nil {
		t.Fatalf("backup -verify of the etcd dump: %v", err)
	}
}

// pollReadyz asks /readyz until it answers want, at most 100 times.
func pollReadyz(t *testing.T, url string, want int) bool {
	for i := 0; i < 100; i++ {
		if readyz(t, url) == want {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// TestDevRollbackNodeOnEtcd: with rollback.node set (KEYWARDEN_ROLLBACK_NODE)
// the node keeps the cluster rollback records in etcd (the shared cluster
// record and its own, no single-node record); it restarts on them and
// releases the key it stored.
func TestDevRollbackNodeOnEtcd(t *testing.T) {
	e := etcddev.Embedded(t)
	iss := firebasetest.NewIssuer(t, "proj-rbnode")
	t.Setenv("KEYWARDEN_STORE_BACKEND", "etcd")
	t.Setenv("KEYWARDEN_ETCD_ENDPOINTS", e.Endpoint(0))
	t.Setenv("KEYWARDEN_ETCD_PREFIX", "kw-rbnode")
	t.Setenv("KEYWARDEN_ROLLBACK_NODE", "node-1")
	t.Setenv("KEYWARDEN_FIREBASE_PROJECT_ID", "proj-rbnode")
	t.Setenv("KEYWARDEN_FIREBASE_CERTS_URL", iss.URL())
	dir := t.TempDir()
	const adminKey = "rbnode-admin-key-0123456789"
	key := []byte("0123456789abcdef0123456789abcdef")
	url, stop := startDev(t, dir, "4343", adminKey)
	tok := iss.Mint(nil)
	if st, code, _, _ := keyCall(t, "PUT", url, tok, key); st != 201 {
		t.Fatalf("store: %d %s", st, code)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	cli, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: e.Endpoints(), Prefix: "kw-rbnode"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for k, want := range map[string]bool{"rollback_cluster": false, "rollback_node\x00node-1": true, "rollback": false} {
		resp, err := cli.Client().Get(context.Background(), "kw-rbnode/meta/"+k)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(resp.Kvs) == 1; got != want {
			t.Errorf("meta %q present: %v, want %v", k, got, want)
		}
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
