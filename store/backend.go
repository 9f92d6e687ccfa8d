package store

import (
	"context"
	"io"
)

// Backend is the storage engine under [DB]: a set of named buckets of
// ordered byte keys, with atomic durable transactions and a consistent
// online copy. [DB] adds everything else on top of it (the schema and its
// migrations, group commit, the change ledger, the key helpers), so a
// backend is small and every backend gets the same behaviour. [Bolt] is
// the implementation of today; a cluster backend (etcd: one key space,
// each bucket a key prefix) implements the same interface. The conformance
// suite in package store/storetest is the executable form of this
// contract: a backend must pass it.
//
// # Contract
//
// Keys and values are arbitrary bytes (keys non-empty; a value may be
// empty). Bucket names are lower-case ASCII letters, digits and '_'.
// Values are opaque: callers seal what must be secret before it gets
// here, so a backend stores, replicates and snapshots only ciphertext and
// identifiers.
//
//   - Update runs fn in one read-write transaction that is atomic (all of
//     fn's writes or none) and durable when Update returns nil (bbolt:
//     fsynced; a cluster: committed by a quorum). When fn returns an error
//     nothing of it is applied and Update returns that error unchanged.
//     fn may run more than once (a backend may retry on a conflict; the
//     group commit of [DB] reruns the functions of a batch when one of
//     them fails), so it must be idempotent and keep no state outside the
//     transaction across runs. Transactions are serializable: concurrent
//     read-modify-write Updates lose nothing and apply nothing twice.
//   - Inside a transaction reads see its own writes (Get, ForEach, after
//     Put and Delete).
//   - View runs fn in a read-only transaction over one consistent state:
//     it never sees part of an Update. Reads are linearizable: a View
//     that begins after an Update returned sees that Update (on a cluster,
//     on every node). Keywarden's security state (deletions, operator
//     blocks, one-time ceremonies and tokens, failure counters, the
//     rollback generation) depends on it: a stale read would release a
//     deleted key or accept a token twice.
//   - Get returns a copy of the value (valid after the transaction ends),
//     or an error wrapping [ErrNotFound] when the key is absent. An empty
//     value is a present key with a zero-length value.
//   - ForEach calls fn for every key of the bucket that starts with prefix
//     (nil: every key), in byte-wise ascending order of the keys, and
//     never for a key of another bucket. k and v are valid only inside
//     fn; fn must not write to the bucket it iterates. An error from fn
//     stops the iteration and is returned.
//   - Delete of an absent key is not an error.
//   - Using a bucket no migration created is an error (not ErrNotFound).
//   - Snapshot writes a consistent copy of the whole store (as of one
//     transaction) to w while the store stays online, and returns the
//     number of bytes written. Restoring it (by the backend's own means)
//     gives a store equal to the state it copied.
//   - Close releases the backend; transactions that began before it
//     finish first.
//
// The schema methods of [BackendTx] (CreateBucket, SchemaVersion,
// SetSchemaVersion) are called only by [DB]'s migrations, which run at
// open, one Update per step; see the package doc for the schema.
type Backend interface {
	View(ctx context.Context, fn func(BackendTx) error) error
	Update(ctx context.Context, fn func(BackendTx) error) error
	Snapshot(ctx context.Context, w io.Writer) (int64, error)
	Close() error
}

// BackendTx is a transaction of a [Backend]. See [Backend] for the
// contract of each method.
type BackendTx interface {
	// Get returns a copy of the value at key in bucket b, or ErrNotFound.
	Get(b Bucket, key []byte) ([]byte, error)
	// Put sets key to value (nil is stored as an empty value).
	Put(b Bucket, key, value []byte) error
	// Delete removes key; an absent key is not an error.
	Delete(b Bucket, key []byte) error
	// ForEach calls fn for each key with the given prefix, in byte order.
	ForEach(b Bucket, prefix []byte, fn func(k, v []byte) error) error

	// CreateBucket makes bucket b usable (idempotent). A backend with one
	// flat key space records that b exists; bbolt creates a bucket.
	CreateBucket(b Bucket) error
	// SchemaVersion is the stored schema version; 0 for an empty store.
	SchemaVersion() (uint64, error)
	// SetSchemaVersion records the schema version.
	SetSchemaVersion(v uint64) error
}
