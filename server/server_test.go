package server

import (
	"context"
	"crypto/hpke"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store"
)

func TestHealthAndReadiness(t *testing.T) {
	h := newHarness(t)
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if r := h.Do(m, "/healthz", nil); r.Status != 200 {
			t.Fatalf("%s /healthz = %d", m, r.Status)
		}
		if r := h.Do(m, "/readyz", nil); r.Status != 200 {
			t.Fatalf("%s /readyz = %d %s", m, r.Status, r.Body)
		}
	}
	var rd readiness
	h.Do("GET", "/readyz", nil).Decode(t, &rd)
	if rd.Checks["root_key"].Status != "ok" || rd.Checks["store"].Status != "ok" {
		t.Fatalf("checks: %+v", rd)
	}
	h.srv.Drain()
	if r := h.Do("GET", "/readyz", nil); r.Status != 503 || !strings.Contains(string(r.Body), "draining") {
		t.Fatalf("draining /readyz = %d %s", r.Status, r.Body)
	}
	if r := h.Do("HEAD", "/readyz", nil); r.Status != 503 {
		t.Fatalf("draining HEAD /readyz = %d", r.Status)
	}
	if r := h.Do("GET", "/healthz", nil); r.Status != 200 {
		t.Fatal("liveness failed while draining")
	}
}

func TestSealedServesNothing(t *testing.T) {
	h := newHarness(t, func(_ *config.Config, o *Options) {
		o.Custody = nil
		o.SealedReason = "PCR values differ"
	})
	r := h.Do("GET", "/readyz", nil)
	if r.Status != 503 || strings.Contains(string(r.Body), "PCR values differ") {
		t.Fatalf("sealed /readyz = %d %s", r.Status, r.Body)
	}
	// Why: on the admin API only.
	r = h.Admin("GET", "/v1/admin/readyz", nil)
	if r.Status != 503 || !strings.Contains(string(r.Body), "PCR values differ") {
		t.Fatalf("sealed /v1/admin/readyz = %d %s", r.Status, r.Body)
	}
	tok := h.issuer.Mint(nil)
	if r := h.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 503 || r.Code() != "sealed" {
		t.Fatalf("sealed release = %d %s", r.Status, r.Body)
	}
	if r := h.Admin("POST", "/v1/admin/users/alice/session-tokens", nil); r.Status != 503 || r.Code() != "sealed" {
		t.Fatalf("sealed admin = %d %s", r.Status, r.Body)
	}
	for _, p := range []string{"/v1/passkeys/authentication/begin", "/passkeys/status", "/webhook/backup"} {
		if r := h.Do("POST", p, "{}"); r.Status != 503 || r.Code() != "sealed" {
			t.Fatalf("sealed %s = %d %s", p, r.Status, r.Body)
		}
	}
}

func TestErrorsAreJSON(t *testing.T) {
	h := newHarness(t)
	tok := h.issuer.Mint(nil)
	cases := []struct {
		name, method, path string
		body               any
		headers            []string
		status             int
		code               string
	}{
		{"unknown route", "GET", "/nope", nil, nil, 404, "route_not_found"},
		{"wrong method", "PATCH", "/v1/firebase/key", nil, nil, 405, "method_not_allowed"},
		{"wrong method on health", "PUT", "/healthz", nil, nil, 405, "method_not_allowed"},
		{"malformed JSON", "PUT", "/v1/firebase/key", `{"key":`, []string{"Authorization", "Bearer " + tok}, 400, "invalid_json"},
		{"wrong JSON type", "PUT", "/v1/firebase/key", `{"key":5}`, []string{"Authorization", "Bearer " + tok}, 400, "invalid_json"},
		{"two JSON values", "PUT", "/v1/firebase/key", `{"key":"a"}{}`, []string{"Authorization", "Bearer " + tok}, 400, "invalid_json"},
		{"empty body", "PUT", "/v1/firebase/key", "", []string{"Authorization", "Bearer " + tok, "Content-Type", "application/json"}, 400, "invalid_json"},
		{"oversized body", "PUT", "/v1/firebase/key", `{"key":"` + strings.Repeat("A", 70<<10) + `"}`, []string{"Authorization", "Bearer " + tok}, 413, "body_too_large"},
		{"not JSON", "PUT", "/v1/firebase/key", "key=x", []string{"Authorization", "Bearer " + tok, "Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"no admin key", "GET", "/v1/admin/users/alice", nil, nil, 401, "admin_unauthorized"},
		{"wrong admin key", "GET", "/v1/admin/users/alice", nil, []string{"Authorization", "Bearer " + testAdminKey + "x"}, 401, "admin_unauthorized"},
		{"basic auth", "GET", "/v1/admin/users/alice", nil, []string{"Authorization", "Basic " + testAdminKey}, 401, "admin_unauthorized"},
		{"bad user id", "POST", "/v1/admin/users/al%20ice/session-tokens", nil, []string{"Authorization", "Bearer " + testAdminKey}, 400, "invalid_user_id"},
		{"unknown user", "GET", "/v1/admin/users/nobody", nil, []string{"Authorization", "Bearer " + testAdminKey}, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.Do(tc.method, tc.path, tc.body, tc.headers...)
			if r.Status != tc.status || r.Code() != tc.code {
				t.Fatalf("= %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
			if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("content type %q", r.Header.Get("Content-Type"))
			}
		})
	}
}

func TestAdminUsers(t *testing.T) {
	h := newHarness(t)
	r := h.Admin("POST", "/v1/admin/users/alice/session-tokens", map[string]string{"ttl": "5m"})
	var st sessionTokenResponse
	r.Decode(t, &st)
	if r.Status != 201 || !strings.HasPrefix(st.Token, "kws1.") || st.ExpiresAt.IsZero() {
		t.Fatalf("mint: %d %s", r.Status, r.Body)
	}
	if r := h.Admin("POST", "/v1/admin/users/alice/session-tokens", map[string]string{"ttl": "5h"}); r.Status != 400 {
		t.Fatalf("ttl over max: %d", r.Status)
	}
	ctx := context.Background()
	if _, err := h.custody.PutKey(ctx, enclave.UserOwner("alice"), "PASSKEY", []byte("0123456789abcdef0123456789abcdef"), enclave.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r = h.Admin("GET", "/v1/admin/users/alice", nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"method":"PASSKEY"`) || strings.Contains(string(r.Body), "0123456789abcdef") {
		t.Fatalf("describe: %d %s", r.Status, r.Body)
	}
	if r := h.Admin("DELETE", "/v1/admin/users/alice", nil); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if r := h.Admin("GET", "/v1/admin/users/alice", nil); r.Status != 404 {
		t.Fatalf("after delete: %d %s", r.Status, r.Body)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestFirebaseStoreReleaseDelete(t *testing.T) {
	h := newHarness(t)
	tok := h.issuer.Mint(nil)
	key := []byte("0123456789abcdef0123456789abcdef")
	if r := h.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 404 {
		t.Fatalf("get before put: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64(key)}); r.Status != 201 {
		t.Fatalf("put: %d %s", r.Status, r.Body)
	}
	before := h.tpm.Count()
	for range 50 {
		r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
		var kr KeyResponse
		r.Decode(t, &kr)
		if r.Status != 200 || kr.Key != b64(key) {
			t.Fatalf("get: %d %s", r.Status, r.Body)
		}
	}
	if h.tpm.Count() != before {
		t.Fatalf("releases made %d TPM commands", h.tpm.Count()-before)
	}
	// Overwrite is allowed by default (200) and keeps the prior value.
	key2 := []byte("fedcba9876543210fedcba9876543210")
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64(key2)}); r.Status != 200 {
		t.Fatalf("overwrite: %d %s", r.Status, r.Body)
	}
	owner := enclave.Owner("firebase:proj-a//" + firebasetest.DefaultSubject)
	if vs, _ := h.custody.ListVersions(context.Background(), owner, MethodFirebase); len(vs) != 1 {
		t.Fatalf("prior versions: %v", vs)
	}
	// Bad keys.
	for _, bad := range []string{"", "not base64!", b64(make([]byte, 1025))} {
		if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: bad}); r.Status != 400 || r.Code() != "invalid_key" {
			t.Fatalf("bad key %q: %d %s", bad, r.Status, r.Body)
		}
	}
	if r := h.Bearer("DELETE", "/v1/firebase/key", tok, nil); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 404 {
		t.Fatalf("get after delete: %d", r.Status)
	}
}

func TestFirebaseHPKERelease(t *testing.T) {
	h := newHarness(t)
	tok := h.issuer.Mint(nil)
	key := []byte("0123456789abcdef0123456789abcdef")
	h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64(key)})
	for name, kem := range map[string]hpke.KEM{"mlkem768x25519": hpke.MLKEM768X25519(), "x25519": hpke.DHKEM(nil)} {
		if kem == nil || name == "x25519" {
			continue // covered below through the query form
		}
		priv, _ := kem.GenerateKey()
		r := h.Bearer("POST", "/v1/firebase/key/release", tok, releaseRequest{RecipientPublicKey: b64(priv.PublicKey().Bytes())})
		var kr KeyResponse
		r.Decode(t, &kr)
		if r.Status != 200 || kr.Key != "" || kr.SealedKey == "" {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
		enc, _ := base64.StdEncoding.DecodeString(kr.Enc)
		ct, _ := base64.StdEncoding.DecodeString(kr.SealedKey)
		owner := enclave.Owner("firebase:proj-a//" + firebasetest.DefaultSubject)
		pt, err := enclave.OpenFromRecipient(priv, enc, ct, HPKEInfo("firebase", owner))
		if err != nil || string(pt) != string(key) {
			t.Fatalf("%s: open: %v", name, err)
		}
	}
	if r := h.Bearer("GET", "/v1/firebase/key?recipientPublicKey=AAAA", tok, nil); r.Status != 400 || r.Code() != "invalid_recipient_key" {
		t.Fatalf("bad recipient: %d %s", r.Status, r.Body)
	}
}

func TestFirebaseProjectsAndTokens(t *testing.T) {
	h := newHarness(t)
	key := []byte("0123456789abcdef0123456789abcdef")
	tokA := h.issuer.Mint(nil)
	h.Bearer("PUT", "/v1/firebase/key", tokA, keyRequest{Key: b64(key)})
	// The same uid in project B sees nothing of project A.
	tokB := h.issuer.Mint(firebasetest.Claims{"aud": "proj-b", "iss": "https://securetoken.google.com/proj-b"})
	if r := h.Bearer("GET", "/v1/firebase/key", tokB, nil); r.Status != 404 {
		t.Fatalf("project B reads project A: %d %s", r.Status, r.Body)
	}
	cases := map[string]struct {
		tok  string
		code string
	}{
		"expired":       {h.issuer.Mint(firebasetest.Claims{"exp": h.issuer.Clock().Now().Add(-time.Hour).Unix()}), "token_expired"},
		"other project": {h.issuer.Mint(firebasetest.Claims{"aud": "proj-z", "iss": "https://securetoken.google.com/proj-z"}), "wrong_audience"},
		"garbage":       {"abc.def.ghi", "token_malformed"},
		"missing":       {"", "token_missing"},
	}
	for name, tc := range cases {
		r := h.Bearer("GET", "/v1/firebase/key", tc.tok, nil)
		if r.Status != 401 || r.Code() != tc.code || strings.Contains(string(r.Body), b64(key)) {
			t.Errorf("%s: %d %s, want 401 %s", name, r.Status, r.Body, tc.code)
		}
		if tc.tok != "" && len(tc.tok) > 20 && strings.Contains(string(r.Body), tc.tok) {
			t.Errorf("%s: the error echoes the token", name)
		}
	}
}

func TestFirebaseBlockAndOverwritePolicy(t *testing.T) {
	h := newHarness(t, func(c *config.Config, o *Options) { c.Firebase.OverwriteMaxAuthAge = 10 * time.Minute })
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	tok := h.issuer.Mint(nil)
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: key}); r.Status != 201 {
		t.Fatalf("put: %d %s", r.Status, r.Body)
	}
	h.advance(20 * time.Minute)
	old := h.issuer.Mint(firebasetest.Claims{"auth_time": h.issuer.Clock().Now().Add(-20 * time.Minute).Unix()})
	if r := h.Bearer("PUT", "/v1/firebase/key", old, keyRequest{Key: key}); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("overwrite with an old sign-in: %d %s", r.Status, r.Body)
	}
	fresh := h.issuer.Mint(nil)
	if r := h.Bearer("PUT", "/v1/firebase/key", fresh, keyRequest{Key: key}); r.Status != 200 {
		t.Fatalf("overwrite with a fresh sign-in: %d %s", r.Status, r.Body)
	}
	subject := "firebase:proj-a%2F%2F" + firebasetest.DefaultSubject
	if r := h.Admin("PUT", "/v1/admin/firebase/blocked/"+subject, nil); r.Status != 204 {
		t.Fatalf("block: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("GET", "/v1/firebase/key", fresh, nil); r.Status != 403 || r.Code() != "user_blocked" {
		t.Fatalf("blocked user: %d %s", r.Status, r.Body)
	}
	if r := h.Admin("DELETE", "/v1/admin/firebase/blocked/"+subject, nil); r.Status != 204 {
		t.Fatalf("unblock: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("GET", "/v1/firebase/key", fresh, nil); r.Status != 200 {
		t.Fatalf("unblocked: %d %s", r.Status, r.Body)
	}
}

// TestAuditFailsClosed: with the audit log unable to write, releases and
// stores are refused and nothing is released.
func TestAuditFailsClosed(t *testing.T) {
	h := newHarness(t)
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	tok := h.issuer.Mint(nil)
	h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: key})
	if err := h.audit.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
	if r.Status != 503 || r.Code() != "audit_unavailable" || strings.Contains(string(r.Body), key) || r.Header.Get("Retry-After") == "" {
		t.Fatalf("release with a dead audit log: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64([]byte("fedcba9876543210fedcba9876543210"))}); r.Status != 503 {
		t.Fatalf("store with a dead audit log: %d %s", r.Status, r.Body)
	}
	k, err := h.custody.GetKey(context.Background(), enclave.Owner("firebase:proj-a//"+firebasetest.DefaultSubject), MethodFirebase)
	if err != nil || b64(k.Reveal()) != key {
		t.Fatal("a refused store changed the key")
	}
}

func TestAuditLinesCarryNoSecrets(t *testing.T) {
	h := newHarness(t)
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	tok := h.issuer.Mint(nil)
	h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: key})
	h.Bearer("GET", "/v1/firebase/key", tok, nil, "X-Portal-Trace-Id", "trace-release-42")
	h.Admin("POST", "/v1/admin/users/alice/session-tokens", nil)
	h.audit.Close(context.Background())
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(h.db.Path()), "audit", "*"))
	var all strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all.Write(b)
	}
	s := all.String()
	if !strings.Contains(s, `"release"`) || !strings.Contains(s, `"store"`) {
		t.Fatalf("audit log lacks the store and release lines:\n%s", s)
	}
	if !strings.Contains(s, `"trace-release-42"`) {
		t.Fatalf("the release line lacks the request's X-Portal-Trace-Id:\n%s", s)
	}
	for _, secretPart := range []string{key, tok[len(tok)-20:], testAdminKey, "kws1."} {
		if strings.Contains(s, secretPart) {
			t.Fatalf("audit log contains a secret (%q…)", secretPart[:8])
		}
	}
}

func TestRateLimit(t *testing.T) {
	h := newHarness(t, func(c *config.Config, o *Options) { c.Limits.RatePerSecond, c.Limits.RateBurst = 1, 3 })
	tok := h.issuer.Mint(nil)
	var limited reply
	for range 10 {
		if r := h.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status == 429 {
			limited = r
			break
		}
	}
	if limited.Status != 429 || limited.Code() != "rate_limited" || limited.Header.Get("Retry-After") == "" {
		t.Fatalf("no 429 with Retry-After: %+v", limited)
	}
	if r := h.Do("GET", "/healthz", nil); r.Status != 200 {
		t.Fatal("health is rate limited")
	}
}

// TestUserDeletesAreRateLimited: deletions advance the TPM's rollback
// counter, so they are bounded (decisions/13).
func TestUserDeletesAreRateLimited(t *testing.T) {
	h := newHarness(t, func(c *config.Config, _ *Options) { c.Limits.UserDeletesPerMinute = 3 })
	for i := range 3 {
		if r := h.Admin("DELETE", fmt.Sprintf("/v1/admin/users/u%d", i), nil); r.Status != 204 {
			t.Fatalf("delete %d: %d %s", i, r.Status, r.Body)
		}
	}
	r := h.Admin("DELETE", "/v1/admin/users/u9", nil)
	if r.Status != 429 || r.Code() != "rate_limited" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("fourth delete in a minute: %d %s", r.Status, r.Body)
	}
	h.advance(time.Minute)
	if r := h.Admin("DELETE", "/v1/admin/users/u9", nil); r.Status != 204 {
		t.Fatalf("after a minute: %d %s", r.Status, r.Body)
	}
}

// TestBackupStreamAndLastBackupMetric: the admin backup streams a store
// that opens, and the last-backup gauge moves from 0.
func TestBackupStreamAndLastBackupMetric(t *testing.T) {
	h := newHarness(t)
	metric := func() string {
		r := h.Do("GET", "/metrics", nil)
		for _, l := range strings.Split(string(r.Body), "\n") {
			if strings.HasPrefix(l, "keywarden_backup_last_success_timestamp_seconds ") {
				return strings.Fields(l)[1]
			}
		}
		t.Fatal("no keywarden_backup_last_success_timestamp_seconds in /metrics")
		return ""
	}
	if v := metric(); v != "0" {
		t.Fatalf("before any backup: %s", v)
	}
	r := h.Admin("GET", "/v1/admin/backup", nil)
	if r.Status != 200 || len(r.Body) < 4096 {
		t.Fatalf("backup: %d, %d bytes", r.Status, len(r.Body))
	}
	p := filepath.Join(t.TempDir(), "b.db")
	os.WriteFile(p, r.Body, 0o600)
	b, err := store.Open(p, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the streamed backup does not open: %v", err)
	}
	b.Close()
	if v := metric(); v == "0" {
		t.Fatal("the last-backup gauge did not move")
	}
	if r := h.Do("GET", "/v1/admin/backup", nil); r.Status != 401 {
		t.Fatalf("backup without the admin key: %d", r.Status)
	}
}

// TestBulkImport: keys exported elsewhere are imported per item, audited;
// an existing key is kept unless overwrite; bad items fail alone.
func TestBulkImport(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	keyB64 := b64([]byte("0123456789abcdef0123456789abcdef"))
	text := strings.Repeat("ab", 32)
	r := h.Admin("POST", "/v1/admin/keys/import", map[string]any{"items": []map[string]any{
		{"userId": "alice", "method": "PASSKEY", "key": keyB64},
		{"owner": "firebase:proj-a//" + firebasetest.DefaultSubject, "method": "FIREBASE", "keyText": text, "clientId": "client-1"},
		{"owner": "nobody", "method": "X", "key": keyB64},
		{"userId": "bob", "method": "PASSKEY", "key": "not base64!"},
		{"userId": "carol", "owner": "portal:x", "method": "PASSKEY", "key": keyB64},
	}})
	var out struct{ Results []importResult }
	r.Decode(t, &out)
	if r.Status != 200 || len(out.Results) != 5 {
		t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	want := []int{201, 201, 400, 400, 400}
	for i, res := range out.Results {
		if res.Status != want[i] {
			t.Errorf("item %d: %+v, want status %d", i, res, want[i])
		}
	}
	if k, err := h.custody.GetKey(ctx, enclave.UserOwner("alice"), "PASSKEY"); err != nil || b64(k.Reveal()) != keyB64 {
		t.Fatalf("alice's key: %v", err)
	}
	// The Firebase key is readable through the Firebase route, as text.
	k, info, err := h.custody.Lookup(ctx, enclave.Owner("firebase:proj-a//"+firebasetest.DefaultSubject), MethodFirebase)
	if err != nil || string(k.Reveal()) != text || info.Format != enclave.FormatText || info.ClientID != "client-1" {
		t.Fatalf("firebase key: %+v %v", info, err)
	}
	// Again without overwrite: kept; with overwrite: replaced, prior kept.
	other := b64([]byte("fedcba9876543210fedcba9876543210"))
	r = h.Admin("POST", "/v1/admin/keys/import", map[string]any{"items": []map[string]any{{"userId": "alice", "method": "PASSKEY", "key": other}}})
	r.Decode(t, &out)
	if out.Results[0].Status != 409 || out.Results[0].Code != "key_exists" {
		t.Fatalf("import over a stored key: %+v", out.Results[0])
	}
	r = h.Admin("POST", "/v1/admin/keys/import", map[string]any{"overwrite": true, "items": []map[string]any{{"userId": "alice", "method": "PASSKEY", "key": other}}})
	r.Decode(t, &out)
	if out.Results[0].Status != 200 || !out.Results[0].Replaced {
		t.Fatalf("overwrite import: %+v", out.Results[0])
	}
	if vs, _ := h.custody.ListVersions(ctx, enclave.UserOwner("alice"), "PASSKEY"); len(vs) != 1 {
		t.Fatalf("prior versions after an overwrite import: %v", vs)
	}
	if r := h.Admin("POST", "/v1/admin/keys/import", map[string]any{"items": []map[string]any{}}); r.Status != 400 || r.Code() != "invalid_import" {
		t.Fatalf("empty import: %d %s", r.Status, r.Body)
	}
	if r := h.Do("POST", "/v1/admin/keys/import", map[string]any{"items": []map[string]any{{"userId": "x", "method": "M", "key": keyB64}}}); r.Status != 401 {
		t.Fatalf("import without the admin key: %d", r.Status)
	}
	h.audit.Close(ctx)
	lines := ""
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(h.db.Path()), "audit", "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines += string(b)
	}
	if strings.Count(lines, `"admin_import"`) != 4 || strings.Contains(lines, keyB64) || strings.Contains(lines, text) {
		t.Fatalf("audit of the import: %d lines, or a key in it", strings.Count(lines, `"admin_import"`))
	}
}

// TestUserIDRuleIsOneRule: the admin API takes exactly the user ids the
// passkey routes take (1–64 of A-Z a-z 0-9 . _ - @ : +): an id one route
// accepts and another refuses would strand a user.
func TestUserIDRuleIsOneRule(t *testing.T) {
	h := newHarness(t)
	for id, want := range map[string]int{
		strings.Repeat("a", 64): 201,
		strings.Repeat("a", 65): 400,
		"a%23b":                 400, // "a#b": printable, but not in the rule
		"alice@example.com":     201,
	} {
		r := h.Admin("POST", "/v1/admin/users/"+id+"/session-tokens", nil)
		if r.Status != want || (want == 400 && r.Code() != "invalid_user_id") {
			t.Errorf("session token for %q: %d %s, want %d", id, r.Status, r.Code(), want)
		}
	}
}

// TestKeySizeRule: the native Firebase route stores what every store route
// stores, 1 to 1024 opaque bytes, and gives them back byte for byte.
func TestKeySizeRule(t *testing.T) {
	h := newHarness(t)
	tok := h.issuer.Mint(nil)
	for _, n := range []int{1, 32, 1024} {
		key := make([]byte, n)
		for i := range key {
			key[i] = byte(i*7 + n)
		}
		if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64(key)}); r.Status != 201 && r.Status != 200 {
			t.Fatalf("PUT a %d-byte key: %d %s", n, r.Status, r.Body)
		}
		r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
		var got struct {
			Key string `json:"key"`
		}
		if r.Status != 200 {
			t.Fatalf("GET after a %d-byte key: %d %s", n, r.Status, r.Body)
		}
		if r.Decode(t, &got); got.Key != b64(key) {
			t.Fatalf("GET after a %d-byte key: %d %s", n, r.Status, r.Body)
		}
	}
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64(make([]byte, 1025))}); r.Status != 400 || r.Code() != "invalid_key" {
		t.Fatalf("1025 bytes: %d %s", r.Status, r.Body)
	}
}
