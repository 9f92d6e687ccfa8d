package portal

import (
	"context"
	"encoding/base64"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/server"
)

const (
	credA     = "pk_live_client_a_0001"
	credB     = "pk_live_client_b_0002"
	credOther = "pk_live_other_custodian"
	keyHex1   = "3f1c9a7be2d4a60518f9c3b7e1d2a4f6081b3c5d7e9fa1b2c3d4e5f60718293a"
	keyHex2   = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f"
)

func (h *harness) clients() {
	h.api.add(credA, "client-a", testCustodian)
	h.api.add(credB, "client-b", testCustodian)
	h.api.add(credOther, "client-x", "custodian-other")
}

func (h *harness) tbs(method, cred, token string, body any) reply {
	h.t.Helper()
	return h.do(method, "/v1/backup/encrypt-key", cred, body, FirebaseTokenHeader, token)
}

// TestPortalTBSWriteReadRebackup runs on every store backend.
func TestPortalTBSWriteReadRebackup(t *testing.T) { onEveryBackend(t, portalTBSWriteReadRebackup) }

func portalTBSWriteReadRebackup(t *testing.T, core []apptest.CoreOption) {
	h := newHarness(t, harnessOptions{core: core})
	h.clients()
	tok := h.issuer.Mint(nil)

	r := h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1})
	mustStatus(t, r, http.StatusCreated, "")
	r = h.tbs(http.MethodGet, credA, tok, nil)
	mustStatus(t, r, http.StatusOK, "")
	var got EncryptKeyResponse
	r.DecodeStrict(t, &got)
	if got.EncryptionKey != keyHex1 {
		t.Fatalf("read %q, stored %q", got.EncryptionKey, keyHex1)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control %q", r.Header.Get("Cache-Control"))
	}

	// Re-backup replaces the key and keeps the old one as a prior version.
	h.advance(time.Second)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex2}), http.StatusOK, "")
	h.tbs(http.MethodGet, credA, tok, nil).DecodeStrict(t, &got)
	if got.EncryptionKey != keyHex2 {
		t.Fatalf("after re-backup read %q", got.EncryptionKey)
	}
	owner := enclave.Owner("firebase:" + testProject + "//" + firebasetest.DefaultSubject)
	vs, err := h.custody.ListVersions(context.Background(), owner, server.MethodFirebase)
	if err != nil || len(vs) != 1 {
		t.Fatalf("prior versions %v %v", vs, err)
	}
	info, err := h.custody.Info(context.Background(), owner, server.MethodFirebase)
	if err != nil || info.Format != enclave.FormatText || info.ClientID != "client-a" {
		t.Fatalf("info %+v %v", info, err)
	}

	// The native Firebase API addresses the same record, but with
	// portal.client_mismatch refuse (the default) a key stored through a
	// Portal client is that client's alone (with allow, the native API
	// reads it: TestPortalNativeRoutesWithClientMismatchAllowed).
	mustStatus(t, h.do(http.MethodGet, "/v1/firebase/key", tok, nil), http.StatusForbidden, ErrClientMismatch.Code)
	// Twenty reads with one credential: one Portal call in all.
	for range 20 {
		mustStatus(t, h.tbs(http.MethodGet, credA, tok, nil), http.StatusOK, "")
	}
	if n := h.api.calls.Load(); n != 1 {
		t.Fatalf("%d Portal calls", n)
	}
}

func TestPortalTBSKeyKeptByteForByte(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	tok := h.issuer.Mint(nil)
	for i, k := range []string{"x", " leading and trailing ", "ÄÖÜ–ünïcode ✓", strings.Repeat("f", MaxKeyBytes), `{"json":"inside"}`} {
		want := http.StatusOK
		if i == 0 {
			want = http.StatusCreated
		}
		mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": k}), want, "")
		var got EncryptKeyResponse
		h.tbs(http.MethodGet, credA, tok, nil).DecodeStrict(t, &got)
		if got.EncryptionKey != k {
			t.Fatalf("stored %q, read %q", k, got.EncryptionKey)
		}
	}
}

func TestPortalTBSRefusals(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	tok := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	otherUser := h.issuer.Mint(firebasetest.Claims{"sub": "other-user", "user_id": "other-user"})

	tests := []struct {
		name    string
		method  string
		cred    string
		token   string
		body    any
		status  int
		code    string
		noCalls bool // refused before any Portal call
	}{
		{"no credential", http.MethodGet, "", tok, nil, 401, ErrCredentialMissing.Code, true},
		{"malformed credential", http.MethodGet, "bad cred", tok, nil, 401, ErrCredentialInvalid.Code, true},
		{"no Firebase token", http.MethodGet, credA, "", nil, 401, "token_missing", true},
		{"expired Firebase token", http.MethodGet, credA, h.issuer.Mint(firebasetest.Claims{"exp": h.issuer.Clock().Now().Add(-time.Hour).Unix(), "iat": h.issuer.Clock().Now().Add(-2 * time.Hour).Unix(), "auth_time": h.issuer.Clock().Now().Add(-2 * time.Hour).Unix()}), nil, 401, "", true},
		{"token of another project", http.MethodGet, credA, h.issuer.Mint(firebasetest.Claims{"aud": "elsewhere", "iss": "https://securetoken.google.com/elsewhere"}), nil, 401, "", true},
		{"garbage token", http.MethodGet, credA, "not.a.jwt", nil, 401, "", true},
		{"unknown credential", http.MethodGet, "pk_unknown", tok, nil, 401, ErrCredentialUnknown.Code, false},
		{"client of another custodian", http.MethodGet, credOther, tok, nil, 403, ErrOtherCustodian.Code, false},
		{"another client reads", http.MethodGet, credB, tok, nil, 403, ErrClientMismatch.Code, false},
		{"another client writes", http.MethodPut, credB, tok, map[string]string{"encryptionKey": keyHex2}, 403, ErrClientMismatch.Code, false},
		{"no key stored", http.MethodGet, credA, otherUser, nil, 404, "not_found", false},
		{"empty key", http.MethodPut, credA, otherUser, map[string]string{"encryptionKey": ""}, 400, ErrInvalidKey.Code, true},
		{"missing key", http.MethodPut, credA, otherUser, map[string]string{"key": keyHex1}, 400, ErrInvalidKey.Code, true},
		{"key not a string", http.MethodPut, credA, otherUser, `{"encryptionKey":42}`, 400, "invalid_json", true},
		{"key over 1 KiB", http.MethodPut, credA, otherUser, map[string]string{"encryptionKey": strings.Repeat("a", MaxKeyBytes+1)}, 400, ErrInvalidKey.Code, true},
		{"body over the route limit", http.MethodPut, credA, otherUser, `{"encryptionKey":"` + strings.Repeat("a", maxSmallBody) + `"}`, 413, "", true},
		{"malformed JSON", http.MethodPut, credA, otherUser, `{"encryptionKey":`, 400, "invalid_json", true},
		{"trailing data", http.MethodPut, credA, otherUser, `{"encryptionKey":"k"} {}`, 400, "invalid_json", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.adapter.resolver.Flush()
			before := h.api.calls.Load()
			r := h.tbs(tc.method, tc.cred, tc.token, tc.body)
			mustStatus(t, r, tc.status, tc.code)
			noSecret(t, r, keyHex1, keyHex2)
			if calls := h.api.calls.Load() - before; tc.noCalls && calls != 0 {
				t.Fatalf("refused request cost %d Portal calls", calls)
			}
		})
	}
	// Nothing above changed the stored key.
	var got EncryptKeyResponse
	h.tbs(http.MethodGet, credA, tok, nil).DecodeStrict(t, &got)
	if got.EncryptionKey != keyHex1 {
		t.Fatalf("key now %q", got.EncryptionKey)
	}
}

func TestPortalTBSClientMismatchAllowed(t *testing.T) {
	h := newHarness(t, harnessOptions{portal: func(o *Options) { o.AllowClientMismatch = true }})
	h.clients()
	tok := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	var got EncryptKeyResponse
	r := h.tbs(http.MethodGet, credB, tok, nil)
	mustStatus(t, r, http.StatusOK, "")
	r.DecodeStrict(t, &got)
	if got.EncryptionKey != keyHex1 {
		t.Fatalf("read %q", got.EncryptionKey)
	}
}

func TestPortalTBSNativeBytesKeyNotConverted(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	tok := h.issuer.Mint(nil)
	raw := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	mustStatus(t, h.do(http.MethodPut, "/v1/firebase/key", tok, map[string]string{"key": raw}), http.StatusCreated, "")
	r := h.tbs(http.MethodGet, credA, tok, nil)
	mustStatus(t, r, http.StatusConflict, ErrKeyFormat.Code)
	noSecret(t, r, strings.Repeat("k", 32))
}

func TestPortalTBSPortalDown(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	tok := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	h.api.setStatus(http.StatusInternalServerError)
	// Cached: keeps working.
	mustStatus(t, h.tbs(http.MethodGet, credA, tok, nil), http.StatusOK, "")
	// Not cached: 503 with Retry-After, no key.
	r := h.tbs(http.MethodGet, credB, tok, nil)
	mustStatus(t, r, http.StatusServiceUnavailable, ErrPortalUnavailable.Code)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	noSecret(t, r, keyHex1)
}

func TestPortalTBSOverwriteNeedsRecentSignIn(t *testing.T) {
	h := newHarness(t, harnessOptions{portal: func(o *Options) { o.OverwriteMaxAuthAge = 10 * time.Minute }})
	h.clients()
	now := h.issuer.Clock().Now()
	old := h.issuer.Mint(firebasetest.Claims{"auth_time": now.Add(-time.Hour).Unix()})
	mustStatus(t, h.tbs(http.MethodPut, credA, old, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	mustStatus(t, h.tbs(http.MethodPut, credA, old, map[string]string{"encryptionKey": keyHex2}), http.StatusConflict, "key_exists")
	fresh := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, fresh, map[string]string{"encryptionKey": keyHex2}), http.StatusOK, "")
}

// TestPortalTBSRefusedReadIsNotAuditedAsRelease: the record changes to
// another client's between the adapter's first look and the release (a
// delete and a store through client B). The read ends in 403, and the
// audit log must not say the key was released for that request.
func TestPortalTBSRefusedReadIsNotAuditedAsRelease(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	tok := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	owner := enclave.Owner("firebase:" + testProject + "//" + firebasetest.DefaultSubject)
	h.adapter.beforeRelease = func() {
		ctx := context.Background()
		if err := h.custody.DeleteKey(ctx, owner, server.MethodFirebase); err != nil {
			t.Error(err)
		}
		if _, err := h.custody.PutKey(ctx, owner, server.MethodFirebase, []byte(keyHex2),
			enclave.PutOptions{Format: enclave.FormatText, ClientID: "client-b"}); err != nil {
			t.Error(err)
		}
	}
	r := h.do(http.MethodGet, "/v1/backup/encrypt-key", credA, nil, FirebaseTokenHeader, tok, "X-Portal-Trace-Id", "raced-read-0001")
	mustStatus(t, r, http.StatusForbidden, ErrClientMismatch.Code)
	noSecret(t, r, keyHex1, keyHex2)
	refused := false
	for _, line := range strings.Split(h.AuditLines(t), "\n") {
		if !strings.Contains(line, "raced-read-0001") {
			continue
		}
		if strings.Contains(line, `"action":"release"`) {
			t.Fatalf("a request answered 403 is audited as a release: %s", line)
		}
		if strings.Contains(line, `"reason":"client_mismatch"`) {
			refused = true
		}
	}
	if !refused {
		t.Fatal("the refused read is not audited as a refusal")
	}
}

// TestPortalNativeRoutesObeyClientIsolation: with portal.client_mismatch
// refuse, a key stored through Portal client A is refused to the native
// Firebase routes (which carry no client id) with the same user's token,
// as it is to client B through TBS. Nothing is released, replaced or
// deleted, and no refused read is audited as a release.
func TestPortalNativeRoutesObeyClientIsolation(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	tok := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")

	other := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("n", 32)))
	r := h.do(http.MethodGet, "/v1/firebase/key", tok, nil, "X-Portal-Trace-Id", "native-read-0001")
	mustStatus(t, r, http.StatusForbidden, ErrClientMismatch.Code)
	noSecret(t, r, keyHex1, base64.StdEncoding.EncodeToString([]byte(keyHex1)))
	r = h.do(http.MethodPost, "/v1/firebase/key/release", tok, map[string]string{})
	mustStatus(t, r, http.StatusForbidden, ErrClientMismatch.Code)
	noSecret(t, r, base64.StdEncoding.EncodeToString([]byte(keyHex1)))
	mustStatus(t, h.do(http.MethodPut, "/v1/firebase/key", tok, map[string]string{"key": other}), http.StatusForbidden, ErrClientMismatch.Code)
	mustStatus(t, h.do(http.MethodDelete, "/v1/firebase/key", tok, nil), http.StatusForbidden, ErrClientMismatch.Code)
	mustStatus(t, h.tbs(http.MethodGet, credB, tok, nil), http.StatusForbidden, ErrClientMismatch.Code)
	mustStatus(t, h.tbs(http.MethodPut, credB, tok, map[string]string{"encryptionKey": keyHex2}), http.StatusForbidden, ErrClientMismatch.Code)

	// Client A still reads its key, unchanged, with no prior version made.
	var got EncryptKeyResponse
	h.tbs(http.MethodGet, credA, tok, nil).DecodeStrict(t, &got)
	if got.EncryptionKey != keyHex1 {
		t.Fatalf("key now %q", got.EncryptionKey)
	}
	owner := enclave.Owner("firebase:" + testProject + "//" + firebasetest.DefaultSubject)
	if vs, err := h.custody.ListVersions(context.Background(), owner, server.MethodFirebase); err != nil || len(vs) != 0 {
		t.Fatalf("prior versions %v %v", vs, err)
	}
	for _, line := range strings.Split(h.AuditLines(t), "\n") {
		if strings.Contains(line, "native-read-0001") && strings.Contains(line, `"action":"release"`) {
			t.Fatalf("a refused native read is audited as a release: %s", line)
		}
	}
}

// TestPortalNativeRoutesWithClientMismatchAllowed: with
// portal.client_mismatch allow, the native routes act on a key stored
// through a Portal client as before.
func TestPortalNativeRoutesWithClientMismatchAllowed(t *testing.T) {
	h := newHarness(t, harnessOptions{portal: func(o *Options) { o.AllowClientMismatch = true }})
	h.clients()
	tok := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	r := h.do(http.MethodGet, "/v1/firebase/key", tok, nil)
	mustStatus(t, r, http.StatusOK, "")
	var native server.KeyResponse
	r.DecodeStrict(t, &native)
	if b, _ := base64.StdEncoding.DecodeString(native.Key); string(b) != keyHex1 {
		t.Fatalf("native read %q", b)
	}
	other := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("n", 32)))
	mustStatus(t, h.do(http.MethodPut, "/v1/firebase/key", tok, map[string]string{"key": other}), http.StatusOK, "")
	mustStatus(t, h.do(http.MethodDelete, "/v1/firebase/key", tok, nil), http.StatusNoContent, "")
}
