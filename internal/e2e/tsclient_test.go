package e2e

// The TypeScript client (clients/typescript) against the real appliance:
// `keywarden dev` with Google-format certificates (firebasetest), driven by
// Node's test runner, through a proxy that checks every request the
// client sends and every answer it gets against openapi.yaml.

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/apivalidate"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

const tsAdminKey = "ts-e2e-admin-key-0123456789abcdef"

// checkedProxy serves a reverse proxy to target whose every exchange is
// checked against openapi.yaml (a failure fails t).
func checkedProxy(t *testing.T, target string) string {
	t.Helper()
	v, err := apivalidate.Default()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = u.Host },
		Transport: v.Transport(nil, t.Errorf),
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTypeScriptClient runs clients/typescript's Node tests (node --test)
// against keywarden dev: Firebase store, release and delete, HPKE-sealed
// store and release with both suites (decrypted in the client), typed
// errors with Retry-After, PIN when the appliance has its routes.
func TestTypeScriptClient(t *testing.T) {
	// scripts/test.sh sets KEYWARDEN_REQUIRE_NODE when Node 20+ and the
	// client's dependencies are installed: then this test must not skip.
	skip := t.Skip
	if os.Getenv("KEYWARDEN_REQUIRE_NODE") != "" {
		skip = t.Fatal
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("node is not installed (scripts/setup.sh installs it)")
		return
	}
	dir := filepath.Join(proc.ModuleRoot(t), "clients", "typescript")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@hpke", "core")); err != nil {
		skip("clients/typescript has no node_modules: run npm ci there (scripts/setup.sh does)")
		return
	}
	run := func(name string, env []string, args ...string) {
		t.Helper()
		cmd := exec.Command(node, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		t.Logf("%s:\n%s", name, out)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	run("tsc", nil, "node_modules/typescript/bin/tsc", "-p", ".")

	bin := proc.BuildBinary(t, "./cmd/keywarden")
	iss := firebasetest.NewIssuer(t, "proj-ts")
	n := proc.StartNode(t, bin, proc.NodeOptions{Name: "keywarden", AdminAddr: proc.FreeAddr(t), Env: []string{
		"KEYWARDEN_ADMIN_KEY=" + tsAdminKey,
		"KEYWARDEN_FIREBASE_PROJECT_ID=proj-ts",
		"KEYWARDEN_FIREBASE_CERTS_URL=" + iss.URL(),
		"KEYWARDEN_LIMITS_RATE_PER_SECOND=2000",
		"KEYWARDEN_LIMITS_RATE_BURST=2000",
	}})
	n.WaitReady(t, "/readyz")

	admin := &apptest.Client{T: t, URL: "http://" + n.AdminAddr, AdminKey: tsAdminKey}
	var st struct {
		Token string `json:"token"`
	}
	r := admin.Admin("POST", "/v1/admin/users/ts-carol/session-tokens", nil)
	apptest.Want(t, r, http.StatusCreated, "")
	r.Decode(t, &st)

	now := iss.Clock().Now()
	tokens, _ := json.Marshal(map[string]string{
		"alice":   iss.Mint(firebasetest.Claims{"sub": "ts-alice", "user_id": "ts-alice"}),
		"bob":     iss.Mint(firebasetest.Claims{"sub": "ts-bob", "user_id": "ts-bob"}),
		"dave":    iss.Mint(firebasetest.Claims{"sub": "ts-dave", "user_id": "ts-dave"}),
		"expired": iss.Mint(firebasetest.Claims{"sub": "ts-alice", "iat": now.Add(-2 * 3600e9).Unix(), "auth_time": now.Add(-2 * 3600e9).Unix(), "exp": now.Add(-3600e9).Unix()}),
	})
	run("node --test", []string{
		"KW_URL=" + checkedProxy(t, "http://"+n.Addr),
		"KW_TOKENS=" + string(tokens),
		"KW_SESSION_TOKEN=" + st.Token,
	}, "--test", "--test-reporter=spec", "test/")
	if strings.Contains(n.Log.String(), st.Token) {
		t.Fatal("the log holds the session token")
	}
}
