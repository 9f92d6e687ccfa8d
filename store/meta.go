package store

import (
	"context"
	"errors"
)

// MetaKey is a key of [BucketMeta], the appliance's own bookkeeping. Every
// one is declared here (drawn in the package doc), so a new one cannot
// collide with another package's; use [Tx.GetMeta], [Tx.PutMeta] and
// [Tx.DeleteMeta] (or [MetaKey.Key] for the raw bytes).
type MetaKey string

// The meta keys.
const (
	// MetaSealedRoot: the root key sealed by the TPM (enclave.SealedRoot
	// JSON: TPM public and private blobs, PCR selection). Not used on
	// store.backend embedded, where every node seals the root key to its
	// own TPM: that is node-local state (package cluster).
	MetaSealedRoot MetaKey = "sealed_root"
	// MetaRollback: the rollback record (JSON: generation, NV index, TPM
	// name, commitment to the record digest), MACed under the root subkey
	// "rollback"; rewritten by the change ledger in each write transaction.
	MetaRollback MetaKey = "rollback"
	// MetaRollbackNode is the prefix of one node's rollback record in a
	// cluster ([RollbackNodeKey]: node name, its TPM's counter target, its
	// own generation, its share of the record digest and the generations
	// it saw of the other nodes), MACed under the root subkey "rollback"
	// with the node name bound; written only by that node (and marked
	// removed, never deleted, when the node leaves).
	MetaRollbackNode MetaKey = "rollback_node"
	// MetaRollbackRange is the prefix of the record digest's range
	// entries ([RollbackRangeKey]: one per range of covered records, its
	// HMAC element and record count), which the rollback record's
	// commitment covers as a set; rewritten by the change ledger for each
	// range a write transaction changes (package enclave, ledger_ranges.go).
	MetaRollbackRange MetaKey = "rollback_range"
	// MetaRecovery: the recovery record (JSON: root id, split id,
	// threshold, the shares age-encrypted to the custodians' recipients).
	MetaRecovery MetaKey = "recovery"
	// MetaAttestAK: the TPM attestation key blob (attest.AKBlob JSON);
	// node-local state instead on store.backend embedded.
	MetaAttestAK MetaKey = "attest_ak"
	// MetaVaultClientKey: the TPM-resident Vault client key blob
	// (attest.ClientKeyBlob, binary), for vault.auth tpm-cert.
	MetaVaultClientKey MetaKey = "vault_client_key"
	// MetaSigningKey: the TPM appliance signing key blob
	// (attest.SigningKeyBlob), certified by the AK at each start.
	MetaSigningKey MetaKey = "attest_signing_key"
	// MetaAuditHead: the audit chain's recorded head (a Checkpoint JSON
	// MACed under the root subkey "audit-anchor").
	MetaAuditHead MetaKey = "audit_head"
	// MetaLastBackup: when the last online backup was taken (RFC 3339).
	MetaLastBackup MetaKey = "last_backup"
	// MetaHeartbeat: written by [DB.Writable] for readiness (RFC 3339).
	MetaHeartbeat MetaKey = "heartbeat"
	// MetaCustodianPriorsSealed: "1" once prior custodian-share versions
	// written by older builds were sealed as custodian_prior.
	MetaCustodianPriorsSealed MetaKey = "custodian_priors_sealed"
	// MetaClientSharesPriorsSealed: "1" once prior client-share versions
	// written by older builds were sealed as client_share_prior.
	MetaClientSharesPriorsSealed MetaKey = "clientshares_priors_sealed"
)

// metaKeys lists every MetaKey (the package doc draws each).
var metaKeys = []MetaKey{
	MetaSealedRoot, MetaRollback, MetaRollbackNode, MetaRollbackRange, MetaRecovery, MetaAttestAK, MetaSigningKey, MetaAuditHead,
	MetaLastBackup, MetaHeartbeat, MetaCustodianPriorsSealed, MetaClientSharesPriorsSealed,
	MetaVaultClientKey,
}

// RollbackNodeKey is the meta key of node's rollback record: the
// MetaRollbackNode prefix, 0x00, the node name.
func RollbackNodeKey(node string) MetaKey { return MetaRollbackNode + "\x00" + MetaKey(node) }

// RollbackRangeKey is the meta key of the range entry that starts at
// position start ([Pos]; empty for the first range): the MetaRollbackRange
// prefix, 0x00, start. Entries sort as their starts do.
func RollbackRangeKey(start []byte) MetaKey {
	return MetaRollbackRange + "\x00" + MetaKey(start)
}

// ForNode is k for one node of a cluster that shares the store
// (store.backend embedded): "<k>@<node>". Only what each node keeps for
// itself in the shared store uses it (the audit chain's recorded head:
// every node has its own audit log).
func (k MetaKey) ForNode(node string) MetaKey { return MetaKey(string(k) + "@" + node) }

// MetaKeys returns every meta key, in the order of their declaration.
func MetaKeys() []MetaKey { return append([]MetaKey(nil), metaKeys...) }

// Key is the key's bytes in BucketMeta.
func (k MetaKey) Key() []byte { return []byte(k) }

// GetMeta returns a copy of the value at meta key k, or ErrNotFound.
func (tx *Tx) GetMeta(k MetaKey) ([]byte, error) { return tx.Get(BucketMeta, k.Key()) }

// PutMeta sets meta key k to value.
func (tx *Tx) PutMeta(k MetaKey, value []byte) error { return tx.Put(BucketMeta, k.Key(), value) }

// DeleteMeta removes meta key k; a missing key is not an error.
func (tx *Tx) DeleteMeta(k MetaKey) error { return tx.Delete(BucketMeta, k.Key()) }

// HasMeta reports, in a read-only transaction, whether meta key k is set:
// a start-up step that has already run (a migration marker) then costs no
// write transaction.
func (db *DB) HasMeta(ctx context.Context, k MetaKey) (bool, error) {
	var set bool
	err := db.View(ctx, func(tx *Tx) error {
		_, err := tx.GetMeta(k)
		if err == nil {
			set = true
			return nil
		}
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	})
	return set, err
}

// ForEachMeta calls fn for each meta key beginning with prefix (say
// RollbackNodeKey("") for every node's rollback record), in key order. v
// is valid only inside fn.
func (tx *Tx) ForEachMeta(prefix MetaKey, fn func(k MetaKey, v []byte) error) error {
	return tx.ForEach(BucketMeta, prefix.Key(), func(k, v []byte) error { return fn(MetaKey(k), v) })
}
