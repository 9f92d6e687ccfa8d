package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

const testOrigin = "http://localhost:8420"

// env is the real server (bbolt, audit log, session tokens of a root key)
// with the demo's routes.
type env struct {
	http     *httptest.Server
	sessions *enclave.SessionTokens
	audit    *audit.Log
	auditDir string
	root     *enclave.Root
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(root.Close)
	db, err := store.Open(filepath.Join(dir, "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	auditDir := filepath.Join(dir, "audit")
	alog, err := audit.Open(context.Background(), audit.Options{Dir: auditDir, AnchorKey: root.Subkey(enclave.SubkeyAuditAnchor), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close(context.Background()) })

	cfg := config.DevDefaults()
	cfg.Limits.RatePerSecond, cfg.Limits.RateBurst = 1e6, 1e6
	sessions := root.SessionTokens(nil)
	d, err := New(Options{Sessions: sessions, Origins: cfg.Passkey.Origins, Audit: alog, TTL: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	bl, err := server.LoadBlockList(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Config: cfg, DB: db, Sessions: sessions, Audit: alog, Demo: d, BlockList: bl})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Public)
	t.Cleanup(hs.Close)
	return &env{http: hs, sessions: sessions, audit: alog, auditDir: auditDir, root: root}
}

func (e *env) do(t testing.TB, method, path string, body []byte, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func errorCode(body []byte) string {
	var e struct {
		Error struct{ Code string }
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

func TestStaticFiles(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path string
		status             int
		contentType        string // prefix
		contains           string
		location           string
	}{
		{"redirect", "GET", "/demo", http.StatusMovedPermanently, "", "", "/demo/"},
		{"index", "GET", "/demo/", http.StatusOK, "text/html", `<script type="module" src="app.js"`, ""},
		{"index by name", "GET", "/demo/index.html", http.StatusMovedPermanently, "", "", "./"},
		{"script", "GET", "/demo/app.js", http.StatusOK, "text/javascript", "kw.passkeys.register", ""},
		{"client", "GET", "/demo/keywarden.js", http.StatusOK, "text/javascript", "keywarden passkey release v1", ""},
		{"style", "GET", "/demo/style.css", http.StatusOK, "text/css", "#status", ""},
		{"head", "HEAD", "/demo/app.js", http.StatusOK, "text/javascript", "", ""},
		{"unknown file", "GET", "/demo/secret.txt", http.StatusNotFound, "application/json", "not_found", ""},
		{"dot dot", "GET", "/demo/..%2fdemo.go", http.StatusNotFound, "application/json", "", ""},
		{"session is POST only", "GET", "/demo/session", http.StatusNotFound, "application/json", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := e.do(t, tt.method, tt.path, nil, nil)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, body)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
				t.Errorf("Content-Type %q, want %q…", ct, tt.contentType)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
			if tt.location != "" && res.Header.Get("Location") != tt.location {
				t.Errorf("Location %q, want %q", res.Header.Get("Location"), tt.location)
			}
			if tt.status == http.StatusOK {
				csp := res.Header.Get("Content-Security-Policy")
				if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") || strings.Contains(csp, "unsafe") {
					t.Errorf("Content-Security-Policy %q", csp)
				}
				if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Cache-Control") != "no-store" {
					t.Errorf("headers %v", res.Header)
				}
			}
		})
	}
}

// TestNoExternalResources: the page works on a closed network and under
// its CSP: every script, style, link and fetch is same-origin.
func TestNoExternalResources(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?\s*(https?:)?//|@import|url\(\s*["']?(https?:)?//|fetch\(\s*["'\x60]https?:`)
	inline := regexp.MustCompile(`(?i)<script>|<style|\son[a-z]+\s*=`)
	n := 0
	err := fs.WalkDir(Files(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := fs.ReadFile(Files(), path)
		if err != nil {
			return err
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s loads something from elsewhere: %q", path, m)
		}
		if m := inline.Find(b); m != nil && strings.HasSuffix(path, ".html") {
			t.Errorf("%s has inline script or style, which the CSP blocks: %q", path, m)
		}
		return nil
	})
	if err != nil || n != 4 { // index.html, app.js, keywarden.js (the client), style.css
		t.Fatalf("walk: %v, %d files", err, n)
	}
	index, _ := fs.ReadFile(Files(), "index.html")
	for _, ref := range regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllSubmatch(index, -1) {
		if _, err := fs.Stat(Files(), string(ref[1])); err != nil {
			t.Errorf("index.html refers to %s, which is not embedded", ref[1])
		}
	}
}

func TestSession(t *testing.T) {
	e := newEnv(t)
	jsonCT := map[string]string{"Origin": testOrigin, "Content-Type": "application/json"}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] != "" {
				h[kv[i]] = kv[i+1]
			}
		}
		return h
	}
	tests := []struct {
		name   string
		header map[string]string
		body   string
		status int
		code   string
		user   string // on success
	}{
		{"ok", jsonCT, `{"userId":"alice"}`, http.StatusCreated, "", "alice"},
		{"ok, id with every allowed sign", jsonCT, `{"userId":"a.b_c-d@e:f+g"}`, http.StatusCreated, "", "a.b_c-d@e:f+g"},
		{"ok, charset", with("Origin", testOrigin, "Content-Type", "application/json; charset=utf-8"), `{"userId":"bob"}`, http.StatusCreated, "", "bob"},
		{"origin case-insensitive", with("Origin", "HTTP://LOCALHOST:8420", "Content-Type", "application/json"), `{"userId":"bob"}`, http.StatusCreated, "", "bob"},

		{"no origin", with("Content-Type", "application/json"), `{"userId":"alice"}`, http.StatusForbidden, "origin_not_allowed", ""},
		{"foreign origin", with("Origin", "https://evil.example", "Content-Type", "application/json"), `{"userId":"alice"}`, http.StatusForbidden, "origin_not_allowed", ""},
		{"rebound name", with("Origin", "http://rebind.example:8420", "Content-Type", "application/json"), `{"userId":"alice"}`, http.StatusForbidden, "origin_not_allowed", ""},
		{"other port", with("Origin", "http://localhost:8421", "Content-Type", "application/json"), `{"userId":"alice"}`, http.StatusForbidden, "origin_not_allowed", ""},
		{"opaque origin", with("Origin", "null", "Content-Type", "application/json"), `{"userId":"alice"}`, http.StatusForbidden, "origin_not_allowed", ""},
		{"simple request (form)", with("Origin", testOrigin, "Content-Type", "application/x-www-form-urlencoded"), `userId=alice`, http.StatusUnsupportedMediaType, "unsupported_media_type", ""},
		{"simple request (text)", with("Origin", testOrigin, "Content-Type", "text/plain"), `{"userId":"alice"}`, http.StatusUnsupportedMediaType, "unsupported_media_type", ""},
		{"no content type", with("Origin", testOrigin), `{"userId":"alice"}`, http.StatusUnsupportedMediaType, "unsupported_media_type", ""},
		{"malformed JSON", jsonCT, `{"userId":`, http.StatusBadRequest, "invalid_json", ""},
		{"two values", jsonCT, `{"userId":"a"}{"userId":"b"}`, http.StatusBadRequest, "invalid_json", ""},
		{"wrong type", jsonCT, `{"userId":42}`, http.StatusBadRequest, "invalid_json", ""},
		{"empty body", jsonCT, ``, http.StatusBadRequest, "invalid_json", ""},
		{"no user id", jsonCT, `{}`, http.StatusBadRequest, "invalid_user_id", ""},
		{"space in user id", jsonCT, `{"userId":"al ice"}`, http.StatusBadRequest, "invalid_user_id", ""},
		{"slash in user id", jsonCT, `{"userId":"a/b"}`, http.StatusBadRequest, "invalid_user_id", ""},
		{"user id too long for a user handle", jsonCT, `{"userId":"` + strings.Repeat("a", 65) + `"}`, http.StatusBadRequest, "invalid_user_id", ""},
		{"oversized body", jsonCT, `{"userId":"` + strings.Repeat("a", 70<<10) + `"}`, http.StatusRequestEntityTooLarge, "body_too_large", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := e.do(t, "POST", "/demo/session", []byte(tt.body), tt.header)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, body)
			}
			if tt.status != http.StatusCreated {
				if got := errorCode(body); got != tt.code {
					t.Fatalf("code %q, want %q", got, tt.code)
				}
				if bytes.Contains(body, []byte("kws1.")) {
					t.Fatal("a refusal carries a token")
				}
				return
			}
			var out sessionResponse
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
			claims, err := e.sessions.Verify(out.Token)
			if err != nil || claims.UserID != tt.user || out.UserID != tt.user {
				t.Fatalf("token for %q: claims %+v, %v", tt.user, claims, err)
			}
			if left := time.Until(out.ExpiresAt); left <= time.Minute || left > 3*time.Minute {
				t.Fatalf("token expires in %s, want the configured 3m", left)
			}
			if res.Header.Get("Cache-Control") != "no-store" {
				t.Fatal("a token answer may be cached")
			}
		})
	}
}

// TestSessionTokenIsRealAndScoped: a demo token is an ordinary session
// token of this appliance (another appliance's root refuses it).
func TestSessionTokenIsRealAndScoped(t *testing.T) {
	e := newEnv(t)
	res, body := e.do(t, "POST", "/demo/session", []byte(`{"userId":"carol"}`), map[string]string{"Origin": testOrigin, "Content-Type": "application/json"})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	var out sessionResponse
	_ = json.Unmarshal(body, &out)
	other, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.SessionTokens(nil).Verify(out.Token); !errors.Is(err, enclave.ErrSessionInvalid) {
		t.Fatalf("another root accepted the token: %v", err)
	}
}

// TestCrossOriginPreflightRefused: a page of another origin cannot even
// send the JSON request (its preflight gets no CORS grant).
func TestCrossOriginPreflightRefused(t *testing.T) {
	e := newEnv(t)
	res, _ := e.do(t, "OPTIONS", "/demo/session", nil, map[string]string{
		"Origin": "https://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
	})
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Fatalf("preflight from another origin granted: Access-Control-Allow-Origin %q", got)
	}
}

// TestSessionAudited: every token minted is in the audit log, the token
// itself is not; when the log cannot be written, no token is minted.
func TestSessionAudited(t *testing.T) {
	e := newEnv(t)
	h := map[string]string{"Origin": testOrigin, "Content-Type": "application/json"}
	res, body := e.do(t, "POST", "/demo/session", []byte(`{"userId":"dave"}`), h)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	var out sessionResponse
	_ = json.Unmarshal(body, &out)
	if err := e.audit.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := readAll(t, e.auditDir)
	if !strings.Contains(logs, ActionSessionToken) || !strings.Contains(logs, "user:dave") {
		t.Fatalf("no %s line for user:dave in the audit log", ActionSessionToken)
	}
	if strings.Contains(logs, out.Token) || strings.Contains(logs, "kws1.") {
		t.Fatal("the audit log holds the token")
	}
	if rep, err := audit.Verify(e.auditDir, e.root.Subkey(enclave.SubkeyAuditAnchor)); err != nil || rep.Broken != nil {
		t.Fatalf("audit log does not verify: %v %+v", err, rep.Broken)
	}

	// The log is closed now: fail closed.
	res, body = e.do(t, "POST", "/demo/session", []byte(`{"userId":"erin"}`), h)
	if res.StatusCode != http.StatusServiceUnavailable || errorCode(body) != "audit_unavailable" || bytes.Contains(body, []byte("kws1.")) {
		t.Fatalf("with the audit log closed: %d %s", res.StatusCode, body)
	}
}

func readAll(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		sb.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

func TestNewOptions(t *testing.T) {
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	alog, err := audit.Open(context.Background(), audit.Options{Dir: t.TempDir(), AnchorKey: root.Subkey(enclave.SubkeyAuditAnchor), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close(context.Background())
	s := root.SessionTokens(nil)
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"valid", Options{Sessions: s, Audit: alog, Origins: []string{testOrigin}}, true},
		{"android origin ignored beside a web origin", Options{Sessions: s, Audit: alog, Origins: []string{"android:apk-key-hash:abc", testOrigin}}, true},
		{"no sessions", Options{Audit: alog, Origins: []string{testOrigin}}, false},
		{"no audit", Options{Sessions: s, Origins: []string{testOrigin}}, false},
		{"no origins", Options{Sessions: s, Audit: alog}, false},
		{"android origin only", Options{Sessions: s, Audit: alog, Origins: []string{"android:apk-key-hash:abc"}}, false},
		{"not an origin", Options{Sessions: s, Audit: alog, Origins: []string{"localhost"}}, false},
		{"negative TTL", Options{Sessions: s, Audit: alog, Origins: []string{testOrigin}, TTL: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
			if err == nil && d.ttl != DefaultTTL {
				t.Fatalf("zero TTL became %s, want %s", d.ttl, DefaultTTL)
			}
		})
	}
}

// FuzzSession: whatever the body, the endpoint answers 201 with a token for
// exactly the id in the body, or a 4xx without a token; never a 5xx.
func FuzzSession(f *testing.F) {
	for _, s := range []string{`{"userId":"alice"}`, `{}`, `{"userId":""}`, `{"userId":"a b"}`, `[]`, `null`, `{"userId":"x","extra":1}`, `"str"`, `{"userId":"\u00e9"}`} {
		f.Add([]byte(s))
	}
	e := newEnv(f)
	h := map[string]string{"Origin": testOrigin, "Content-Type": "application/json"}
	f.Fuzz(func(t *testing.T, body []byte) {
		res, out := e.do(t, "POST", "/demo/session", body, h)
		switch {
		case res.StatusCode == http.StatusCreated:
			var req sessionRequest
			var got sessionResponse
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("201 for a body that is not JSON: %q", body)
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			c, err := e.sessions.Verify(got.Token)
			if err != nil || c.UserID != req.UserID || validUserID(req.UserID) != nil {
				t.Fatalf("token %+v (%v) for body %q", c, err, body)
			}
		case res.StatusCode >= 400 && res.StatusCode < 500:
			if bytes.Contains(out, []byte("kws1.")) {
				t.Fatalf("a refusal carries a token: %s", out)
			}
		default:
			t.Fatalf("status %d for body %q: %s", res.StatusCode, body, out)
		}
	})
}
