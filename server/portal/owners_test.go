package portal

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/passkey"
)

type versionList[T any] struct {
	Versions []T `json:"versions"`
}

// adminVersions lists over /v1/admin/owners/{owner}/{kind}/{method}/versions.
func adminVersions[T any](h *harness, owner, kind, method string) []T {
	h.t.Helper()
	r := h.Admin(http.MethodGet, "/v1/admin/owners/"+url.PathEscape(owner)+"/"+kind+"/"+url.PathEscape(method)+"/versions", nil)
	mustStatus(h.t, r, http.StatusOK, "")
	var vs versionList[T]
	r.Decode(h.t, &vs)
	return vs.Versions
}

func (h *harness) adminRestore(owner, kind, method, id string) {
	h.t.Helper()
	r := h.Admin(http.MethodPost, "/v1/admin/owners/"+url.PathEscape(owner)+"/"+kind+"/"+url.PathEscape(method)+"/versions/"+id+"/restore", nil)
	if r.Status != http.StatusNoContent {
		h.t.Fatalf("restore %s %s %s: %d %s", owner, kind, method, r.Status, r.Body)
	}
}

// TestPortalPriorVersionsRestorable: what Portal's SDK overwrites keeps a
// prior version the admin can list and restore through the general owner
// routes: the TBS key (owner firebase:<project>/<tenant>/<uid>), the
// passkey key of a client (portal:<clientId>) and the custodian shares
// Portal's webhooks keep (portal:<clientId>, on a real Vault). After each
// restore the SDK's own read answers the old value.
func TestPortalPriorVersionsRestorable(t *testing.T) {
	h := newHarness(t, harnessOptions{vault: true, custodianAPI: true})
	h.clients()

	// TBS: store twice, restore, the SDK's read answers the first key.
	tok := h.issuer.Mint(nil)
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	mustStatus(t, h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex2}), http.StatusOK, "")
	fbOwner := "firebase:" + testProject + "//" + firebasetest.DefaultSubject
	vs := adminVersions[enclave.VersionInfo](h, fbOwner, "keys", server.MethodFirebase)
	if len(vs) != 1 {
		t.Fatalf("TBS versions: %+v", vs)
	}
	h.adminRestore(fbOwner, "keys", server.MethodFirebase, vs[0].ID)
	r := h.tbs(http.MethodGet, credA, tok, nil)
	mustStatus(t, r, http.StatusOK, "")
	var k EncryptKeyResponse
	r.DecodeStrict(t, &k)
	if k.EncryptionKey != keyHex1 {
		t.Fatalf("TBS read after the restore: %q", k.EncryptionKey)
	}

	// Passkeys: registration stores, finish-login/write replaces.
	h.register(credA, h.auth, keyHex1)
	opts, sid := h.beginLogin(credA)
	mustStatus(t, h.loginWrite(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}), keyHex2), http.StatusOK, "")
	pOwner := string(ClientOwner("client-a"))
	vs = adminVersions[enclave.VersionInfo](h, pOwner, "keys", passkey.Method)
	if len(vs) != 1 {
		t.Fatalf("passkey versions: %+v", vs)
	}
	h.adminRestore(pOwner, "keys", passkey.Method, vs[0].ID)
	opts, sid = h.beginLogin(credA)
	if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex1 {
		t.Fatalf("passkey read after the restore: %q", got)
	}

	// Custodian shares from Portal's webhook.
	const method = "PASSKEY-SECP256K1"
	mustStatus(t, h.webhook("/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": method, "share": sharePasskey}), http.StatusNoContent, "")
	mustStatus(t, h.webhook("/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": method, "share": sharePasskey2}), http.StatusNoContent, "")
	cvs := adminVersions[custodian.VersionInfo](h, pOwner, "custodian-shares", method)
	if len(cvs) != 1 {
		t.Fatalf("custodian share versions: %+v", cvs)
	}
	h.adminRestore(pOwner, "custodian-shares", method, cvs[0].ID)
	if got := h.fetch(testSecret, "client-a"); len(got) != 1 || got[0] != sharePasskey {
		t.Fatalf("webhook fetch after the restore: %q", got)
	}

	// The description of the Portal client: its key and shares, no secret.
	r = h.Admin(http.MethodGet, "/v1/admin/owners/"+url.PathEscape(pOwner), nil)
	mustStatus(t, r, http.StatusOK, "")
	if !strings.Contains(string(r.Body), `"method":"`+passkey.Method+`"`) || !strings.Contains(string(r.Body), `"custodianShares":[{"method":"`+method+`"`) {
		t.Fatalf("describe: %s", r.Body)
	}
	noSecret(t, r, keyHex1, keyHex2, sharePasskey, sharePasskey2, "passkey-share-000")
}
