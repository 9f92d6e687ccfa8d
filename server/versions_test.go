package server

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/enclave"
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
