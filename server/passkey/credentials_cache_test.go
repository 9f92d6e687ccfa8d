package passkey

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/store"
)

// TestDecodedCredentialsNeverStale: a rewritten record is read as written,
// and a caller's changes to its copy do not reach other readers.
func TestDecodedCredentialsNeverStale(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := &credential{ID: []byte{1, 2, 3}, Owner: enclave.UserOwner("alice"), RPID: "example.com", PublicKey: []byte{9, 9}, SignCount: 1}
	put := func(c *credential) {
		if err := db.Update(ctx, func(tx *store.Tx) error { return putCredential(tx, c) }); err != nil {
			t.Fatal(err)
		}
	}
	get := func() *credential {
		var got *credential
		if err := db.View(ctx, func(tx *store.Tx) (err error) { got, err = getCredential(tx, c.ID); return }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	put(c)
	first := get()
	if again := get(); again.SignCount != 1 {
		t.Fatalf("cached read: %+v", again)
	}
	first.PublicKey[0] = 0 // a caller scribbling on its copy
	c.SignCount = 7
	put(c)
	got := get()
	if got.SignCount != 7 {
		t.Fatalf("stale read after a rewrite: sign count %d, want 7", got.SignCount)
	}
	if got.PublicKey[0] != 9 {
		t.Fatal("a caller's change to its copy reached another reader")
	}
}
