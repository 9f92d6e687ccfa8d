package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
)

// The appliance signing key follows the root key's sealing PCRs at start:
// a stored key made before the binding is replaced by a bound one, a bound
// key is kept across starts, and a key bound to the values of an earlier
// boot state (the root key resealed since) is replaced rather than leaving
// the appliance without receipts.
func TestSigningKeyBoundToSealingPCRsAtStart(t *testing.T) {
	ctx := context.Background()
	tpm := openSwtpmCounting(t)
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cfg := config.Defaults()
	cfg.TPM.PCRs = []int{7} // no sealed root in this store: tpm.pcrs is the selection
	start := func() *appliance {
		t.Helper()
		a := &appliance{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tpm: tpm, db: db, root: root}
		a.startSigningKey(ctx)
		t.Cleanup(a.Close)
		if a.batchKey == nil {
			t.Fatalf("no batch key: %s", a.signWhy)
		}
		return a
	}
	stored := func() *attest.SigningKeyBlob {
		t.Helper()
		b, err := readSigningKeyBlob(ctx, db, store.MetaSigningKey)
		if err != nil || b == nil {
			t.Fatalf("stored signing key: %v", err)
		}
		return b
	}

	// A key from before the binding.
	legacy, err := attest.CreateSigningKey(ctx, tpm, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := legacy.MarshalBinary()
	if err := db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(store.MetaSigningKey, lb) }); err != nil {
		t.Fatal(err)
	}
	a := start()
	first := stored()
	if !first.BoundTo([]int{7}) || bytes.Equal(a.signKey.TPMPublic(), legacy.Public) {
		t.Fatalf("the unbound stored key was kept (PCRs %v)", first.PCRs)
	}
	a.Close()

	// Kept across a restart in the same boot state.
	a = start()
	if !bytes.Equal(a.signKey.TPMPublic(), first.Public) {
		t.Fatal("a bound key was replaced in its own boot state")
	}
	a.Close()

	// The boot state moved (and the root key was resealed to it): the old
	// key no longer signs, the appliance makes a new bound one.
	d := sha256.Sum256([]byte("a new boot chain"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(7), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(tpm); err != nil {
		t.Fatal(err)
	}
	a = start()
	if bytes.Equal(a.signKey.TPMPublic(), first.Public) || !stored().BoundTo([]int{7}) {
		t.Fatal("the key of the earlier boot state was kept")
	}
}
