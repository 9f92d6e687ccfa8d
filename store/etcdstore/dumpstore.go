package etcdstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/keywarden/keywarden/store"
)

// ErrReadOnly is returned by the write methods of a [Dump].
var ErrReadOnly = errors.New("etcdstore: a dump is read-only")

// Dump is a dump written by [Store.Snapshot], loaded in memory and checked
// (count and checksum), served as a read-only [store.Backend]: put
// store.New(d, store.Options{ReadOnly: true}) over it to read the dump as
// a store (backup -verify), or store.Copy it into another store (recover
// into a bbolt file). It holds every record of the dump in memory.
type Dump struct {
	info    DumpInfo
	schema  []byte
	buckets map[store.Bucket][]kv // each sorted by key
}

type kv struct{ k, v []byte }

var _ store.Backend = (*Dump)(nil)

// LoadDump reads and checks a dump. A damaged or truncated dump, or one
// holding a key this package did not write, is an error.
func LoadDump(r io.Reader) (*Dump, error) {
	d := &Dump{buckets: map[store.Bucket][]kv{}}
	known := map[store.Bucket]bool{}
	info, err := ReadDump(r, func(key, value []byte) error {
		k := string(key)
		switch {
		case k == ".schema":
			d.schema = bytes.Clone(value)
		case strings.HasPrefix(k, ".buckets/"):
			b := store.Bucket(strings.TrimPrefix(k, ".buckets/"))
			if err := checkBucketName(b); err != nil {
				return fmt.Errorf("etcdstore: dump: %w", err)
			}
			known[b] = true
		case strings.HasPrefix(k, "."):
			return fmt.Errorf("etcdstore: dump: unexpected key %q", k)
		default:
			name, rec, ok := strings.Cut(k, "/")
			b := store.Bucket(name)
			if !ok || rec == "" || checkBucketName(b) != nil {
				return fmt.Errorf("etcdstore: dump: a key outside any bucket (%d bytes)", len(key))
			}
			// Keys arrive in order; within a bucket they share "<bucket>/".
			d.buckets[b] = append(d.buckets[b], kv{[]byte(rec), bytes.Clone(value)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for b := range d.buckets {
		if !known[b] {
			return nil, fmt.Errorf("etcdstore: dump: records of bucket %q, which the dump does not register", b)
		}
	}
	for b := range known {
		if _, ok := d.buckets[b]; !ok {
			d.buckets[b] = nil
		}
	}
	d.info = info
	return d, nil
}

// Info is the dump's revision and record count (every key of the prefix,
// bucket registrations and the schema version included).
func (d *Dump) Info() DumpInfo { return d.info }

// View runs fn over the dump.
func (d *Dump) View(ctx context.Context, fn func(store.BackendTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn(dumpTx{d})
}

// Update refuses: a dump is read-only.
func (d *Dump) Update(context.Context, func(store.BackendTx) error) error { return ErrReadOnly }

// Snapshot refuses: the dump file is its own copy.
func (d *Dump) Snapshot(context.Context, io.Writer) (int64, error) { return 0, ErrReadOnly }

// Close releases nothing.
func (d *Dump) Close() error { return nil }

type dumpTx struct{ d *Dump }

func (t dumpTx) bucket(b store.Bucket) ([]kv, error) {
	recs, ok := t.d.buckets[b]
	if !ok {
		return nil, fmt.Errorf("etcdstore: unknown bucket %q", b)
	}
	return recs, nil
}

func (t dumpTx) Get(b store.Bucket, key []byte) ([]byte, error) {
	recs, err := t.bucket(b)
	if err != nil {
		return nil, err
	}
	i := sort.Search(len(recs), func(i int) bool { return bytes.Compare(recs[i].k, key) >= 0 })
	if i < len(recs) && bytes.Equal(recs[i].k, key) {
		return bytes.Clone(recs[i].v), nil
	}
	return nil, store.ErrNotFound
}

func (t dumpTx) ForEach(b store.Bucket, prefix []byte, fn func(k, v []byte) error) error {
	recs, err := t.bucket(b)
	if err != nil {
		return err
	}
	i := sort.Search(len(recs), func(i int) bool { return bytes.Compare(recs[i].k, prefix) >= 0 })
	for ; i < len(recs) && bytes.HasPrefix(recs[i].k, prefix); i++ {
		if err := fn(recs[i].k, recs[i].v); err != nil {
			return err
		}
	}
	return nil
}

func (t dumpTx) SchemaVersion() (uint64, error) {
	if t.d.schema == nil {
		return 0, nil
	}
	if len(t.d.schema) != 8 {
		return 0, fmt.Errorf("etcdstore: dump: schema version of %d bytes", len(t.d.schema))
	}
	return binary.BigEndian.Uint64(t.d.schema), nil
}

func (dumpTx) Put(store.Bucket, []byte, []byte) error { return ErrReadOnly }
func (dumpTx) Delete(store.Bucket, []byte) error      { return ErrReadOnly }
func (dumpTx) CreateBucket(store.Bucket) error        { return ErrReadOnly }
func (dumpTx) SetSchemaVersion(uint64) error          { return ErrReadOnly }
