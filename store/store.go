package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotFound is returned when a key is not in its bucket.
var ErrNotFound = errors.New("store: not found")

// ErrUnavailable is wrapped by a backend's errors when the store cannot
// be read or written now (a cluster backend without a quorum or without a
// reachable member; a transaction past its deadline): retrying later may
// succeed. The server answers 503 store_unavailable for it.
var ErrUnavailable = errors.New("store: unavailable")

// ErrClosed is returned by operations on a closed DB.
var ErrClosed = errors.New("store: closed")

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
	// CommitTimeout bounds one group-committed transaction (all its
	// attempts): a backend that lost its quorum fails the batch instead of
	// holding every writer queued behind it. Zero means 30 seconds.
	CommitTimeout time.Duration
}

// DB is an open store.
type DB struct {
	b      Backend
	path   string
	writes chan *write
	done   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	mu     sync.RWMutex // held for reading by operations, for writing by Close

	commits atomic.Uint64
	updates atomic.Uint64

	ledger atomic.Pointer[Ledger]    // see ledger.go
	guard  atomic.Pointer[ReadGuard] // see ledger.go

	commitTimeout time.Duration // bounds one batch's transaction
}

type write struct {
	ctx   context.Context
	fn    func(*Tx) error
	err   chan error
	state atomic.Int32 // writeQueued, then writeTaken (by the writer) or writeWithdrawn (by its caller)
}

// The states of a queued write: the writer takes it into a batch, or its
// caller, whose context ended first, withdraws it; never both.
const (
	writeQueued int32 = iota
	writeTaken
	writeWithdrawn
)

// Open opens (creating when missing) the bbolt store at path with mode
// 0600 ([OpenBolt]) and migrates it to the current schema. A truncated or
// corrupt file is an error that names the file, never a panic.
func Open(path string, opts Options) (db *DB, err error) {
	b, err := OpenBolt(path, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, corruptError(path, r)
		}
	}()
	db, err = New(b, opts)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	return db, nil
}

// New puts the façade over an open backend, which it then owns (Close
// closes it): it migrates the backend to the current schema, or with
// opts.ReadOnly checks that it is at it; the other options are bbolt's.
func New(b Backend, opts Options) (*DB, error) {
	ctx := context.Background()
	if !opts.ReadOnly {
		if err := migrate(ctx, b); err != nil {
			return nil, err
		}
	} else if err := checkSchema(ctx, b); err != nil {
		return nil, err
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = 30 * time.Second
	}
	db := &DB{b: b, writes: make(chan *write, 1024), done: make(chan struct{}), commitTimeout: opts.CommitTimeout}
	if p, ok := b.(interface{ Path() string }); ok {
		db.path = p.Path()
	}
	db.wg.Add(1)
	go db.writer()
	return db, nil
}

// Backend is the backend under the façade (for what only one backend
// offers: etcd's cluster status and maintenance snapshot). Write through
// the façade, never through it.
func (db *DB) Backend() Backend { return db.b }

// Path is the file's path ("" for a backend that is not a file).
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
	return db.b.Close()
}

// Update runs fn in a read-write transaction and returns after it is
// durable. fn may run more than once (group commit): keep it idempotent.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if rs := ReadSessionFrom(ctx); rs != nil {
		// The request's next View reads what this Update wrote (or
		// whatever a failed one may still have committed).
		defer rs.end()
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
	select {
	case err := <-w.err:
		return err
	case <-ctx.Done():
	}
	// The caller's context ended. A write the writer has not taken yet is
	// withdrawn: it never runs, so the caller's error is the truth (a
	// backend stalled without quorum must not hold callers past their own
	// deadline behind writes queued before them); the store did not take
	// the write in time, so it answers as unavailable. A write already
	// taken is in a transaction that may still commit (a backend without
	// quorum holds it for the commit timeout): the caller is not held past
	// its deadline for it either, and hears that the store did not confirm
	// the write, which may still land. Only a nil error acknowledges a
	// write, so "acknowledged" and "durable" stay the same thing.
	if w.state.CompareAndSwap(writeQueued, writeWithdrawn) {
		return fmt.Errorf("%w: the write waited in the queue past its caller's deadline: %w", ErrUnavailable, ctx.Err())
	}
	select {
	case err := <-w.err:
		return err
	default:
		return fmt.Errorf("%w: the store did not confirm the write by its caller's deadline (it may still commit): %w", ErrUnavailable, ctx.Err())
	}
}

// View runs fn in a read-only transaction.
func (db *DB) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.closed.Load() {
		return ErrClosed
	}
	return db.b.View(ctx, func(btx BackendTx) error { return fn(&Tx{tx: btx, g: db.readGuard()}) })
}

// writer is the group committer: it takes every queued write, runs them in
// one transaction and commits once.
func (db *DB) writer() {
	defer db.wg.Done()
	for {
		var batch []*write
		select {
		case w := <-db.writes:
			if w.state.CompareAndSwap(writeQueued, writeTaken) {
				batch = append(batch, w)
			}
		case <-db.done:
			// Drain what was queued before Close.
			for {
				select {
				case w := <-db.writes:
					if w.state.CompareAndSwap(writeQueued, writeTaken) {
						db.commit([]*write{w})
					}
				default:
					return
				}
			}
		}
	more:
		for len(batch) < 1000 {
			select {
			case w := <-db.writes:
				if w.state.CompareAndSwap(writeQueued, writeTaken) {
					batch = append(batch, w)
				}
			default:
				break more
			}
		}
		if len(batch) > 0 {
			db.commit(batch)
		}
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
		ctx, cancel := context.WithTimeout(context.Background(), db.commitTimeout)
		err := db.b.Update(ctx, func(btx BackendTx) error {
			failed, ferr, lt = -1, nil, nil
			tx := &Tx{tx: btx, g: db.readGuard()}
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
		cancel()
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
	Size    int64  // file size in bytes (0 when the backend has none)
}

// Stats returns the counters and the file size.
func (db *DB) Stats() Stats {
	s := Stats{Updates: db.updates.Load(), Commits: db.commits.Load()}
	if sz, ok := db.b.(interface{ Size() int64 }); ok {
		s.Size = sz.Size()
	}
	return s
}

// WriteTo writes a consistent copy of the live store to w (an online
// backup; [Backend.Snapshot]).
func (db *DB) WriteTo(w io.Writer) (int64, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	return db.b.Snapshot(context.Background(), w)
}

// Writable reports whether a write transaction commits (for readiness). It
// writes a heartbeat into the meta bucket. It returns when ctx ends even
// if the commit is still under way (a backend that lost its quorum may
// hold one attempt for its own timeout): the heartbeat then commits or
// fails in the background, and the answer is an error wrapping
// [ErrUnavailable]. A load balancer's probe never waits longer than its
// deadline.
func (db *DB) Writable(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		done <- db.Update(ctx, func(tx *Tx) error {
			return tx.PutMeta(MetaHeartbeat, []byte(time.Now().UTC().Format(time.RFC3339)))
		})
	}()
	select {
	case err := <-done:
		if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: the heartbeat did not commit in time: %w", ErrUnavailable, ctx.Err())
	}
}

// Tx is a transaction. Values returned by Get are copies.
type Tx struct {
	tx BackendTx
	lt LedgerTx  // this write transaction's ledger observer, or nil
	g  ReadGuard // checks covered records before they are read, or nil
}

// Get returns a copy of the value at key, or ErrNotFound.
func (tx *Tx) Get(b Bucket, key []byte) ([]byte, error) {
	if tx.g != nil && Covered(b) {
		if err := tx.g.CheckRead(tx, b, key, false); err != nil {
			return nil, err
		}
	}
	return tx.tx.Get(b, key)
}

// Put sets key to value.
func (tx *Tx) Put(b Bucket, key, value []byte) error {
	return tx.put(b, key, value)
}

// Delete removes key; a missing key is not an error.
func (tx *Tx) Delete(b Bucket, key []byte) error {
	return tx.del(b, key)
}

// ForEach calls fn for each key with the given prefix, in order. k and v
// are valid only inside fn.
func (tx *Tx) ForEach(b Bucket, prefix []byte, fn func(k, v []byte) error) error {
	if tx.g != nil && Covered(b) {
		if err := tx.g.CheckRead(tx, b, prefix, true); err != nil {
			return err
		}
	}
	return tx.tx.ForEach(b, prefix, fn)
}

// DeletePrefix removes every key with the given prefix and returns how many.
func (tx *Tx) DeletePrefix(b Bucket, prefix []byte) (int, error) {
	if tx.g != nil && Covered(b) {
		if err := tx.g.CheckRead(tx, b, prefix, true); err != nil {
			return 0, err
		}
	}
	var keys [][]byte
	err := tx.tx.ForEach(b, prefix, func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := tx.del(b, k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
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
