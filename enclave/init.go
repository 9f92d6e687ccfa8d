package enclave

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// ErrNotInitialized means the store has no sealed root key: run `keywarden init`.
var ErrNotInitialized = errors.New("enclave: the store has no root key: run `keywarden init` first")

// ErrAlreadyInitialized means init was run on an initialized store.
var ErrAlreadyInitialized = errors.New("enclave: the store already has a root key; refusing to replace it (every stored key would be lost)")

// InitOptions configure Initialize.
type InitOptions struct {
	// PCRs the root key is sealed to (SHA-256 bank). Empty: no PCR policy;
	// the key is bound to this TPM only. Binding firmware PCRs locks the
	// appliance out after a firmware update unless it is resealed first.
	PCRs []int
}

// Initialize makes a new root key, seals it to tpm and records the sealed
// blob in db. It returns the unsealed root and the raw key (for the
// recovery split; the caller wipes it).
func Initialize(ctx context.Context, tpm transport.TPM, db *store.DB, opts InitOptions) (*Root, secret.Bytes, error) {
	if _, err := LoadSealedRoot(ctx, db); err == nil {
		return nil, secret.Bytes{}, ErrAlreadyInitialized
	} else if !errors.Is(err, ErrNotInitialized) {
		return nil, secret.Bytes{}, err
	}
	key := NewRootKey()
	if err := StoreRootKey(ctx, tpm, db, key, opts.PCRs); err != nil {
		key.Wipe()
		return nil, secret.Bytes{}, err
	}
	root, err := NewRoot(key)
	return root, key, err
}

// StoreRootKey seals key to tpm with pcrs and records it, replacing any
// sealed blob (reseal and recovery use it).
func StoreRootKey(ctx context.Context, tpm transport.TPM, db *store.DB, key secret.Bytes, pcrs []int) error {
	sealed, err := SealRoot(ctx, tpm, key, pcrs)
	if err != nil {
		return err
	}
	b, err := sealed.Marshal()
	if err != nil {
		return err
	}
	return db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(store.MetaSealedRoot, b) })
}

// LoadSealedRoot reads the sealed root key record.
func LoadSealedRoot(ctx context.Context, db *store.DB) (*SealedRoot, error) {
	var b []byte
	err := db.View(ctx, func(tx *store.Tx) (err error) { b, err = tx.GetMeta(store.MetaSealedRoot); return })
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, err
	}
	return UnmarshalSealedRoot(b)
}

// Unseal loads the sealed root key from db and unseals it with tpm (once,
// at start).
func Unseal(ctx context.Context, tpm transport.TPM, db *store.DB) (*Root, error) {
	sealed, err := LoadSealedRoot(ctx, db)
	if err != nil {
		return nil, err
	}
	key, err := UnsealRoot(ctx, tpm, sealed)
	if err != nil {
		return nil, err
	}
	defer key.Wipe()
	root, err := NewRoot(key)
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	return root, nil
}
