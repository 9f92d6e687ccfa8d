// Portal SDK drop-in end to end (issue 9): the real keywarden binary in
// dev mode, with a stand-in for Portal's client API, a stand-in for
// Google's certificate endpoint (firebasetest), and a real Vault dev
// server. Requests are sent exactly as Portal's SDKs send them: JSON
// headers, X-Portal-Trace-Id, the client credential as bearer, camelCase
// bodies, credentials as JSON strings built as PortalSwift builds them
// (plain-string userHandle); answers are decoded strictly.
//
//	go test ./internal/e2e/ -run Portal
package e2e

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
)

const (
	portalCustodian = "cust-acme-wallets"
	portalSecret    = "portal-webhook-secret-0123456789"
	portalProject   = "portal-e2e-project"
	portalRP        = "localhost"
	portalOrigin    = "https://localhost" // the origin iOS puts in clientDataJSON for the RP

	credA     = "pk_e2e_client_a"
	credB     = "pk_e2e_client_b"
	credC     = "pk_e2e_client_c"
	credD     = "pk_e2e_client_d"
	credE     = "pk_e2e_client_e"
	credOther = "pk_e2e_other_custodian"

	key1 = "5c0f9e8d7c6b5a49382716051f2e3d4c5b6a79881726354453627180f9e8d7c6"
	key2 = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	key3 = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
)

func TestPortal(t *testing.T) {
	bin := proc.BuildBinary(t, "./cmd/keywarden")
	vs := vaultdev.Start(t)
	api := newPortalAPIStandIn(t)
	iss := firebasetest.NewIssuer(t, portalProject)
	api.add(credA, "clx0clienta0000000000001", portalCustodian)
	api.add(credB, "clx0clientb0000000000002", portalCustodian)
	api.add(credC, "clx0clientc0000000000003", portalCustodian)
	api.add(credD, "clx0clientd0000000000004", portalCustodian)
	api.add(credE, "clx0cliente0000000000005", portalCustodian)
	api.add(credOther, "clx0foreign0000000000009", "cust-someone-else")

	n := startPortalNode(t, bin,
		"KEYWARDEN_PORTAL_API_URL="+api.srv.URL,
		"KEYWARDEN_PORTAL_CUSTODIAN_ID="+portalCustodian,
		"KEYWARDEN_PORTAL_WEBHOOK_SECRET="+portalSecret,
		"KEYWARDEN_FIREBASE_PROJECT_ID="+portalProject,
		"KEYWARDEN_FIREBASE_CERTS_URL="+iss.URL(),
		"KEYWARDEN_VAULT_ADDR="+vs.Addr(),
		"KEYWARDEN_VAULT_TOKEN="+vs.RootToken(),
		"KEYWARDEN_PASSKEY_RP_ID="+portalRP,
		"KEYWARDEN_PASSKEY_ORIGINS="+portalOrigin,
		"KEYWARDEN_PASSKEY_MAX_CEREMONIES_PER_ADDRESS=1000",
	)
	t.Run("Firebase", func(t *testing.T) { portalFirebase(t, n, iss) })
	t.Run("Passkeys", func(t *testing.T) { portalPasskeys(t, n) })
	t.Run("Webhooks", func(t *testing.T) { portalWebhooks(t, n) })
	// Last: it takes Portal's API down.
	t.Run("IdentityCache", func(t *testing.T) { portalIdentityCache(t, n, api, iss) })

	// Nothing secret reached the log (debug level): no key, share,
	// credential, webhook secret or token.
	log := n.Log.String()
	if !strings.Contains(log, "Portal SDK drop-in on") {
		t.Fatalf("the drop-in was not wired:\n%s", log)
	}
	for _, s := range []string{key1, key2, key3, "0f1e2d3c4b5a6978", "a1b2c3d4e5f60718", "99887766554433221100", portalSecret,
		credA, credB, credC, credD, credE, credOther, "eyJ"} { // eyJ: the start of every JWT
		if strings.Contains(log, s) {
			t.Fatalf("the log holds a secret (%.12s…)", s)
		}
	}
}

func portalTBS(t *testing.T, n *portalNode, method, cred, token string, body any) portalReply {
	t.Helper()
	return n.sdk(t, method, "/v1/backup/encrypt-key", cred, body, "X-Firebase-Token", token)
}

func portalFirebase(t *testing.T, n *portalNode, iss *firebasetest.Issuer) {
	tok := iss.Mint(nil)
	// Write, read, re-backup, read.
	r := portalTBS(t, n, http.MethodPut, credA, tok, map[string]string{"encryptionKey": key1})
	if r.status/100 != 2 {
		t.Fatalf("write: %s", r)
	}
	if got := portalKey(t, portalTBS(t, n, http.MethodGet, credA, tok, nil)); got != key1 {
		t.Fatalf("read %q, wrote %q", got, key1)
	}
	r = portalTBS(t, n, http.MethodPut, credA, tok, map[string]string{"encryptionKey": key2})
	if r.status/100 != 2 {
		t.Fatalf("re-backup: %s", r)
	}
	if got := portalKey(t, portalTBS(t, n, http.MethodGet, credA, tok, nil)); got != key2 {
		t.Fatalf("read after re-backup %q", got)
	}
	// The native Firebase API addresses the same record, but with
	// portal.client_mismatch refuse (the default) a key stored through a
	// Portal client is that client's alone: the native routes get 403.
	r = n.sdk(t, http.MethodGet, "/v1/firebase/key", tok, nil)
	portalWant(t, r, http.StatusForbidden, "client_mismatch")
	if strings.Contains(string(r.body), base64.StdEncoding.EncodeToString([]byte(key2))) {
		t.Fatalf("native read: %s", r)
	}

	now := iss.Clock().Now()
	expired := iss.Mint(firebasetest.Claims{"iat": now.Add(-2 * time.Hour).Unix(), "auth_time": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()})
	other := iss.Mint(firebasetest.Claims{"sub": "user-without-key", "user_id": "user-without-key"})
	refusals := []struct {
		name   string
		method string
		cred   string
		token  string
		body   any
		status int
		code   string
	}{
		{"expired Firebase token", http.MethodGet, credA, expired, nil, 401, ""},
		{"expired Firebase token on write", http.MethodPut, credA, expired, map[string]string{"encryptionKey": key3}, 401, ""},
		{"no Firebase token", http.MethodGet, credA, "", nil, 401, ""},
		{"unknown client credential", http.MethodGet, "pk_e2e_nobody", tok, nil, 401, "portal_credential_unknown"},
		{"no client credential", http.MethodGet, "", tok, nil, 401, "portal_credential_missing"},
		{"client of another custodian", http.MethodGet, credOther, tok, nil, 403, "portal_custodian_mismatch"},
		{"Firebase user under another client (read)", http.MethodGet, credB, tok, nil, 403, "client_mismatch"},
		{"Firebase user under another client (write)", http.MethodPut, credB, tok, map[string]string{"encryptionKey": key3}, 403, "client_mismatch"},
		{"no key stored", http.MethodGet, credA, other, nil, 404, ""},
		{"key over 1 KiB", http.MethodPut, credA, other, map[string]string{"encryptionKey": strings.Repeat("a", 1025)}, 400, "invalid_key"},
		{"body over the limit", http.MethodPut, credA, other, `{"encryptionKey":"` + strings.Repeat("a", 70<<10) + `"}`, 413, ""},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r := portalTBS(t, n, tc.method, tc.cred, tc.token, tc.body)
			portalWant(t, r, tc.status, tc.code)
			portalNoSecret(t, r, key1, key2)
		})
	}
	if got := portalKey(t, portalTBS(t, n, http.MethodGet, credA, tok, nil)); got != key2 {
		t.Fatalf("the refusals changed the key: %q", got)
	}
}

func portalPasskeys(t *testing.T, n *portalNode) {
	a := &portalSDK{n: n, cred: credA, rp: portalRP, origin: portalOrigin, auth: softauthn.New([16]byte{0xa})}
	b := &portalSDK{n: n, cred: credB, rp: portalRP, origin: portalOrigin, auth: softauthn.New([16]byte{0xb})}

	// register → status → read → write → read
	if st := a.status(t); st != "not registered" {
		t.Fatalf("status %q", st)
	}
	opts, sid := a.beginRegistration(t)
	r := a.finishRegistration(t, sid, a.create(t, opts, softauthn.CreateOptions{}), key1)
	if r.status/100 != 2 {
		t.Fatalf("finish-registration: %s", r)
	}
	if st := a.status(t); st != "registered with credential" {
		t.Fatalf("status %q", st)
	}
	opts, sid = a.beginLogin(t)
	if got := portalKey(t, a.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{}))); got != key1 {
		t.Fatalf("read %q", got)
	}
	opts, sid = a.beginLogin(t)
	if r := a.write(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{}), key2); r.status/100 != 2 {
		t.Fatalf("write: %s", r)
	}
	opts, sid = a.beginLogin(t)
	if got := portalKey(t, a.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{}))); got != key2 {
		t.Fatalf("read after write %q", got)
	}
	// Another client with its own passkey and key.
	opts, sid = b.beginRegistration(t)
	if r := b.finishRegistration(t, sid, b.create(t, opts, softauthn.CreateOptions{}), key3); r.status/100 != 2 {
		t.Fatalf("B finish-registration: %s", r)
	}

	refusals := []struct {
		name   string
		run    func(t *testing.T) portalReply
		status int
		code   string
	}{
		{"reused sessionId", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			portalKey(t, a.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{})))
			return a.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{}))
		}, 400, ""},
		{"foreign sessionId", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return b.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{}))
		}, 400, "session_invalid"},
		{"wrong relyingParty at begin", func(t *testing.T) portalReply {
			return n.sdk(t, http.MethodPost, "/passkeys/begin-login", credA, map[string]string{"relyingParty": "portalhq.io"})
		}, 400, "unknown_relying_party"},
		{"wrong relyingParty at finish", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return n.sdk(t, http.MethodPost, "/passkeys/finish-login/read", credA, map[string]string{
				"assertion": a.assert(t, opts, portalOrigin, softauthn.GetOptions{}), "sessionId": sid, "relyingParty": "portalhq.io"})
		}, 400, "unknown_relying_party"},
		{"bad signature", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return a.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{TamperSignature: true}))
		}, 401, "credential_unknown"}, // a bad signature answers as an unknown credential
		{"wrong origin", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return a.read(t, sid, a.assert(t, opts, "https://evil.example", softauthn.GetOptions{}))
		}, 401, "origin_mismatch"},
		{"another user's userHandle", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return a.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{UserHandle: softauthn.UserHandleCustom, UserHandleValue: "clx0clientb0000000000002"}))
		}, 401, "user_handle_mismatch"},
		{"another client's passkey", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return a.read(t, sid, b.assert(t, opts, portalOrigin, softauthn.GetOptions{CredentialID: b.auth.Credentials()[0].ID}))
		}, 401, ""},
		{"write with a bad signature", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return a.write(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{TamperSignature: true}), "attacker-key")
		}, 401, "credential_unknown"}, // a bad signature answers as an unknown credential
		{"re-registration over a stored key (begin)", func(t *testing.T) portalReply {
			return n.sdk(t, http.MethodPost, "/passkeys/begin-registration", credA, map[string]string{"relyingParty": portalRP})
		}, 409, "key_exists"},
		{"re-registration over a stored key (finish)", func(t *testing.T) portalReply {
			c := &portalSDK{n: n, cred: credC, rp: portalRP, origin: portalOrigin, auth: softauthn.New([16]byte{0xc})}
			o1, s1 := c.beginRegistration(t)
			o2, s2 := c.beginRegistration(t)
			if r := c.finishRegistration(t, s1, c.create(t, o1, softauthn.CreateOptions{}), key1); r.status/100 != 2 {
				t.Fatalf("first registration: %s", r)
			}
			return c.finishRegistration(t, s2, c.create(t, o2, softauthn.CreateOptions{}), key3)
		}, 409, "key_exists"},
		{"oversized encryptionKey", func(t *testing.T) portalReply {
			opts, sid := a.beginLogin(t)
			return a.write(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{}), strings.Repeat("k", 1025))
		}, 400, "invalid_key"},
		{"unknown client credential", func(t *testing.T) portalReply {
			return n.sdk(t, http.MethodGet, "/passkeys/status", "pk_e2e_nobody", nil)
		}, 401, "portal_credential_unknown"},
		{"client of another custodian", func(t *testing.T) portalReply {
			return n.sdk(t, http.MethodPost, "/passkeys/begin-login", credOther, map[string]string{"relyingParty": portalRP})
		}, 403, "portal_custodian_mismatch"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.run(t)
			portalWant(t, r, tc.status, tc.code)
			portalNoSecret(t, r, key1, key2, key3)
		})
	}
	// Nothing above changed a key.
	opts, sid = a.beginLogin(t)
	if got := portalKey(t, a.read(t, sid, a.assert(t, opts, portalOrigin, softauthn.GetOptions{}))); got != key2 {
		t.Fatalf("A's key now %q", got)
	}
	opts, sid = b.beginLogin(t)
	if got := portalKey(t, b.read(t, sid, b.assert(t, opts, portalOrigin, softauthn.GetOptions{}))); got != key3 {
		t.Fatalf("B's key now %q", got)
	}
}

// Custodian backup shares as Portal sends them: JSON-stringified.
const (
	portalShareGDrive   = `{"backupSharePairId":"bsp-gdrive-1","share":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","curve":"ED25519"}`
	portalSharePasskey  = `{"backupSharePairId":"bsp-passkey-1","share":"a1b2c3d4e5f60718293a4b5c6d7e8f90","curve":"SECP256K1"}`
	portalSharePasskey2 = `{"backupSharePairId":"bsp-passkey-2","share":"99887766554433221100aabbccddeeff","curve":"SECP256K1"}`
)

func portalWebhook(t *testing.T, n *portalNode, path, secret string, body any) portalReply {
	t.Helper()
	if secret == "" {
		return n.sdk(t, http.MethodPost, path, "", body)
	}
	return n.sdk(t, http.MethodPost, path, "", body, "X-Webhook-Secret", secret)
}

func portalFetch(t *testing.T, n *portalNode, clientID string) []string {
	t.Helper()
	r := portalWebhook(t, n, "/webhook/backup/fetch", portalSecret, map[string]string{"clientId": clientID})
	portalWant(t, r, http.StatusOK, "")
	portalMembers(t, r.body, map[string]string{"backupShares": "array", "backupShares[]": "string"})
	var f sdkBackupShares
	portalStrict(t, r.body, &f)
	return f.BackupShares
}

func portalWebhooks(t *testing.T, n *portalNode) {
	const client = "clx0clienta0000000000001"
	backup := func(method, share string) {
		t.Helper()
		r := portalWebhook(t, n, "/webhook/backup", portalSecret, map[string]string{"clientId": client, "backupMethod": method, "share": share})
		if r.status != http.StatusOK && r.status != http.StatusNoContent {
			t.Fatalf("backup %s: %s", method, r)
		}
	}
	backup("GDRIVE-ED25519", portalShareGDrive)
	backup("PASSKEY-SECP256K1", portalSharePasskey)
	if got := portalFetch(t, n, client); len(got) != 2 || got[0] != portalShareGDrive || got[1] != portalSharePasskey {
		t.Fatalf("fetch: %q", got)
	}
	backup("PASSKEY-SECP256K1", portalSharePasskey2)
	if got := portalFetch(t, n, client); len(got) != 2 || got[0] != portalShareGDrive || got[1] != portalSharePasskey2 {
		t.Fatalf("fetch after replace: %q", got)
	}
	if got := portalFetch(t, n, "clx0nobody"); len(got) != 0 {
		t.Fatalf("fetch of a client without shares: %q", got)
	}

	refusals := []struct {
		name   string
		path   string
		secret string
		body   any
		status int
		code   string
	}{
		{"wrong secret (fetch)", "/webhook/backup/fetch", "wrong-webhook-secret-00000000", map[string]string{"clientId": client}, 401, "webhook_secret"},
		{"missing secret (fetch)", "/webhook/backup/fetch", "", map[string]string{"clientId": client}, 401, "webhook_secret"},
		{"wrong secret (backup)", "/webhook/backup", "wrong-webhook-secret-00000000", map[string]string{"clientId": client, "backupMethod": "GDRIVE-ED25519", "share": "hostile"}, 401, "webhook_secret"},
		{"missing secret (backup)", "/webhook/backup", "", map[string]string{"clientId": client, "backupMethod": "GDRIVE-ED25519", "share": "hostile"}, 401, "webhook_secret"},
		{"backup without clientId", "/webhook/backup", portalSecret, map[string]string{"backupMethod": "GDRIVE-ED25519", "share": "hostile"}, 400, ""},
		{"fetch without clientId", "/webhook/backup/fetch", portalSecret, map[string]string{}, 400, ""},
		{"oversized share", "/webhook/backup", portalSecret, map[string]string{"clientId": client, "backupMethod": "GDRIVE-ED25519", "share": strings.Repeat("s", 70<<10)}, 413, ""},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r := portalWebhook(t, n, tc.path, tc.secret, tc.body)
			portalWant(t, r, tc.status, tc.code)
			portalNoSecret(t, r, "0f1e2d3c4b5a6978", "99887766554433221100")
		})
	}
	if got := portalFetch(t, n, client); len(got) != 2 || got[0] != portalShareGDrive || got[1] != portalSharePasskey2 {
		t.Fatalf("the refusals changed the shares: %q", got)
	}
}

func portalIdentityCache(t *testing.T, n *portalNode, api *portalAPIStandIn, iss *firebasetest.Issuer) {
	tok := iss.Mint(firebasetest.Claims{"sub": "cache-user", "user_id": "cache-user"})
	if r := portalTBS(t, n, http.MethodPut, credD, tok, map[string]string{"encryptionKey": key3}); r.status/100 != 2 {
		t.Fatalf("write: %s", r)
	}
	for i := range 20 {
		if got := portalKey(t, portalTBS(t, n, http.MethodGet, credD, tok, nil)); got != key3 {
			t.Fatalf("read %d: %q", i, got)
		}
	}
	if c := api.callsFor(credD); c < 1 || c > 2 {
		t.Fatalf("21 requests with one credential cost %d Portal API calls", c)
	}

	// Portal answers 5xx: cached credentials keep working; an uncached one
	// gets 503 with Retry-After and no key.
	api.fail(http.StatusServiceUnavailable)
	if got := portalKey(t, portalTBS(t, n, http.MethodGet, credD, tok, nil)); got != key3 {
		t.Fatalf("cached read while Portal fails: %q", got)
	}
	r := portalTBS(t, n, http.MethodGet, credE, tok, nil)
	portalWant(t, r, http.StatusServiceUnavailable, "portal_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Fatalf("503 without Retry-After: %s", r)
	}
	portalNoSecret(t, r, key3)
	if api.callsFor(credE) != 1 {
		t.Fatalf("the uncached credential was looked up %d times", api.callsFor(credE))
	}

	// Portal unreachable: the same.
	api.srv.Close()
	if got := portalKey(t, portalTBS(t, n, http.MethodGet, credD, tok, nil)); got != key3 {
		t.Fatalf("cached read while Portal is down: %q", got)
	}
	a := &portalSDK{n: n, cred: credA, rp: portalRP, origin: portalOrigin}
	if st := a.status(t); st != "registered with credential" {
		t.Fatalf("cached passkey client while Portal is down: %q", st)
	}
	r = portalTBS(t, n, http.MethodGet, credE, tok, nil)
	portalWant(t, r, http.StatusServiceUnavailable, "portal_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Fatalf("503 without Retry-After: %s", r)
	}
	portalNoSecret(t, r, key3)
}
