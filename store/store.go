// Package store keeps Keywarden's records in one bbolt file.
//
// # Bucket tree
//
//	keywarden/                 root bucket; its key "schema" holds the schema version (uint64, big endian)
//	├── meta/                  sealed root key, attestation key blob, HPKE public key, rollback generation …
//	├── keys/                  sealed client encryption keys: owner 0x00 method → sealed record
//	├── key_versions/          prior values kept after an overwrite: owner 0x00 method 0x00 time → sealed record
//	├── users/                 per-owner index and bookkeeping: owner → JSON
//	├── credentials/           passkey credentials: credential id → JSON (v2)
//	├── custodian/             Vault Transit ciphertexts of custodian shares: owner 0x00 method → JSON (v2)
//	├── client_shares/         encrypted client shares per backup method (v2)
//	├── jobs/                  background jobs (custodian rewrap) with their progress (v2)
//	└── blocked/               Firebase subjects blocked by an operator (v2)
//
// Values are opaque to this package; callers seal what must be secret.
//
// # Durability
//
// [DB.Update] returns only after its transaction committed and bbolt
// fsynced the file. Concurrent updates are group-committed: one writer
// goroutine runs every update that arrived while the previous commit was
// in progress in a single transaction, so N concurrent writers cost one
// fsync, not N (as bbolt's Batch, without its fixed delay). A function
// passed to Update may therefore run more than once and must be
// idempotent. [DB.View] never writes and never fsyncs.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrNotFound is returned when a key is not in its bucket.
var ErrNotFound = errors.New("store: not found")

// ErrClosed is returned by operations on a closed DB.
var ErrClosed = errors.New("store: closed")

// Bucket names a top-level bucket under the versioned root.
type Bucket string

// The buckets. Each is created by the migration that introduced it.
const (
	BucketMeta         Bucket = "meta"
	BucketKeys         Bucket = "keys"
	BucketKeyVersions  Bucket = "key_versions"
	BucketUsers        Bucket = "users"
	BucketCredentials  Bucket = "credentials"
	BucketCustodian    Bucket = "custodian"
	BucketClientShares Bucket = "client_shares"
	BucketJobs         Bucket = "jobs"
	BucketBlocked      Bucket = "blocked"
)

var rootBucket = []byte("keywarden")

// Options configure [Open]. The zero value is usable.
type Options struct {
	// Timeout bounds the wait for the file lock another process holds.
	// Zero means one second. (A second keywarden on the same file fails
	// fast instead of hanging.)
	Timeout time.Duration
	// ReadOnly opens the file without writing (no migrations).
	ReadOnly bool
	// NoSync disables fsync. For benchmarks only: acknowledged writes may
	// be lost on a crash.
	NoSync bool
}

// DB is an open store.
type DB struct {
	bolt   *bolt.DB
	path   string
	writes chan *write
	done   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	mu     sync.RWMutex // held for reading by operations, for writing by Close

	commits atomic.Uint64
	updates atomic.Uint64

	ledger atomic.Pointer[Ledger] // see ledger.go
}

type write struct {
	ctx context.Context
	fn  func(*Tx) error
	err chan error
}

// Open opens (creating when missing) the store at path with mode 0600 and
// migrates it to the current schema. A truncated or corrupt file is an
// error that names the file, never a panic.
func Open(path string, opts Options) (db *DB, err error) {
	if opts.Timeout == 0 {
		opts.Timeout = time.Second
	}
	if !opts.ReadOnly {
		if err := checkNotTruncated(path); err != nil {
			return nil, err
		}
	}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("store: %s is corrupt (%v); restore it from a backup", path, r)
		}
	}()
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly, NoSync: opts.NoSync})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is locked by another process (is keywarden already running?): %w", path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w (if the file is damaged, restore it from a backup)", path, err)
	}
	db = &DB{bolt: b, path: path, writes: make(chan *write, 1024), done: make(chan struct{})}
	if !opts.ReadOnly {
		if err := migrate(b); err != nil {
			b.Close()
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
	} else if err := b.View(func(tx *bolt.Tx) error { return checkSchema(tx) }); err != nil {
		b.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	db.wg.Add(1)
	go db.writer()
	return db, nil
}

// checkNotTruncated refuses a file whose size is not a whole number of
// pages: bbolt would otherwise read past the end and crash.
func checkNotTruncated(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if fi.Size() == 0 {
		return nil
	}
	ps := int64(os.Getpagesize())
	if fi.Size() < 2*ps || fi.Size()%ps != 0 {
		return fmt.Errorf("store: %s is truncated or not a keywarden store (%d bytes); restore it from a backup", path, fi.Size())
	}
	return nil
}

// Path is the file's path.
func (db *DB) Path() string { return db.path }

// Close waits for pending updates and closes the file.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return nil
	}
	db.mu.Lock()
	close(db.done)
	db.mu.Unlock()
	db.wg.Wait()
	return db.bolt.Close()
}

// Update runs fn in a read-write transaction and returns after it is
// durable. fn may run more than once (group commit): keep it idempotent.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db.mu.RLock()
	if db.closed.Load() {
		db.mu.RUnlock()
		return ErrClosed
	}
	w := &write{ctx: ctx, fn: fn, err: make(chan error, 1)}
	select {
	case db.writes <- w:
	case <-ctx.Done():
		db.mu.RUnlock()
		return ctx.Err()
	}
	db.mu.RUnlock()
	db.updates.Add(1)
	// Once queued the write is not withdrawn: waiting for its result keeps
	// "acknowledged" and "durable" the same thing.
	return <-w.err
}

// View runs fn in a read-only transaction.
func (db *DB) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.closed.Load() {
		return ErrClosed
	}
	return db.bolt.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// writer is the group committer: it takes every queued write, runs them in
// one transaction and commits once.
func (db *DB) writer() {
	defer db.wg.Done()
	for {
		var batch []*write
		select {
		case w := <-db.writes:
			batch = append(batch, w)
		case <-db.done:
			// Drain what was queued before Close.
			for {
				select {
				case w := <-db.writes:
					db.commit([]*write{w})
				default:
					return
				}
			}
		}
	more:
		for len(batch) < 1000 {
			select {
			case w := <-db.writes:
				batch = append(batch, w)
			default:
				break more
			}
		}
		db.commit(batch)
	}
}

// commit runs batch in one transaction. When one function fails, the
// transaction is abandoned, that function's caller gets its error, and the
// rest are committed without it.
//
// With a ledger installed, its Finish runs after the batch's functions in
// the same transaction; a Finish error fails the whole batch (nothing is
// committed without what the ledger records about it).
func (db *DB) commit(batch []*write) {
	for len(batch) > 0 {
		failed := -1
		var ferr error
		var lt LedgerTx
		err := db.bolt.Update(func(btx *bolt.Tx) error {
			tx := &Tx{tx: btx}
			if l := db.ledger.Load(); l != nil {
				lt = (*l).Begin()
				tx.lt = lt
			}
			for i, w := range batch {
				if err := w.ctx.Err(); err != nil {
					failed, ferr = i, err
					return err
				}
				if err := w.fn(tx); err != nil {
					failed, ferr = i, err
					return err
				}
			}
			if lt != nil {
				return lt.Finish(tx)
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].err <- ferr
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			continue
		}
		if err == nil {
			db.commits.Add(1)
			if lt != nil {
				lt.Committed()
			}
		}
		for _, w := range batch {
			w.err <- err
		}
		return
	}
}

// Stats are counters for metrics.
type Stats struct {
	Updates uint64 // calls to Update
	Commits uint64 // transactions committed (each one fsync)
	Size    int64  // file size in bytes
}

// Stats returns the counters and the file size.
func (db *DB) Stats() Stats {
	s := Stats{Updates: db.updates.Load(), Commits: db.commits.Load()}
	_ = db.bolt.View(func(tx *bolt.Tx) error { s.Size = tx.Size(); return nil })
	return s
}

// WriteTo writes a consistent copy of the live store to w (an online
// backup: bbolt's file lock keeps other processes from copying the file).
func (db *DB) WriteTo(w io.Writer) (int64, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	var n int64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Writable reports whether a write transaction commits (for readiness). It
// writes a heartbeat into the meta bucket.
func (db *DB) Writable(ctx context.Context) error {
	return db.Update(ctx, func(tx *Tx) error {
		return tx.Put(BucketMeta, []byte("heartbeat"), []byte(time.Now().UTC().Format(time.RFC3339)))
	})
}

// Tx is a transaction. Values returned by Get are copies.
type Tx struct {
	tx *bolt.Tx
	lt LedgerTx // this write transaction's ledger observer, or nil
}

func (tx *Tx) bucket(b Bucket) (*bolt.Bucket, error) {
	root := tx.tx.Bucket(rootBucket)
	if root == nil {
		return nil, fmt.Errorf("store: root bucket missing")
	}
	bk := root.Bucket([]byte(b))
	if bk == nil {
		return nil, fmt.Errorf("store: unknown bucket %q", b)
	}
	return bk, nil
}

// Get returns a copy of the value at key, or ErrNotFound.
func (tx *Tx) Get(b Bucket, key []byte) ([]byte, error) {
	bk, err := tx.bucket(b)
	if err != nil {
		return nil, err
	}
	v := bk.Get(key)
	if v == nil {
		return nil, ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

// Put sets key to value.
func (tx *Tx) Put(b Bucket, key, value []byte) error {
	bk, err := tx.bucket(b)
	if err != nil {
		return err
	}
	return tx.put(bk, b, key, value)
}

// Delete removes key; a missing key is not an error.
func (tx *Tx) Delete(b Bucket, key []byte) error {
	bk, err := tx.bucket(b)
	if err != nil {
		return err
	}
	return tx.del(bk, b, key)
}

// ForEach calls fn for each key with the given prefix, in order. k and v
// are valid only inside fn.
func (tx *Tx) ForEach(b Bucket, prefix []byte, fn func(k, v []byte) error) error {
	bk, err := tx.bucket(b)
	if err != nil {
		return err
	}
	c := bk.Cursor()
	for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// DeletePrefix removes every key with the given prefix and returns how many.
func (tx *Tx) DeletePrefix(b Bucket, prefix []byte) (int, error) {
	bk, err := tx.bucket(b)
	if err != nil {
		return 0, err
	}
	var keys [][]byte
	c := bk.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := tx.del(bk, b, k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

func hasPrefix(k, p []byte) bool {
	return len(k) >= len(p) && string(k[:len(p)]) == string(p)
}

// Key joins parts with a 0x00 separator into a composite key. Parts must
// not contain 0x00 (callers validate identifiers before they get here).
func Key(parts ...string) []byte {
	n := 0
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, p...)
	}
	return k
}

// Prefix is Key(parts...) followed by the separator, for ForEach over
// everything below parts.
func Prefix(parts ...string) []byte { return append(Key(parts...), 0) }
