package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// Bolt is the [Backend] on one bbolt file. Its layout on disk:
//
//	keywarden/          root bucket; its key "schema" holds the schema version (uint64, big endian)
//	├── meta/           one nested bucket per [Bucket], created by the migrations
//	├── keys/
//	└── …
//
// An Update is one bbolt read-write transaction, fsynced at commit (unless
// [Options.NoSync]); bbolt runs one writer at a time and readers on a
// snapshot (MVCC), which gives the isolation and linearizable reads the
// contract asks for. Snapshot is bbolt's Tx.WriteTo: a consistent copy of
// the file that is itself a bbolt file (restore: put it in place of the
// store while keywarden is stopped).
type Bolt struct {
	db   *bolt.DB
	path string
}

var rootBucket = []byte("keywarden")

var schemaKey = []byte("schema")

// OpenBolt opens (creating when missing) the bbolt file at path with mode
// 0600. It does not migrate: [Open] (or [New]) does. A truncated or
// corrupt file is an error that names the file, never a panic.
func OpenBolt(path string, opts Options) (b *Bolt, err error) {
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
			b, err = nil, corruptError(path, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly, NoSync: opts.NoSync})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is locked by another process (is keywarden already running?): %w", path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w (if the file is damaged, restore it from a backup)", path, err)
	}
	return &Bolt{db: db, path: path}, nil
}

func corruptError(path string, r any) error {
	return fmt.Errorf("store: %s is corrupt (%v); restore it from a backup", path, r)
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
func (b *Bolt) Path() string { return b.path }

// Size is the file's size in bytes.
func (b *Bolt) Size() int64 {
	var n int64
	_ = b.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// DropResident tells the kernel this process no longer needs the pages of
// the store file it has touched through bbolt's read-only mapping
// (madvise MADV_DONTNEED): they leave the process's resident set and stay
// in the page cache, from which the next read maps them again. A scan of
// every record (the rollback check) would otherwise leave the whole file
// counted as the process's memory. It runs inside a read transaction,
// which keeps bbolt from remapping the file meanwhile.
func (b *Bolt) DropResident() error {
	return b.db.View(func(tx *bolt.Tx) error {
		size := uintptr(tx.Size())
		if size == 0 {
			return nil
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, b.db.Info().Data, size, unix.MADV_DONTNEED); e != 0 {
			return fmt.Errorf("store: madvise: %w", e)
		}
		return nil
	})
}

// View implements [Backend].
func (b *Bolt) View(ctx context.Context, fn func(BackendTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// Update implements [Backend]: one bbolt transaction, fsynced at commit.
func (b *Bolt) Update(ctx context.Context, fn func(BackendTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// Snapshot implements [Backend] with bbolt's Tx.WriteTo (an online copy:
// bbolt's file lock keeps other processes from copying the file).
func (b *Bolt) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Close implements [Backend].
func (b *Bolt) Close() error { return b.db.Close() }

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(b Bucket) (*bolt.Bucket, error) {
	root := t.tx.Bucket(rootBucket)
	if root == nil {
		return nil, fmt.Errorf("store: root bucket missing")
	}
	bk := root.Bucket([]byte(b))
	if bk == nil {
		return nil, fmt.Errorf("store: unknown bucket %q", b)
	}
	return bk, nil
}

func (t boltTx) Get(b Bucket, key []byte) ([]byte, error) {
	bk, err := t.bucket(b)
	if err != nil {
		return nil, err
	}
	v := bk.Get(key)
	if v == nil {
		return nil, ErrNotFound
	}
	return append(make([]byte, 0, len(v)), v...), nil
}

func (t boltTx) Put(b Bucket, key, value []byte) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	if value == nil {
		// bbolt would keep a nil value in the open transaction's node and
		// Get would then answer "absent" until the commit.
		value = []byte{}
	}
	return bk.Put(key, value)
}

func (t boltTx) Delete(b Bucket, key []byte) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	return bk.Delete(key)
}

func (t boltTx) ForEach(b Bucket, prefix []byte, fn func(k, v []byte) error) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	c := bk.Cursor()
	for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
		if v == nil {
			continue // a nested bucket (none today)
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// ForEachFrom calls fn for each key at or after start, in byte order.
func (t boltTx) ForEachFrom(b Bucket, start []byte, fn func(k, v []byte) error) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	c := bk.Cursor()
	k, v := c.First()
	if start != nil {
		k, v = c.Seek(start)
	}
	for ; k != nil; k, v = c.Next() {
		if v == nil {
			continue
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (t boltTx) CreateBucket(b Bucket) error {
	root, err := t.tx.CreateBucketIfNotExists(rootBucket)
	if err != nil {
		return err
	}
	if _, err := root.CreateBucketIfNotExists([]byte(b)); err != nil {
		return fmt.Errorf("create bucket %s: %w", b, err)
	}
	return nil
}

func (t boltTx) SchemaVersion() (uint64, error) {
	root := t.tx.Bucket(rootBucket)
	if root == nil {
		return 0, nil
	}
	v := root.Get(schemaKey)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("schema version is %d bytes, want 8: not a keywarden store or damaged", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (t boltTx) SetSchemaVersion(v uint64) error {
	root, err := t.tx.CreateBucketIfNotExists(rootBucket)
	if err != nil {
		return err
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return root.Put(schemaKey, b[:])
}

func hasPrefix(k, p []byte) bool {
	return len(k) >= len(p) && string(k[:len(p)]) == string(p)
}
