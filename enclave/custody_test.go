package enclave

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/internal/apierr"
)

// badVersionIDs are ids an attacker or a typo could send to a restore:
// none is the 20-digit decimal id ListVersions gives.
var badVersionIDs = []string{
	"", "x", "1", "0000000000000000001", "000000000000000000001",
	"0000000000000000000x", "+0000000000000000001", "-0000000000000000001",
	"00000000000000000\x0001", "../../../../../../..", "０００００００００００００００００００１",
	"0000000000000000000 ", "99999999999999999999",
}

func TestRestoreVersionRefusesMalformedIDs(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(t), CustodyOptions{})
	o := UserOwner("alice")
	for _, k := range []string{"v1", "v2"} {
		if _, err := c.PutKey(ctx, o, "PASSKEY", []byte(k), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range badVersionIDs {
		err := c.RestoreVersion(ctx, o, "PASSKEY", id)
		e, ok := apierr.As(err)
		if !ok || e.Status != 400 || e.Code != ErrBadVersionID.Code {
			t.Fatalf("RestoreVersion(%q) = %v, want 400 %s", id, err, ErrBadVersionID.Code)
		}
	}
	if err := CheckVersionID("00000000000000000001"); err != nil {
		t.Fatalf("a well-formed id refused: %v", err)
	}
	k, err := c.GetKey(ctx, o, "PASSKEY")
	if err != nil || string(k.Reveal()) != "v2" {
		t.Fatalf("key after refused restores: %q %v", k.Reveal(), err)
	}
}
