package server

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/server/httpx"
)

// ownerVersions lists the prior versions of owner's key for method over
// the general owner routes (owner URL-escaped in one segment).
func (h *harness) ownerVersions(owner, method string) []enclave.VersionInfo {
	h.t.Helper()
	r := h.Admin("GET", "/v1/admin/owners/"+url.PathEscape(owner)+"/keys/"+url.PathEscape(method)+"/versions", nil)
	if r.Status != http.StatusOK {
		h.t.Fatalf("list versions of %s: %d %s", owner, r.Status, r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		h.t.Fatal("the version list may be cached")
	}
	var vs struct {
		Versions []enclave.VersionInfo `json:"versions"`
	}
	r.Decode(h.t, &vs)
	return vs.Versions
}

func (h *harness) importKey(item map[string]any) {
	h.t.Helper()
	r := h.Admin("POST", "/v1/admin/keys/import", map[string]any{"overwrite": true, "items": []any{item}})
	if r.Status != http.StatusOK || strings.Contains(string(r.Body), `"code"`) {
		h.t.Fatalf("import: %d %s", r.Status, r.Body)
	}
}

// TestAdminOwnerRoutesFirebase: a Firebase user's overwritten key is
// listed and restored through /v1/admin/owners/{owner}, with the '/' of
// the owner escaped as %2F; the release then answers the old value.
func TestAdminOwnerRoutesFirebase(t *testing.T) {
	h := newHarness(t)
	oldKey := b64([]byte("0123456789abcdef0123456789abcdef"))
	newKey := b64([]byte("fedcba9876543210fedcba9876543210"))
	tok := h.issuer.Mint(nil)
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: oldKey}); r.Status != 201 {
		t.Fatalf("put: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: newKey}); r.Status != 200 {
		t.Fatalf("overwrite: %d %s", r.Status, r.Body)
	}
	owner := "firebase:proj-a//" + firebasetest.DefaultSubject
	esc := url.PathEscape(owner)
	if !strings.Contains(esc, "%2F") {
		t.Fatalf("escaped owner %s lacks %%2F", esc)
	}

	// Describe: the key without its value.
	r := h.Admin("GET", "/v1/admin/owners/"+esc, nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"method":"FIREBASE"`) || !strings.Contains(string(r.Body), `"owner":"`+owner+`"`) {
		t.Fatalf("describe: %d %s", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), newKey) || strings.Contains(string(r.Body), oldKey) {
		t.Fatal("the description holds a key")
	}

	vs := h.ownerVersions(owner, MethodFirebase)
	if len(vs) != 1 {
		t.Fatalf("versions: %+v", vs)
	}
	if r := h.Admin("POST", "/v1/admin/owners/"+esc+"/keys/FIREBASE/versions/"+vs[0].ID+"/restore", nil); r.Status != 204 {
		t.Fatalf("restore: %d %s", r.Status, r.Body)
	}
	var got KeyResponse
	h.Bearer("GET", "/v1/firebase/key", tok, nil).Decode(t, &got)
	if got.Key != oldKey {
		t.Fatal("the release after the restore is not the old key")
	}
	// The value the restore replaced is a prior version in turn.
	if vs := h.ownerVersions(owner, MethodFirebase); len(vs) != 2 {
		t.Fatalf("versions after the restore: %+v", vs)
	}
	if !strings.Contains(h.auditLines(), `"action":"admin_restore_version","outcome":"success","actor":"admin:`) {
		t.Fatal("the restore is not audited")
	}
}

// TestAdminOwnerRoutesUserAndPortal: user: and portal: owners go through
// the same routes; an owner holding '%' is unescaped exactly once, whether
// or not the request's path needed the raw form to route.
func TestAdminOwnerRoutesUserAndPortal(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, owner := range []string{"user:alice", "portal:client-a", "portal:50%off/x", "portal:50%off"} {
		h.importKey(map[string]any{"owner": owner, "method": "PASSKEY", "keyText": "old-" + owner})
		h.importKey(map[string]any{"owner": owner, "method": "PASSKEY", "keyText": "new-" + owner})
		vs := h.ownerVersions(owner, "PASSKEY")
		if len(vs) != 1 {
			t.Fatalf("%s: versions %+v", owner, vs)
		}
		if r := h.Admin("POST", "/v1/admin/owners/"+url.PathEscape(owner)+"/keys/PASSKEY/versions/"+vs[0].ID+"/restore", nil); r.Status != 204 {
			t.Fatalf("%s: restore: %d %s", owner, r.Status, r.Body)
		}
		key, _, err := h.custody.Lookup(ctx, enclave.Owner(owner), "PASSKEY")
		if err != nil || string(key.Reveal()) != "old-"+owner {
			t.Fatalf("%s: after the restore: %v", owner, err)
		}
	}
	// The same owner sent with only the escapes it needs (the ':' plain):
	// Go then routes on the decoded path, and the parameter must not be
	// unescaped a second time.
	for _, p := range []string{"portal:50%25off", "portal:50%25off%2Fx"} {
		r := h.Admin("GET", "/v1/admin/owners/"+p+"/keys/PASSKEY/versions", nil)
		if r.Status != 200 || strings.Count(string(r.Body), `"id"`) != 2 {
			t.Fatalf("owner sent as %s: %d %s", p, r.Status, r.Body)
		}
	}
	r := h.Admin("GET", "/v1/admin/owners/portal:nothing-here", nil)
	if r.Status != 404 {
		t.Fatalf("an owner with nothing stored: %d %s", r.Status, r.Body)
	}
}

// TestAdminOwnerRoutesRefuseBadOwners: an owner that is not of a known
// kind, malformed, or not escaped correctly is 400 invalid_owner on every
// owner route, before any audit line.
func TestAdminOwnerRoutesRefuseBadOwners(t *testing.T) {
	h := newHarness(t)
	bad := []string{
		url.PathEscape("alice"),                            // no kind
		url.PathEscape("user:"),                            // nothing after the kind
		url.PathEscape("other:x"),                          // unknown kind
		url.PathEscape("ab"),                               // too short
		url.PathEscape("user:" + strings.Repeat("a", 600)), // too long
		url.PathEscape("user:a\x00b"),                      // NUL
	}
	for _, o := range bad {
		for _, p := range []string{"", "/keys/PASSKEY/versions"} {
			r := h.Admin("GET", "/v1/admin/owners/"+o+p, nil)
			if r.Status != 400 || r.Code() != httpx.ErrInvalidOwner.Code {
				t.Fatalf("owner %q%s: %d %s", o, p, r.Status, r.Body)
			}
		}
		r := h.Admin("POST", "/v1/admin/owners/"+o+"/keys/PASSKEY/versions/00000000000000000001/restore", nil)
		if r.Status != 400 || r.Code() != httpx.ErrInvalidOwner.Code {
			t.Fatalf("restore for owner %q: %d %s", o, r.Status, r.Body)
		}
	}
	if strings.Contains(h.auditLines(), `"admin_restore_version"`) {
		t.Fatal("a refused restore was audited")
	}
	// Without the admin key: 401, as every admin route.
	if r := h.Do("GET", "/v1/admin/owners/"+url.PathEscape("user:alice"), nil); r.Status != 401 {
		t.Fatalf("without the admin key: %d", r.Status)
	}
	// A malformed version id is refused as on the other restore routes.
	if r := h.Admin("POST", "/v1/admin/owners/user%3Aalice/keys/PASSKEY/versions/x/restore", nil); r.Status != 400 || r.Code() != enclave.ErrBadVersionID.Code {
		t.Fatalf("bad version id: %d %s", r.Status, r.Body)
	}
}
