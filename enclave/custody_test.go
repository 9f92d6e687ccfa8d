package enclave

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/store"
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

// TestRestoreVersionOfLegacyPrior: a prior value kept by a build from
// before prior values had their own kind (sealed as "key") is still
// restorable.
func TestRestoreVersionOfLegacyPrior(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	root := testRoot(t)
	c := NewCustody(db, root, CustodyOptions{})
	o := UserOwner("alice")
	if _, err := c.PutKey(ctx, o, "PASSKEY", []byte("current"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sealed, err := root.Seal(Binding{Kind: "key", Owner: o, Method: "PASSKEY", Version: 1}, []byte("legacy prior"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(keyRecord{Format: FormatBytes, Sealed: sealed})
	id := "00000000000000000042"
	if err := db.Update(ctx, func(tx *store.Tx) error {
		return tx.Put(store.BucketKeyVersions, store.Key(string(o), "PASSKEY", id), b)
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.RestoreVersion(ctx, o, "PASSKEY", id); err != nil {
		t.Fatal(err)
	}
	k, err := c.GetKey(ctx, o, "PASSKEY")
	if err != nil || string(k.Reveal()) != "legacy prior" {
		t.Fatalf("after restore: %q %v", k.Reveal(), err)
	}
}
