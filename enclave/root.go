// Package enclave keeps users' keys: the root key sealed by the TPM, the
// records sealed under subkeys of it, and the release of a key to its owner.
//
// # Key hierarchy
//
//	TPM storage root key (ECC P-256, owner hierarchy, recreated at each start, never stored)
//	└── root key: 32 random bytes made at init, sealed as a TPM keyed-hash object
//	    (policy: the operator's PCRs; stored in store.MetaSealedRoot) — unsealed once
//	    at start, kept in locked memory
//	    ├── record subkeys: HKDF-SHA256(root, salt = fresh 32 bytes per record, info = "keywarden record v1")
//	    │   └── AES-256-GCM, additional data = kind ‖ owner ‖ method ‖ schema ‖ write version
//	    ├── HPKE key pair: HKDF-SHA256(root, info = "keywarden hpke appliance key v1", 64 bytes)
//	    │   → ML-KEM-768+X25519 (HPKEKey; not a Subkey)
//	    └── subkeys: HKDF-SHA256(root, info = "keywarden subkey v1: " ‖ label), 32 bytes (Subkey)
//	        ├── "session-token"                 SubkeySessionToken    HMAC key of user session tokens
//	        ├── "audit-anchor"                  SubkeyAuditAnchor     HMAC key of the audit chain's anchors and head
//	        ├── "rollback"                      SubkeyRollback        MAC key of the rollback records (single-node; cluster and per-node)
//	        ├── "rollback-ledger"               SubkeyRollbackLedger  PRF key of the record digest's elements
//	        ├── "rollback-nv-auth"              SubkeyRollbackNVAuth  auth value of the TPM NV rollback counter
//	        ├── "recovery-id"                   SubkeyRecoveryID      key of the root id (RootID) on shares and backups
//	        ├── "passkey decoy credential ids"  SubkeyPasskeyDecoy    HMAC key of decoy credential ids (package passkey)
//	        ├── "cluster-ca"                    SubkeyClusterCA       Ed25519 seed of the embedded etcd cluster's CA (package cluster)
//	        ├── "ephemeral state"               SubkeyEphemeralState  AES-GCM key of ceremonies and proofs a cluster shares
//	        └── "portal session id"             SubkeyPortalSession   HMAC key of Portal sessionIds (package portal)
//
// The labels are constants (subkeys.go); their derived values are frozen in
// testdata/vectors.json, so a changed label is a failing test.
//
// A release or a store makes no TPM command: the TPM is used at init, at
// start (one unseal), for attestation quotes and for the rollback counter.
//
// # Rollback detection
//
// A TPM NV counter that only moves forward records how far the store has
// gone, and a MACed digest of every record catches one record spliced in
// from an older copy: rollback.go (one node) and ledger.go (the digest).
// Several appliances sharing one store (RollbackOptions.Node,
// rollback_cluster.go) keep one record per node, written only by that
// node: its counter target, its share of the digest (the XOR of every
// node's share is the digest of the store), its own generation and the
// generations it saw of the others — no record is shared by writers, so
// the nodes' changes never conflict on rollback state. Every node follows
// the others: when another node's generation rises, this node too raises
// its target past its counter and increments the counter. Hence restoring
// every member from an old snapshot is refused by EVERY node that followed
// a change made after the snapshot (its counter is ahead of the target
// the snapshot restores), and restoring one node's record with the records
// it changed is refused by every node that saw that node's newer
// generation; the window is the single-node one, one
// rollback.min_interval.
package enclave

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/keywarden/keywarden/internal/secret"
)

// RootKeySize is the size of the root key in bytes.
const RootKeySize = 32

// Root is the unsealed root key. It lives in memory locked against swap
// (when the process may lock memory) and is wiped by Close.
type Root struct {
	key    []byte
	locked bool
}

// NewRootKey makes a fresh random root key (at init).
func NewRootKey() secret.Bytes {
	k := make([]byte, RootKeySize)
	_, _ = rand.Read(k)
	return secret.NewBytes(k)
}

// NewRoot takes the unsealed root key. It copies key into locked memory;
// the caller should wipe its own copy.
func NewRoot(key secret.Bytes) (*Root, error) {
	if key.Len() != RootKeySize {
		return nil, fmt.Errorf("enclave: root key is %d bytes, want %d", key.Len(), RootKeySize)
	}
	b, err := unix.Mmap(-1, 0, RootKeySize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		b = make([]byte, RootKeySize)
	}
	r := &Root{key: b}
	if err == nil && unix.Mlock(b) == nil {
		r.locked = true
		_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	}
	copy(r.key, key.Reveal())
	return r, nil
}

// Locked reports whether the key's memory is locked against swap.
func (r *Root) Locked() bool { return r.locked }

// Close wipes the key.
func (r *Root) Close() {
	clear(r.key)
}

// Subkey derives a 32-byte key for one purpose. Different labels give
// independent keys; the root key never leaves this package.
func (r *Root) Subkey(label string) secret.Bytes {
	return secret.NewBytes(r.derive(nil, "keywarden subkey v1: "+label, 32))
}

func (r *Root) derive(salt []byte, info string, n int) []byte {
	k, err := hkdf.Key(sha256.New, r.key, salt, info, n)
	if err != nil {
		panic("enclave: hkdf: " + err.Error()) // only for n > 255*32
	}
	return k
}

// errRootClosed guards use after Close.
var errRootClosed = errors.New("enclave: root key closed")
