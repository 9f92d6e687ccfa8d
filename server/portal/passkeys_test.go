package portal

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"net/http"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/server/passkey"
)

// iosCredential rebuilds a credential JSON exactly as PortalSwift's
// PasskeyAuth does (id, rawId, type, clientExtensionResults, and the
// response members iOS gives) and returns it as the JSON string the SDK
// sends.
func iosCredential(t testing.TB, raw []byte, members ...string) string {
	t.Helper()
	var c struct {
		ID       string                     `json:"id"`
		RawID    string                     `json:"rawId"`
		Response map[string]json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	resp := map[string]json.RawMessage{}
	for _, m := range members {
		if v, ok := c.Response[m]; ok {
			resp[m] = v
		}
	}
	b, err := json.Marshal(map[string]any{"rawId": c.RawID, "id": c.ID, "clientExtensionResults": map[string]any{},
		"type": "public-key", "response": resp})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func attestationOf(t testing.TB, raw []byte) string {
	return iosCredential(t, raw, "attestationObject", "clientDataJSON")
}

func assertionOf(t testing.TB, raw []byte) string {
	return iosCredential(t, raw, "clientDataJSON", "authenticatorData", "signature", "userHandle")
}

// optionsOf returns the "options" member of a begin answer (what the SDK
// hands to the platform).
func optionsOf(t testing.TB, r reply) ([]byte, string) {
	t.Helper()
	var v struct {
		Options   json.RawMessage `json:"options"`
		SessionID string          `json:"sessionId"`
	}
	if err := json.Unmarshal(r.Body, &v); err != nil || v.SessionID == "" {
		t.Fatalf("begin answer %d %s: %v", r.Status, r.Body, err)
	}
	return v.Options, v.SessionID
}

func (h *harness) status(cred string) string {
	h.t.Helper()
	r := h.do(http.MethodGet, "/passkeys/status", cred, nil)
	mustStatus(h.t, r, http.StatusOK, "")
	var s StatusResponse
	r.DecodeStrict(h.t, &s)
	return s.Status
}

func (h *harness) beginRegistration(cred string) ([]byte, string) {
	h.t.Helper()
	r := h.do(http.MethodPost, "/passkeys/begin-registration", cred, map[string]string{"relyingParty": testRPID})
	mustStatus(h.t, r, http.StatusOK, "")
	var strict RegistrationResponse
	r.DecodeStrict(h.t, &strict)
	return optionsOf(h.t, r)
}

func (h *harness) finishRegistration(cred, sessionID, attestation, key string) reply {
	h.t.Helper()
	return h.do(http.MethodPost, "/passkeys/finish-registration", cred,
		map[string]string{"attestation": attestation, "sessionId": sessionID, "encryptionKey": key, "relyingParty": testRPID})
}

// register runs the SDK's registration with auth and stores key.
func (h *harness) register(cred string, auth *softauthn.Authenticator, key string) *softauthn.Credential {
	h.t.Helper()
	opts, sid := h.beginRegistration(cred)
	att, c, err := auth.CreateWith(opts, testOrigin, softauthn.CreateOptions{UserIDPlain: true})
	if err != nil {
		h.t.Fatal(err)
	}
	mustStatus(h.t, h.finishRegistration(cred, sid, attestationOf(h.t, att), key), http.StatusOK, "")
	return c
}

func (h *harness) beginLogin(cred string) ([]byte, string) {
	h.t.Helper()
	r := h.do(http.MethodPost, "/passkeys/begin-login", cred, map[string]string{"relyingParty": testRPID})
	mustStatus(h.t, r, http.StatusOK, "")
	var strict LoginResponse
	r.DecodeStrict(h.t, &strict)
	return optionsOf(h.t, r)
}

// assert signs the begin-login options as iOS does (plain userHandle).
func (h *harness) assert(auth *softauthn.Authenticator, opts []byte, o softauthn.GetOptions) string {
	h.t.Helper()
	if o.UserHandle == 0 {
		o.UserHandle = softauthn.UserHandlePlain
	}
	raw, err := auth.GetWith(opts, testOrigin, o)
	if err != nil {
		h.t.Fatal(err)
	}
	return assertionOf(h.t, raw)
}

func (h *harness) loginRead(cred, sid, assertion string) reply {
	h.t.Helper()
	return h.do(http.MethodPost, "/passkeys/finish-login/read", cred,
		map[string]string{"assertion": assertion, "sessionId": sid, "relyingParty": testRPID})
}

func (h *harness) loginWrite(cred, sid, assertion, key string) reply {
	h.t.Helper()
	return h.do(http.MethodPost, "/passkeys/finish-login/write", cred,
		map[string]string{"encryptionKey": key, "assertion": assertion, "sessionId": sid, "relyingParty": testRPID})
}

func readKey(t testing.TB, r reply) string {
	t.Helper()
	mustStatus(t, r, http.StatusOK, "")
	var k EncryptKeyResponse
	r.DecodeStrict(t, &k)
	return k.EncryptionKey
}

// TestPortalPasskeyFlow runs on every store backend.
func TestPortalPasskeyFlow(t *testing.T) { onEveryBackend(t, portalPasskeyFlow) }

func portalPasskeyFlow(t *testing.T, core []apptest.CoreOption) {
	h := newHarness(t, harnessOptions{core: core})
	h.clients()
	if s := h.status(credA); s != StatusNotRegistered {
		t.Fatalf("status %q", s)
	}
	opts, sid := h.beginRegistration(credA)
	var o struct {
		PublicKey map[string]json.RawMessage `json:"publicKey"`
	}
	if err := json.Unmarshal(opts, &o); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"rp", "user", "challenge", "pubKeyCredParams", "timeout", "authenticatorSelection", "attestation"} {
		if _, ok := o.PublicKey[m]; !ok {
			t.Fatalf("creation options lack %s: %s", m, opts)
		}
	}
	var user UserEntity
	_ = json.Unmarshal(o.PublicKey["user"], &user)
	if user.ID != "client-a" {
		t.Fatalf("user.id %q: the plain client id is the user handle", user.ID)
	}
	att, _, err := h.auth.CreateWith(opts, testOrigin, softauthn.CreateOptions{UserIDPlain: true})
	if err != nil {
		t.Fatal(err)
	}
	mustStatus(t, h.finishRegistration(credA, sid, attestationOf(t, att), keyHex1), http.StatusOK, "")
	if s := h.status(credA); s != StatusRegisteredWithKey {
		t.Fatalf("status %q", s)
	}
	info, err := h.custody.Info(context.Background(), ClientOwner("client-a"), passkey.Method)
	if err != nil || info.Format != enclave.FormatText || info.ClientID != "client-a" {
		t.Fatalf("info %+v %v", info, err)
	}

	opts, sid = h.beginLogin(credA)
	if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex1 {
		t.Fatalf("read %q", got)
	}
	opts, sid = h.beginLogin(credA)
	mustStatus(t, h.loginWrite(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}), keyHex2), http.StatusOK, "")
	opts, sid = h.beginLogin(credA)
	if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex2 {
		t.Fatalf("read after write %q", got)
	}
	vs, err := h.custody.ListVersions(context.Background(), ClientOwner("client-a"), passkey.Method)
	if err != nil || len(vs) != 1 {
		t.Fatalf("prior versions %v %v", vs, err)
	}
	// Every userHandle form is accepted: raw base64url (Android, web),
	// empty (Safari), absent.
	for _, form := range []softauthn.UserHandleForm{softauthn.UserHandleRaw, softauthn.UserHandleEmpty, softauthn.UserHandleAbsent} {
		opts, sid = h.beginLogin(credA)
		if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{UserHandle: form}))); got != keyHex2 {
			t.Fatalf("form %d: read %q", form, got)
		}
	}
}

func TestPortalPasskeyStatusRegisteredWithoutKey(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	h.register(credA, h.auth, keyHex1)
	// A passkey without its key (the key deleted, or a crash between the
	// two writes) is "registered": the SDK registers again, which works
	// because no key is stored.
	if err := h.custody.DeleteKey(context.Background(), ClientOwner("client-a"), passkey.Method); err != nil {
		t.Fatal(err)
	}
	if s := h.status(credA); s != StatusRegistered {
		t.Fatalf("status %q", s)
	}
	h.register(credA, softauthn.New([16]byte{0xd}), keyHex2)
	if s := h.status(credA); s != StatusRegisteredWithKey {
		t.Fatalf("status %q", s)
	}
	opts, sid := h.beginLogin(credA)
	if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex2 {
		t.Fatalf("read %q", got)
	}
}

func TestPortalPasskeyRefusals(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	h.register(credA, h.auth, keyHex1)
	authB := softauthn.New([16]byte{0xb})
	h.register(credB, authB, keyHex2)

	type attempt struct {
		status int
		code   string
	}
	tests := []struct {
		name string
		run  func(t *testing.T) reply
		want attempt
	}{
		{"reused sessionId", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			a := h.assert(h.auth, opts, softauthn.GetOptions{})
			readKey(t, h.loginRead(credA, sid, a))
			return h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))
		}, attempt{400, passkey.ErrCeremonyUnknown.Code}},
		{"foreign sessionId", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			r := h.loginRead(credB, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))
			// The owner's ceremony is untouched: it still finishes.
			if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex1 {
				t.Fatalf("owner's read %q", got)
			}
			return r
		}, attempt{400, ErrSessionInvalid.Code}},
		{"registration sessionId used to log in", func(t *testing.T) reply {
			h.api.add("pk_fresh", "client-fresh", testCustodian)
			_, rsid := h.beginRegistration("pk_fresh")
			opts, _ := h.beginLogin(credA)
			return h.loginRead("pk_fresh", rsid, h.assert(h.auth, opts, softauthn.GetOptions{}))
		}, attempt{400, ErrSessionInvalid.Code}},
		{"made-up sessionId", func(t *testing.T) reply {
			opts, _ := h.beginLogin(credA)
			return h.loginRead(credA, "made-up.AAAAAAAAAAAAAAAAAAAAAA", h.assert(h.auth, opts, softauthn.GetOptions{}))
		}, attempt{400, ErrSessionInvalid.Code}},
		{"wrong relyingParty at begin", func(t *testing.T) reply {
			return h.do(http.MethodPost, "/passkeys/begin-login", credA, map[string]string{"relyingParty": "evil.example"})
		}, attempt{400, ErrRelyingParty.Code}},
		{"missing relyingParty", func(t *testing.T) reply {
			return h.do(http.MethodPost, "/passkeys/begin-login", credA, map[string]string{})
		}, attempt{400, ErrRelyingParty.Code}},
		{"wrong relyingParty at finish", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			return h.do(http.MethodPost, "/passkeys/finish-login/read", credA, map[string]string{
				"assertion": h.assert(h.auth, opts, softauthn.GetOptions{}), "sessionId": sid, "relyingParty": "evil.example"})
		}, attempt{400, ErrRelyingParty.Code}},
		{"bad signature", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			return h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{TamperSignature: true}))
		}, attempt{401, passkey.ErrSignature.Code}},
		{"wrong origin", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			raw, err := h.auth.GetWith(opts, "https://evil.example", softauthn.GetOptions{UserHandle: softauthn.UserHandlePlain})
			if err != nil {
				t.Fatal(err)
			}
			return h.loginRead(credA, sid, assertionOf(t, raw))
		}, attempt{401, passkey.ErrOriginMismatch.Code}},
		{"another user's userHandle", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			return h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{UserHandle: softauthn.UserHandleCustom, UserHandleValue: "client-b"}))
		}, attempt{401, passkey.ErrUserHandle.Code}},
		{"another client's passkey", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			return h.loginRead(credA, sid, h.assert(authB, opts, softauthn.GetOptions{CredentialID: authB.Credentials()[0].ID}))
		}, attempt{401, passkey.ErrCredentialNotUsers.Code}},
		{"write with a bad signature", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			return h.loginWrite(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{TamperSignature: true}), "hostile-key")
		}, attempt{401, passkey.ErrSignature.Code}},
		{"assertion missing", func(t *testing.T) reply {
			_, sid := h.beginLogin(credA)
			return h.do(http.MethodPost, "/passkeys/finish-login/read", credA, map[string]string{"sessionId": sid, "relyingParty": testRPID})
		}, attempt{400, ErrCredentialRequired.Code}},
		{"assertion not JSON", func(t *testing.T) reply {
			_, sid := h.beginLogin(credA)
			return h.loginRead(credA, sid, "not json")
		}, attempt{400, passkey.ErrInvalidCredential.Code}},
		{"unknown credential", func(t *testing.T) reply {
			return h.do(http.MethodGet, "/passkeys/status", "pk_nobody", nil)
		}, attempt{401, ErrCredentialUnknown.Code}},
		{"client of another custodian", func(t *testing.T) reply {
			return h.do(http.MethodPost, "/passkeys/begin-login", credOther, map[string]string{"relyingParty": testRPID})
		}, attempt{403, ErrOtherCustodian.Code}},
		{"write key over 1 KiB", func(t *testing.T) reply {
			opts, sid := h.beginLogin(credA)
			return h.loginWrite(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}), strings.Repeat("k", MaxKeyBytes+1))
		}, attempt{400, ErrInvalidKey.Code}},
		{"body too large", func(t *testing.T) reply {
			_, sid := h.beginLogin(credA)
			return h.loginRead(credA, sid, strings.Repeat("x", maxFinishBody))
		}, attempt{413, ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.run(t)
			mustStatus(t, r, tc.want.status, tc.want.code)
			noSecret(t, r, keyHex1, keyHex2)
		})
	}
	// Nothing above changed a key.
	opts, sid := h.beginLogin(credA)
	if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex1 {
		t.Fatalf("key A now %q", got)
	}
}

func TestPortalPasskeyRegistrationNeverReplaces(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	// Two registrations begun before the first finishes: the second
	// finish finds a key stored and is refused.
	opts1, sid1 := h.beginRegistration(credA)
	opts2, sid2 := h.beginRegistration(credA)
	att1, _, err := h.auth.CreateWith(opts1, testOrigin, softauthn.CreateOptions{UserIDPlain: true})
	if err != nil {
		t.Fatal(err)
	}
	other := softauthn.New([16]byte{0xc})
	att2, _, err := other.CreateWith(opts2, testOrigin, softauthn.CreateOptions{UserIDPlain: true})
	if err != nil {
		t.Fatal(err)
	}
	mustStatus(t, h.finishRegistration(credA, sid1, attestationOf(t, att1), keyHex1), http.StatusOK, "")
	r := h.finishRegistration(credA, sid2, attestationOf(t, att2), keyHex2)
	mustStatus(t, r, http.StatusConflict, "key_exists")
	// And a new begin is refused too.
	mustStatus(t, h.do(http.MethodPost, "/passkeys/begin-registration", credA, map[string]string{"relyingParty": testRPID}), http.StatusConflict, "key_exists")
	opts, sid := h.beginLogin(credA)
	if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex1 {
		t.Fatalf("key now %q", got)
	}
	// The refused registration left no passkey behind.
	opts, sid = h.beginLogin(credA)
	raw, err := other.GetWith(opts, testOrigin, softauthn.GetOptions{UserHandle: softauthn.UserHandlePlain, CredentialID: other.Credentials()[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	mustStatus(t, h.loginRead(credA, sid, assertionOf(t, raw)), http.StatusUnauthorized, passkey.ErrCredentialUnknown.Code)
}

func TestPortalPasskeysOffWithoutService(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	h.adapter.pk = nil
	mustStatus(t, h.do(http.MethodGet, "/passkeys/status", credA, nil), http.StatusServiceUnavailable, ErrPasskeysOff.Code)
}

func TestPortalSessionIDBinding(t *testing.T) {
	a := sessionAdapter()
	sid := a.sessionID(sessionAuthentication, ClientOwner("c1"), "cer")
	if got, err := a.ceremonyOf(sessionAuthentication, ClientOwner("c1"), sid); err != nil || got != "cer" {
		t.Fatalf("own session: %q %v", got, err)
	}
	for _, tc := range []struct {
		name, kind, owner, sid string
	}{
		{"other client", sessionAuthentication, "c2", sid},
		{"other kind", sessionRegistration, "c1", sid},
		{"other ceremony", sessionAuthentication, "c1", "cer2" + sid[3:]},
		{"no tag", sessionAuthentication, "c1", "cer"},
		{"empty tag", sessionAuthentication, "c1", "cer."},
		{"tag not base64", sessionAuthentication, "c1", "cer.!!!"},
		{"truncated tag", sessionAuthentication, "c1", sid[:len(sid)-2]},
		{"empty", sessionAuthentication, "c1", ""},
		{"dot first", sessionAuthentication, "c1", "." + sid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := a.ceremonyOf(tc.kind, ClientOwner(tc.owner), tc.sid); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// Another process (another key) does not accept it either.
	b := sessionAdapter()
	if _, err := b.ceremonyOf(sessionAuthentication, ClientOwner("c1"), sid); err == nil {
		t.Fatal("another adapter's key accepted the session")
	}
}

func TestPortalSubjectOfLongClientID(t *testing.T) {
	long := strings.Repeat("c", 100)
	s := subject(Client{ID: long})
	if s.Owner != ClientOwner(long) || passkey.ValidUserID(s.UserID) != nil || s.UserID == long {
		t.Fatalf("subject %+v", s)
	}
	if s2 := subject(Client{ID: long + "d"}); s2.UserID == s.UserID {
		t.Fatal("two client ids share a user handle")
	}
	if s := subject(Client{ID: "client-a"}); s.UserID != "client-a" {
		t.Fatalf("subject %+v", s)
	}
}

// TestPortalImportedPasskeyKeyNotClaimedBySDK: Portal's passkey path uses
// the passkey service's claim rule, but the SDK's finish-registration always
// brings a new key, and a claim never replaces the imported key. So
// begin-registration over an unclaimed imported portal:<clientId> key is
// refused at once (before the user makes a passkey the finish would
// refuse), with the code that says why; the imported key is untouched.
func TestPortalImportedPasskeyKeyNotClaimedBySDK(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	r := h.Admin(http.MethodPost, "/v1/admin/keys/import", map[string]any{"items": []map[string]any{
		{"owner": "portal:client-a", "method": passkey.Method, "keyText": keyHex1, "clientId": "client-a"}}})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"claimDeadline"`) {
		t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	if st := h.status(credA); st != StatusRegisteredWithKey {
		t.Fatalf("status of an imported key: %q", st)
	}
	mustStatus(t, h.do(http.MethodPost, "/passkeys/begin-registration", credA, map[string]string{"relyingParty": testRPID}),
		http.StatusConflict, passkey.ErrClaimWithKey.Code)
	k, info, err := h.custody.Lookup(context.Background(), ClientOwner("client-a"), passkey.Method)
	if err != nil || string(k.Reveal()) != keyHex1 || info.ClaimDeadline == nil {
		t.Fatalf("the imported key after the SDK's attempt: %+v %v", info, err)
	}
}

// sessionAdapter is an adapter with only its session key: enough for the
// sessionId binding (sessionID, ceremonyOf), which uses nothing else.
func sessionAdapter() *Adapter {
	a := &Adapter{sessionKey: make([]byte, 32)}
	_, _ = rand.Read(a.sessionKey)
	return a
}

// TestPortalNewRequiresDeps: the adapter takes its dependencies at
// construction; without the keys service, the Firebase handler or the
// audit log it is refused rather than failing on the first request.
func TestPortalNewRequiresDeps(t *testing.T) {
	if _, err := New(Options{CustodianID: "cu"}, Deps{}); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("New without deps: %v", err)
	}
}
