package e2e

// The TypeScript client (clients/typescript) against the real appliance:
// `keywarden dev` with Google-format certificates (firebasetest), driven by
// Node's test runner, through a proxy that checks every request the
// client sends and every answer it gets against openapi.yaml.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/apivalidate"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/receipt"
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
// errors with Retry-After, PIN when the appliance has its routes, release
// receipts checked by the client (verifyReceipt) and by `keywarden receipt
// verify` on the same receipts.
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
		"KW_KEYWARDEN_BIN=" + bin,
		"KW_RECEIPT_FIXTURES=" + tsReceiptFixtures(t),
	}, "--test", "--test-reporter=spec", "test/")
	if strings.Contains(n.Log.String(), st.Token) {
		t.Fatal("the log holds the session token")
	}
}

// tsReceiptFixtures signs, with the Go receipt package and a software
// signing key, a batch of receipts the appliance would not make on demand:
// odd batch size (every Merkle path shape), node and fields with characters
// encoding/json escapes (<, >, &, U+2028, non-ASCII), a batch key issued
// at a sub-microsecond time, statements just before, at and after it (one
// with a time zone offset), each encoded as a release encodes it
// (Signed.Encode). The TypeScript verifier must accept exactly the ones
// marked ok: a statement older than its batch key is refused.
func tsReceiptFixtures(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	const node = "nœud-<a>&b\u2028"
	issued := time.Date(2027, 1, 15, 8, 0, 0, 500, time.UTC)
	bk, err := receipt.NewBatchKey(node, issued, k)
	if err != nil {
		t.Fatal(err)
	}
	type fixture struct {
		Receipt string `json:"receipt"`
		Owner   string `json:"owner"`
		OK      bool   `json:"ok"`
		Why     string `json:"why"`
	}
	times := []struct{ at, why string }{
		{"2027-01-15T08:00:00.0000005Z", "at the batch key's time"},
		{"2027-01-15T08:00:00.000000499Z", "1 ns before the batch key"},
		{"2027-01-15T09:00:00.000000501+01:00", "1 ns after the batch key, written with an offset"},
		{"2027-01-15T08:59:59+01:00", "a second before the batch key, written with an offset"},
		{"2027-02-01T00:00:00Z", "weeks after"},
		{"2026-12-31T23:59:59.999999999Z", "the year before"},
		{"2027-01-15T08:00:01Z", "a second after"},
	}
	var b receipt.Builder
	var out []fixture
	for i, tm := range times {
		owner := fmt.Sprintf("firebase:proj-ts//<user>&%d", i)
		h, salt := receipt.NewOwnerHash(owner)
		b.Add(receipt.Statement{Node: node, Seq: uint64(1000 + i), Line: strings.Repeat("0f", 32), Time: tm.at,
			Action: "firebase.release", Outcome: "success", OwnerHash: h, Salt: salt, Method: "FIREBASE",
			KeyVersion: fmt.Sprint(i + 1), RequestID: fmt.Sprintf("req-\"%d\"<>", i)})
		at, err := time.Parse(time.RFC3339Nano, tm.at)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fixture{Owner: owner, OK: !at.Before(issued), Why: tm.why})
	}
	sb := b.Sign(bk, 1000, uint64(1000+len(times)-1), issued.Add(time.Minute))
	for i := range out {
		out[i].Receipt = sb.Encode(i)
		// (Go's Verify is checked only on the ok ones: whether it refuses
		// the older statements is its own tests' business.)
		if err := receipt.Verify(sb.Receipt(i), &k.PublicKey); out[i].OK && err != nil {
			t.Fatalf("fixture %d does not verify in Go: %v", i, err)
		}
	}
	j, err := json.Marshal(map[string]any{
		"pem":      string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		"receipts": out,
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(j)
}
