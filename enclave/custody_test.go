package enclave

import (
	"context"
	"encoding/json"
	"errors"
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

// TestClientIsolationRule: with the rule on, a key stored by client A is
// released, replaced and deleted only for A; a caller without a client id
// (the native routes) and client B get ErrClientMismatch; the owner
// "portal:<id>" names its client; a delete keeps the client id with the
// prior, so the restored key stays A's. With the rule off nothing changes.
func TestClientIsolationRule(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(t), CustodyOptions{})
	o := Owner("firebase:p//u1")
	if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("a's key"), PutOptions{ClientID: "client-a", Format: FormatText}); err != nil {
		t.Fatal(err)
	}
	// Off: everyone, as before.
	if _, _, err := c.LookupAs(ctx, o, "FIREBASE", Access{}); err != nil {
		t.Fatalf("rule off, native lookup: %v", err)
	}
	c.SetClientIsolation(true)
	for _, acc := range []Access{{}, {ClientID: "client-b"}} {
		if _, _, err := c.LookupAs(ctx, o, "FIREBASE", acc); !errors.Is(err, ErrClientMismatch) {
			t.Fatalf("lookup as %+v: %v", acc, err)
		}
		if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("x"), PutOptions{ClientID: acc.ClientID}); !errors.Is(err, ErrClientMismatch) {
			t.Fatalf("put as %+v: %v", acc, err)
		}
		if err := c.DeleteKeyKeepingPrior(ctx, o, "FIREBASE", acc); !errors.Is(err, ErrClientMismatch) {
			t.Fatalf("delete as %+v: %v", acc, err)
		}
	}
	if _, _, err := c.Lookup(ctx, o, "FIREBASE"); !errors.Is(err, ErrClientMismatch) {
		t.Fatalf("plain Lookup (no client id): %v", err)
	}
	if k, _, err := c.LookupAs(ctx, o, "FIREBASE", Access{ClientID: "client-a"}); err != nil || string(k.Reveal()) != "a's key" {
		t.Fatalf("lookup as client-a: %v", err)
	}
	// A Portal client's own owner names the client.
	po := Owner("portal:client-a")
	if _, err := c.PutKey(ctx, po, "PASSKEY", []byte("pk"), PutOptions{ClientID: "client-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKey(ctx, po, "PASSKEY"); err != nil {
		t.Fatalf("portal owner lookup: %v", err)
	}
	// Delete as A, restore (the admin): A's again, still refused to others.
	if err := c.DeleteKeyKeepingPrior(ctx, o, "FIREBASE", Access{ClientID: "client-a"}); err != nil {
		t.Fatal(err)
	}
	vs, err := c.ListVersions(ctx, o, "FIREBASE")
	if err != nil || len(vs) != 1 {
		t.Fatalf("versions after delete: %v %v", vs, err)
	}
	if err := c.RestoreVersion(ctx, o, "FIREBASE", vs[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.LookupAs(ctx, o, "FIREBASE", Access{}); !errors.Is(err, ErrClientMismatch) {
		t.Fatalf("restored key open to the native routes: %v", err)
	}
	if info, err := c.Info(ctx, o, "FIREBASE"); err != nil || info.ClientID != "client-a" {
		t.Fatalf("restored key info %+v %v", info, err)
	}
}
