package main

// Publicly checkable proofs (decisions/30, decisions/47): the appliance
// signing key in the TPM, the in-memory batch key it certifies at start,
// and the AK's certification of the signing key served at
// GET /v1/appliance-keys.
//
// Start order: after the root key is unsealed and before the audit log
// opens (startSigningKey: load or make the key, one TPM2_Sign for the
// batch key's certificate), so every anchor of this run is signed; the
// AK's TPM2_Certify follows in wireAttestation, where the AK is loaded.
// After that the signing key is flushed: no TPM command signs anything
// until the next start (anchors and receipts are signed by the batch key).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/receipt"
	"github.com/keywarden/keywarden/server/attestapi"
	"github.com/keywarden/keywarden/store"
)

// nodeName is this node's name in anchors and receipts: rollback.node (on
// store.backend embedded, the member name); empty on a single node.
func (a *appliance) nodeName() string { return a.cfg.Rollback.Node }

// signingKeyMeta is the meta key of the node's signing key blob: the key
// lives in one TPM, so each named node of a shared store keeps its own.
func (a *appliance) signingKeyMeta() store.MetaKey {
	if n := a.nodeName(); n != "" {
		return store.MetaSigningKey.ForNode(n)
	}
	return store.MetaSigningKey
}

// readSigningKeyBlob returns the signing key blob stored under mk, or nil.
func readSigningKeyBlob(ctx context.Context, db *store.DB, mk store.MetaKey) (*attest.SigningKeyBlob, error) {
	var b []byte
	err := db.View(ctx, func(tx *store.Tx) (err error) { b, err = tx.GetMeta(mk); return })
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return attest.ParseSigningKeyBlob(b)
}

// loadSigningKey loads the stored signing key, or makes and stores a new
// one when none is stored, the stored one does not load in this TPM (a
// new TPM after `recover`), is not bound to pcrs (the PCRs the root key is
// sealed to: a key made before keys were bound to the boot state, or
// after a reseal to other PCRs) or when renew is set: verifiers trust it
// through the AK's certification, not by pinning it.
func loadSigningKey(ctx context.Context, tpm transport.TPM, db *store.DB, mk store.MetaKey, pcrs []int, renew bool) (key *attest.SigningKey, made bool, err error) {
	blob, err := readSigningKeyBlob(ctx, db, mk)
	if err != nil && !errors.Is(err, attest.ErrBadSigningKeyBlob) {
		return nil, false, err
	}
	if blob != nil && blob.BoundTo(pcrs) && !renew {
		if key, err := attest.LoadSigningKey(ctx, tpm, blob); err == nil {
			return key, false, nil
		}
	}
	if blob, err = attest.CreateSigningKey(ctx, tpm, pcrs); err != nil {
		return nil, false, err
	}
	b, err := blob.MarshalBinary()
	if err != nil {
		return nil, false, err
	}
	if err := db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(mk, b) }); err != nil {
		return nil, false, fmt.Errorf("store the signing key: %w", err)
	}
	key, err = attest.LoadSigningKey(ctx, tpm, blob)
	return key, true, err
}

// startSigningKey loads the signing key and has it certify a new batch
// key. Failing leaves the audit log with HMAC anchors only and no
// receipts (logged, and /v1/appliance-keys answers 503); it never stops
// the appliance.
func (a *appliance) startSigningKey(ctx context.Context) {
	if a.root == nil {
		return
	}
	if benchNoReceipts {
		a.signWhy = "a benchmark build without receipts (tag bench_noreceipts)"
		a.log.Warn("benchmark build: no appliance signing key, audit anchors are HMAC only and releases carry no receipt")
		return
	}
	pcrs := sealingPCRs(ctx, a.cfg, a.db)
	key, made, err := loadSigningKey(ctx, a.tpm, a.db, a.signingKeyMeta(), pcrs, false)
	if err != nil {
		a.signWhy = fmt.Sprintf("appliance signing key: %v", err)
		a.log.Error("no appliance signing key: audit anchors are HMAC only and releases carry no receipt", "err", err)
		return
	}
	bk, err := receipt.NewBatchKey(a.nodeName(), time.Now(), key)
	if errors.Is(err, attest.ErrKeyPCRsChanged) && !made {
		// Bound to PCR values of an earlier boot state (the root key was
		// resealed since): this state unsealed the root key, so it gets a
		// key of its own, certified by the AK like any new one.
		_ = key.Close()
		if key, made, err = loadSigningKey(ctx, a.tpm, a.db, a.signingKeyMeta(), pcrs, true); err != nil {
			a.signWhy = fmt.Sprintf("appliance signing key: %v", err)
			a.log.Error("no appliance signing key: audit anchors are HMAC only and releases carry no receipt", "err", err)
			return
		}
		bk, err = receipt.NewBatchKey(a.nodeName(), time.Now(), key)
	}
	a.closers = append(a.closers, func() { _ = key.Close() })
	if made {
		a.log.Warn("appliance signing key made (none was stored, it did not load in this TPM, or it was not bound to the PCRs the root key is sealed to)", "key_id", receipt.KeyID(key.PublicKey()), "pcrs", pcrs)
	}
	if len(pcrs) == 0 {
		a.log.Warn("the appliance signing key is not bound to the boot state (the root key has no PCR policy): any OS on this TPM can certify batch keys")
	}
	if err != nil {
		_ = key.Close()
		a.signWhy = fmt.Sprintf("batch key: %v", err)
		a.log.Error("cannot certify a batch key: audit anchors are HMAC only and releases carry no receipt", "err", err)
		return
	}
	a.signKey, a.batchKey = key, bk
	a.log.Info("audit anchors and release receipts are signed", "signing_key_id", receipt.KeyID(key.PublicKey()))
}

// certifySigningKey has the AK certify the signing key (one TPM2_Certify)
// and builds the /v1/appliance-keys document; it then flushes the signing
// key. It returns nil and why when there is nothing to publish.
func (a *appliance) certifySigningKey(ctx context.Context, ak *attest.AK) (*attestapi.ApplianceKeys, string) {
	if a.signKey == nil {
		if a.signWhy == "" {
			return nil, "no appliance signing key"
		}
		return nil, a.signWhy
	}
	defer func() { _ = a.signKey.Close() }()
	if ak == nil {
		return nil, "no attestation key to certify the signing key"
	}
	c, err := attest.Certify(ctx, ak, a.signKey)
	if err != nil {
		a.log.Error("the AK cannot certify the signing key: GET /v1/appliance-keys answers 503", "err", err)
		return nil, err.Error()
	}
	cert := a.batchKey.Cert()
	doc, err := attestapi.NewApplianceKeys(c, a.nodeName(), &cert, a.signKey.PCRs())
	if err != nil {
		return nil, err.Error()
	}
	return doc, ""
}
