package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/server/passkey"
)

const (
	claimRPID   = "example.com"
	claimOrigin = "https://app.example.com"
)

// withPasskeys adds the passkey routes over the harness's store, custody,
// audit log and clock.
func withPasskeys(t *testing.T) harnessOpt {
	return func(_ *config.Config, o *Options) {
		svc, err := passkey.NewService(passkey.Options{RelyingParties: []passkey.RelyingParty{{ID: claimRPID, Origins: []string{claimOrigin}}}},
			passkey.Deps{DB: o.DB, Custody: o.Custody, Audit: o.Audit, Clock: o.Clock})
		if err != nil {
			t.Fatal(err)
		}
		o.Passkey = &passkey.Handler{Service: svc, Sessions: o.Sessions}
	}
}

// importPasskeyKey imports key for userID with method PASSKEY and returns
// the item's result.
func (h *harness) importPasskeyKey(userID string, key []byte, overwrite bool) importResult {
	h.t.Helper()
	r := h.Admin("POST", "/v1/admin/keys/import", map[string]any{"overwrite": overwrite,
		"items": []map[string]any{{"userId": userID, "method": "PASSKEY", "key": b64(key)}}})
	var out struct{ Results []importResult }
	r.Decode(h.t, &out)
	if r.Status != 200 || len(out.Results) != 1 {
		h.t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	return out.Results[0]
}

func (h *harness) sessionToken(userID string) string {
	h.t.Helper()
	r := h.Admin("POST", "/v1/admin/users/"+userID+"/session-tokens", map[string]any{})
	var out struct{ Token string }
	r.Decode(h.t, &out)
	if r.Status != 201 || out.Token == "" {
		h.t.Fatalf("session token: %d %s", r.Status, r.Body)
	}
	return out.Token
}

// registerPasskey runs registration/begin with a session token and
// registration/finish with a passkey made by a (and key, when not nil). It
// returns begin's answer and finish's reply; a refused begin returns it as
// the reply.
func (h *harness) registerPasskey(a *softauthn.Authenticator, userID string, key []byte) (map[string]any, reply) {
	h.t.Helper()
	r := h.Bearer("POST", "/v1/passkeys/registration/begin", h.sessionToken(userID), map[string]any{})
	if r.Status != 200 {
		return nil, r
	}
	begin := r.Map(h.t)
	opts, _ := json.Marshal(begin["publicKey"])
	cred, _, err := a.Create(opts, claimOrigin)
	if err != nil {
		h.t.Fatal(err)
	}
	body := map[string]any{"ceremonyId": begin["ceremonyId"], "credential": json.RawMessage(cred)}
	if key != nil {
		body["key"] = b64(key)
	}
	return begin, h.Do("POST", "/v1/passkeys/registration/finish", body)
}

// releasePasskey authenticates userID with a's passkey and returns the key
// released, or the reply of a refused finish.
func (h *harness) releasePasskey(a *softauthn.Authenticator, userID string) ([]byte, reply) {
	h.t.Helper()
	r := h.Do("POST", "/v1/passkeys/authentication/begin", map[string]any{"userId": userID})
	if r.Status != 200 {
		h.t.Fatalf("authentication/begin: %d %s", r.Status, r.Body)
	}
	begin := r.Map(h.t)
	opts, _ := json.Marshal(begin["publicKey"])
	cred, err := a.Get(opts, claimOrigin)
	if err != nil {
		return nil, reply{Status: 0, Body: []byte(err.Error())}
	}
	r = h.Do("POST", "/v1/passkeys/authentication/finish", map[string]any{"ceremonyId": begin["ceremonyId"], "credential": json.RawMessage(cred)})
	if r.Status != 200 {
		return nil, r
	}
	var out struct{ Key string }
	r.Decode(h.t, &out)
	k, err := base64.StdEncoding.DecodeString(out.Key)
	if err != nil {
		h.t.Fatal(err)
	}
	return k, r
}

func (h *harness) auditText() string {
	h.t.Helper()
	if err := h.audit.Anchor(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(h.db.Path()), "audit", "*.jsonl"))
	var sb strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(f)
		sb.Write(b)
	}
	return sb.String()
}

// TestImportedPasskeyKeyIsClaimed: a PASSKEY key brought in by the admin
// import is claimed by the first passkey registered for its owner with a
// session token (no key in the request), audited; that passkey then
// releases the imported key. A second registration with another session
// token does not claim it again: it needs an assertion as for any key.
func TestImportedPasskeyKeyIsClaimed(t *testing.T) {
	h := newHarness(t, withPasskeys(t))
	imported := []byte("imported key from the old host, 32")
	res := h.importPasskeyKey("alice", imported, false)
	if res.Status != 201 {
		t.Fatalf("import: %+v", res)
	}

	// The operator sees the deadline.
	if r := h.Admin("GET", "/v1/admin/users/alice", nil); r.Status != 200 || !strings.Contains(string(r.Body), `"claimDeadline"`) {
		t.Fatalf("admin view of an unclaimed key: %d %s", r.Status, r.Body)
	}
	// A registration that brings its own key is refused: it would replace
	// the imported key.
	user := softauthn.New([16]byte{1})
	begin, r := h.registerPasskey(user, "alice", []byte("a key the client made up, 32 byte"))
	if begin == nil {
		t.Fatalf("registration/begin over an unclaimed import: %d %s", r.Status, r.Body)
	}
	if begin["keyRequired"] != false || begin["claimsImportedKey"] != true {
		t.Fatalf("registration/begin over an unclaimed import: %v", begin)
	}
	if r.Status != 409 || r.Code() != "imported_key_unclaimed" {
		t.Fatalf("claim with a key: %d %s", r.Status, r.Body)
	}
	// Without a key: the passkey is registered and the imported key kept.
	_, r = h.registerPasskey(user, "alice", nil)
	if r.Status != 201 {
		t.Fatalf("claim: %d %s", r.Status, r.Body)
	}
	out := r.Map(t)
	if out["keyClaimed"] != true || out["keyStored"] != false || out["keyReplaced"] != false {
		t.Fatalf("claim answer: %s", r.Body)
	}
	k, r := h.releasePasskey(user, "alice")
	if !bytes.Equal(k, imported) {
		t.Fatalf("release after the claim: %d %s", r.Status, r.Body)
	}
	if info, err := h.custody.Info(context.Background(), enclave.UserOwner("alice"), "PASSKEY"); err != nil || info.ClaimDeadline != nil {
		t.Fatalf("the mark after the claim: %+v %v", info, err)
	}

	if r := h.Admin("GET", "/v1/admin/users/alice", nil); r.Status != 200 || strings.Contains(string(r.Body), `"claimDeadline"`) {
		t.Fatalf("admin view of a claimed key: %d %s", r.Status, r.Body)
	}

	// The attacker's case: the customer's backend (or whoever holds a
	// session token) registers a second passkey. It does not claim again.
	attacker := softauthn.New([16]byte{2})
	if _, r := h.registerPasskey(attacker, "alice", nil); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("second registration without an assertion: %d %s", r.Status, r.Body)
	}
	if _, r := h.registerPasskey(attacker, "alice", []byte("a key the client made up, 32 byte")); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("second registration with a key: %d %s", r.Status, r.Body)
	}
	if k, r := h.releasePasskey(attacker, "alice"); k != nil {
		t.Fatalf("the attacker's passkey released the key: %d %s", r.Status, r.Body)
	}

	lines := h.auditText()
	if n := strings.Count(lines, `"import_claimed"`); n != 1 {
		t.Fatalf("audit: %d import_claimed lines, want 1", n)
	}
	for _, l := range strings.Split(lines, "\n") {
		if strings.Contains(l, `"import_claimed"`) && (!strings.Contains(l, `"user:alice"`) || !strings.Contains(l, `"PASSKEY"`)) {
			t.Fatalf("the claim's audit line does not name the owner and method: %s", l)
		}
	}
	if strings.Contains(lines, b64(imported)) {
		t.Fatal("the key is in the audit log")
	}
}

// TestImportClaimWindow: after the deadline a registration over the
// imported key is refused (it needs an assertion, and none can exist); a
// new import (overwrite) opens a new window.
func TestImportClaimWindow(t *testing.T) {
	h := newHarness(t, withPasskeys(t))
	imported := []byte("imported key from the old host, 32")
	if res := h.importPasskeyKey("bob", imported, false); res.Status != 201 || res.ClaimDeadline == nil ||
		!res.ClaimDeadline.Equal(h.issuer.Clock().Now().Add(30*24*time.Hour)) {
		t.Fatalf("import: %+v", res)
	}
	h.advance(30*24*time.Hour + time.Second)
	a := softauthn.New([16]byte{3})
	if _, r := h.registerPasskey(a, "bob", nil); r.Status != 409 || r.Code() != "import_claim_expired" {
		t.Fatalf("registration after the deadline: %d %s", r.Status, r.Body)
	}
	if _, r := h.registerPasskey(a, "bob", []byte("a key the client made up, 32 byte")); r.Status != 409 || r.Code() != "import_claim_expired" {
		t.Fatalf("registration with a key after the deadline: %d %s", r.Status, r.Body)
	}
	// The operator imports again: a new window.
	again := []byte("imported key from the old host, 2nd")
	if res := h.importPasskeyKey("bob", again, true); res.Status != 200 || res.ClaimDeadline == nil {
		t.Fatalf("re-import: %+v", res)
	}
	if _, r := h.registerPasskey(a, "bob", nil); r.Status != 201 {
		t.Fatalf("claim after a re-import: %d %s", r.Status, r.Body)
	}
	if k, r := h.releasePasskey(a, "bob"); !bytes.Equal(k, again) {
		t.Fatalf("release: %d %s", r.Status, r.Body)
	}
}

// TestImportClaimRace: a ceremony begun while the key was claimable does
// not claim it once another registration has: the mark is checked and
// cleared in the finishing transaction.
func TestImportClaimRace(t *testing.T) {
	h := newHarness(t, withPasskeys(t))
	h.importPasskeyKey("erin", []byte("imported key from the old host, 32"), false)
	first, second := softauthn.New([16]byte{7}), softauthn.New([16]byte{8})
	begin := func(a *softauthn.Authenticator) map[string]any {
		r := h.Bearer("POST", "/v1/passkeys/registration/begin", h.sessionToken("erin"), map[string]any{})
		if r.Status != 200 {
			t.Fatalf("begin: %d %s", r.Status, r.Body)
		}
		b := r.Map(t)
		opts, _ := json.Marshal(b["publicKey"])
		cred, _, err := a.Create(opts, claimOrigin)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]any{"ceremonyId": b["ceremonyId"], "credential": json.RawMessage(cred)}
	}
	b1, b2 := begin(first), begin(second)
	if r := h.Do("POST", "/v1/passkeys/registration/finish", b1); r.Status != 201 {
		t.Fatalf("first claim: %d %s", r.Status, r.Body)
	}
	if r := h.Do("POST", "/v1/passkeys/registration/finish", b2); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("second finish: %d %s", r.Status, r.Body)
	}
}

// TestImportOverwriteOfClaimedKey: an import with overwrite over a key
// that was claimed (or never imported) does not make it claimable again:
// otherwise an admin key and a session token together would bind a new
// passkey to the owner, whose prior value an admin restore brings back.
// The passkeys already bound reach the new value. Over a key still
// unclaimed, the overwrite sets a new deadline.
func TestImportOverwriteOfClaimedKey(t *testing.T) {
	h := newHarness(t, withPasskeys(t))
	owner := softauthn.New([16]byte{4})
	h.importPasskeyKey("carol", []byte("imported key from the old host, 32"), false)
	if _, r := h.registerPasskey(owner, "carol", nil); r.Status != 201 {
		t.Fatalf("claim: %d %s", r.Status, r.Body)
	}
	newer := []byte("imported key, second export, 32 b")
	if res := h.importPasskeyKey("carol", newer, true); res.Status != 200 || !res.Replaced || res.ClaimDeadline != nil {
		t.Fatalf("overwrite of a claimed key: %+v", res)
	}
	if _, r := h.registerPasskey(softauthn.New([16]byte{5}), "carol", nil); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("registration after an overwrite of a claimed key: %d %s", r.Status, r.Body)
	}
	if k, r := h.releasePasskey(owner, "carol"); !bytes.Equal(k, newer) {
		t.Fatalf("release after the overwrite: %d %s", r.Status, r.Body)
	}

	// A key stored by a registration (never imported): an overwrite import
	// does not make it claimable either.
	dave := softauthn.New([16]byte{6})
	if _, r := h.registerPasskey(dave, "dave", []byte("dave's own key from registration")); r.Status != 201 {
		t.Fatalf("registration: %d %s", r.Status, r.Body)
	}
	if _, r := h.registerPasskey(softauthn.New([16]byte{9}), "dave", nil); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("registration over a stored key: %d %s", r.Status, r.Body)
	}
	if res := h.importPasskeyKey("dave", newer, true); res.Status != 200 || res.ClaimDeadline != nil {
		t.Fatalf("overwrite of a registered key: %+v", res)
	}
	if _, r := h.registerPasskey(softauthn.New([16]byte{9}), "dave", nil); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("registration after an overwrite import: %d %s", r.Status, r.Body)
	}
}

// TestImportClaimDisabled: keys.import_claim_window 0 imports keys that
// no registration claims (the behaviour before claims existed).
func TestImportClaimDisabled(t *testing.T) {
	h := newHarness(t, withPasskeys(t), func(c *config.Config, _ *Options) { c.Keys.ImportClaimWindow = 0 })
	if res := h.importPasskeyKey("fay", []byte("imported key from the old host, 32"), false); res.Status != 201 || res.ClaimDeadline != nil {
		t.Fatalf("import: %+v", res)
	}
	if _, r := h.registerPasskey(softauthn.New([16]byte{10}), "fay", nil); r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("registration: %d %s", r.Status, r.Body)
	}
}
