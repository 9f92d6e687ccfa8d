package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// TestAuditVerifyLiveDevNode: `keywarden audit verify`, run as a new user
// would in another shell next to a running `keywarden dev` (same folder,
// no flag, no KEYWARDEN_… setting), checks the live log with the public
// key the node serves at /v1/appliance-keys — no TPM, no store, no TLS
// configuration. It used to fail with a TLS configuration error.
//
//	go test ./internal/e2e/ -run AuditVerifyLiveDevNode
func TestAuditVerifyLiveDevNode(t *testing.T) {
	bin := proc.BuildBinary(t, "./cmd/keywarden")
	work := t.TempDir()
	var env []string // what the verifying shell sets: nothing, when dev's default port is free
	addr := "127.0.0.1:8420"
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
	} else {
		// Another process has dev's default port on this machine: the
		// node listens elsewhere, and the shell says where, as its user
		// would have told the node.
		addr = proc.FreeAddr(t)
		env = append(env, "KEYWARDEN_LISTEN_ADDR="+addr)
		t.Logf("127.0.0.1:8420 is taken; using %s", addr)
	}
	node := proc.StartNode(t, bin, proc.NodeOptions{DataDir: filepath.Join(work, "keywarden-data"), Addr: addr})
	node.WaitReady(t, "/readyz")

	verify := func() (string, error) {
		cmd := exec.Command(bin, "audit", "verify")
		cmd.Dir = work
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "KEYWARDEN_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var out string
	opsEventually(t, 30*time.Second, "audit verify on the live node", func() (bool, string) {
		var err error
		out, err = verify()
		return err == nil, out
	})
	if !strings.Contains(out, "chain and signed anchors verify") || !strings.Contains(out, "/v1/appliance-keys") {
		t.Fatalf("audit verify:\n%s", out)
	}
	// While the node writes (refusals of bad admin calls are audited),
	// the log still verifies: a line being written is not an error.
	for range 3 {
		_, _, _, _ = opsGet(node.URL("/v1/admin/users/alice"))
		if o, err := verify(); err != nil {
			t.Fatalf("audit verify while the node writes: %v\n%s", err, o)
		}
	}
	// Saved while it runs, the keys document then checks the stopped
	// node's complete log (ending with its final anchor) offline.
	st, doc, _, err := opsGet(node.URL("/v1/appliance-keys"))
	if err != nil || st != 200 {
		t.Fatalf("GET /v1/appliance-keys: %d %v", st, err)
	}
	keyFile := filepath.Join(work, "appliance-keys.json")
	if err := os.WriteFile(keyFile, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := node.Stop(t); code != 0 {
		t.Fatalf("dev node exited %d", code)
	}
	cmd := exec.Command(bin, "audit", "verify", "-key", keyFile, "-complete", filepath.Join(work, "keywarden-data", "audit"))
	if o, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(o), "chain and signed anchors verify") {
		t.Fatalf("audit verify of the stopped node's log: %v\n%s", err, o)
	}
}
