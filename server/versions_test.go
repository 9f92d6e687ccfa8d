package server

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// TestAdminRestoreRefusesMalformedVersionID: the key restore route checks
// the version id's form (20 digits, as listed) before it audits or reads.
func TestAdminRestoreRefusesMalformedVersionID(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"x", "1", "0000000000000000000x", "000000000000000000001", "..", "0000000000000000000%00", "99999999999999999999"} {
		r := h.Admin("POST", "/v1/admin/users/alice/keys/PASSKEY/versions/"+url.PathEscape(id)+"/restore", nil)
		if r.Status != 400 || r.Code() != enclave.ErrBadVersionID.Code {
			t.Fatalf("restore of version %q = %d %s, want 400 %s", id, r.Status, r.Body, enclave.ErrBadVersionID.Code)
		}
	}
	if strings.Contains(h.auditLines(), `"admin_restore_version"`) {
		t.Fatal("a refused restore was audited as a restore")
	}
	// A well-formed id that names nothing is still 404.
	if r := h.Admin("POST", "/v1/admin/users/alice/keys/PASSKEY/versions/00000000000000000001/restore", nil); r.Status != 404 {
		t.Fatalf("restore of an unknown version = %d %s", r.Status, r.Body)
	}
}

// auditLines makes every audit line durable and returns them all.
func (h *harness) auditLines() string {
	h.t.Helper()
	if err := h.audit.Anchor(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(h.db.Path()), "audit", "*.jsonl"))
	var sb strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			h.t.Fatal(err)
		}
		sb.Write(b)
	}
	return sb.String()
}

// TestFirebaseDeleteNeedsRecentSignInAndKeepsPrior: with
// firebase.overwrite_max_auth_age set, a stale token cannot delete the key
// (or the delete-then-put would defeat the overwrite rule); a fresh delete
// keeps the value as a prior version that the admin can restore; the
// admin's user deletion purges it.
func TestFirebaseDeleteNeedsRecentSignInAndKeepsPrior(t *testing.T) {
	h := newHarness(t, func(c *config.Config, o *Options) { c.Firebase.OverwriteMaxAuthAge = 10 * time.Minute })
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	attacker := b64([]byte("attacker-key-attacker-key-attack"))
	owner := "firebase:proj-a//" + firebasetest.DefaultSubject
	ownerPath := "/v1/admin/firebase/users/" + url.PathEscape(owner)
	if r := h.Bearer("PUT", "/v1/firebase/key", h.issuer.Mint(nil), keyRequest{Key: key}); r.Status != 201 {
		t.Fatalf("put: %d %s", r.Status, r.Body)
	}
	h.advance(20 * time.Minute)

	// A stolen token from an old sign-in: the delete is refused, so the
	// put that would follow it is an overwrite, refused as before.
	stale := h.issuer.Mint(firebasetest.Claims{"auth_time": h.issuer.Clock().Now().Add(-20 * time.Minute).Unix()})
	if r := h.Bearer("DELETE", "/v1/firebase/key", stale, nil); r.Status != 403 || r.Code() != "reauthentication_required" {
		t.Fatalf("delete with an old sign-in: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("PUT", "/v1/firebase/key", stale, keyRequest{Key: attacker}); r.Status != 409 {
		t.Fatalf("put after the refused delete: %d %s", r.Status, r.Body)
	}
	var got KeyResponse
	h.Bearer("GET", "/v1/firebase/key", stale, nil).Decode(t, &got)
	if got.Key != key {
		t.Fatal("the key changed")
	}

	// A fresh delete: 204, nothing to release, the value kept as a prior.
	fresh := h.issuer.Mint(nil)
	if r := h.Bearer("DELETE", "/v1/firebase/key", fresh, nil); r.Status != 204 {
		t.Fatalf("delete with a fresh sign-in: %d %s", r.Status, r.Body)
	}
	if r := h.Bearer("GET", "/v1/firebase/key", fresh, nil); r.Status != 404 {
		t.Fatalf("release after delete: %d %s", r.Status, r.Body)
	}
	var vs struct {
		Versions []enclave.VersionInfo `json:"versions"`
	}
	r := h.Admin("GET", ownerPath+"/keys/FIREBASE/versions", nil)
	if r.Status != 200 {
		t.Fatalf("list versions: %d %s", r.Status, r.Body)
	}
	r.Decode(t, &vs)
	if len(vs.Versions) != 1 {
		t.Fatalf("versions after delete: %+v", vs)
	}
	if r := h.Admin("POST", ownerPath+"/keys/FIREBASE/versions/"+vs.Versions[0].ID+"/restore", nil); r.Status != 204 {
		t.Fatalf("restore: %d %s", r.Status, r.Body)
	}
	h.Bearer("GET", "/v1/firebase/key", fresh, nil).Decode(t, &got)
	if got.Key != key {
		t.Fatal("the restored key is not the original")
	}

	// The admin's user deletion purges the key and every prior version.
	if r := h.Bearer("DELETE", "/v1/firebase/key", fresh, nil); r.Status != 204 {
		t.Fatalf("second delete: %d %s", r.Status, r.Body)
	}
	if r := h.Admin("DELETE", ownerPath, nil); r.Status != 204 {
		t.Fatalf("admin user deletion: %d %s", r.Status, r.Body)
	}
	if vs, err := h.custody.ListVersions(context.Background(), enclave.Owner(owner), MethodFirebase); err != nil || len(vs) != 0 {
		t.Fatalf("versions after the admin's deletion: %v %v", vs, err)
	}
	if r := h.Bearer("GET", "/v1/firebase/key", fresh, nil); r.Status != 404 {
		t.Fatalf("release after the admin's deletion: %d %s", r.Status, r.Body)
	}
	lines := h.auditLines()
	for _, want := range []string{`"action":"admin_delete_user","outcome":"success","actor":"admin:`, `"action":"admin_restore_version"`, `"reason":"reauthentication_required"`} {
		if !strings.Contains(lines, want) {
			t.Fatalf("audit log lacks %s", want)
		}
	}
}

// TestFirebaseDeleteWithoutAgeRule: without the rule an old sign-in still
// deletes (nothing changes for deployments that did not opt in).
func TestFirebaseDeleteWithoutAgeRule(t *testing.T) {
	h := newHarness(t)
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	if r := h.Bearer("PUT", "/v1/firebase/key", h.issuer.Mint(nil), keyRequest{Key: key}); r.Status != 201 {
		t.Fatalf("put: %d %s", r.Status, r.Body)
	}
	h.advance(20 * time.Minute)
	stale := h.issuer.Mint(firebasetest.Claims{"auth_time": h.issuer.Clock().Now().Add(-20 * time.Minute).Unix()})
	if r := h.Bearer("DELETE", "/v1/firebase/key", stale, nil); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
}
