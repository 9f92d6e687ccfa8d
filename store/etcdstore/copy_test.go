package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// fillStore writes n records into most buckets: binary keys with 0x00 and
// 0xFF, empty values, values larger than one etcd page, and meta keys.
func fillStore(t *testing.T, db *store.DB, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i += 50 {
		err := db.Update(ctx, func(tx *store.Tx) error {
			for j := i; j < min(i+50, n); j++ {
				for _, b := range []store.Bucket{store.BucketKeys, store.BucketCredentials, store.BucketBlocked} {
					k := []byte(fmt.Sprintf("owner-%05d\x00m\xff", j))
					v := bytes.Repeat([]byte{byte(j)}, j%700)
					if err := tx.Put(b, k, v); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.PutMeta(store.MetaRollback, []byte(`{"g":7}`)); err != nil {
			return err
		}
		return tx.PutMeta(store.MetaSealedRoot, []byte("sealed"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func openEtcdDB(t *testing.T, c *etcddev.Cluster) *store.DB {
	t.Helper()
	db, err := store.New(c.Backend(t, etcdstore.Options{}), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openBoltDB(t *testing.T, path string, ro bool) *store.DB {
	t.Helper()
	db, err := store.Open(path, store.Options{ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestCopyBoltToEtcdAndBack: a bbolt store copied into etcd and back into
// a new bbolt file has the same records (count per bucket and digest) at
// every step; a destination that holds records is refused unless Replace,
// which clears it first; a copy that differs is caught by the summary.
func TestCopyBoltToEtcdAndBack(t *testing.T) {
	ctx := context.Background()
	c := etcddev.Embedded(t)
	dir := t.TempDir()
	src := openBoltDB(t, filepath.Join(dir, "src.db"), false)
	fillStore(t, src, 600)
	want, err := src.Summarize(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want.Total != 3*600+2 || want.Counts[store.BucketMeta] != 2 {
		t.Fatalf("source summary: %+v", want)
	}

	edb := openEtcdDB(t, c)
	rep, err := store.Copy(ctx, edb, src, store.CopyOptions{BatchRecords: 100})
	if err != nil {
		t.Fatalf("bbolt → etcd: %v", err)
	}
	if !rep.Source.Equal(want) || !rep.Destination.Equal(want) {
		t.Fatalf("bbolt → etcd: source %x destination %x, want %x", rep.Source.SHA256, rep.Destination.SHA256, want.SHA256)
	}

	back := openBoltDB(t, filepath.Join(dir, "back.db"), false)
	if _, err := store.Copy(ctx, back, edb, store.CopyOptions{}); err != nil {
		t.Fatalf("etcd → bbolt: %v", err)
	}
	got, err := back.Summarize(ctx, nil)
	if err != nil || !got.Equal(want) {
		t.Fatalf("etcd → bbolt: %+v %v", got, err)
	}

	// A destination with records: refused, untouched.
	other := openBoltDB(t, filepath.Join(dir, "other.db"), false)
	if err := other.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, []byte("stray"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Copy(ctx, other, edb, store.CopyOptions{}); !errors.Is(err, store.ErrNotEmpty) {
		t.Fatalf("copy into a store with records: %v, want ErrNotEmpty", err)
	}
	// Replace clears it: the stray record is gone, the rest equal.
	rep, err = store.Copy(ctx, other, edb, store.CopyOptions{Replace: true})
	if err != nil || rep.Cleared != 1 || !rep.Destination.Equal(want) {
		t.Fatalf("copy with Replace: cleared %d, %v", rep.Cleared, err)
	}

	// One changed byte changes the digest (the summary is the check).
	if err := back.Update(ctx, func(tx *store.Tx) error {
		return tx.Put(store.BucketKeys, []byte("owner-00007\x00m\xff"), bytes.Repeat([]byte{8}, 7))
	}); err != nil {
		t.Fatal(err)
	}
	changed, err := back.Summarize(ctx, nil)
	if err != nil || changed.Equal(want) || changed.Total != want.Total {
		t.Fatalf("a changed value did not change the summary: %v", err)
	}
}

// TestDumpAsStore: an etcd dump (Store.Snapshot) loads as a read-only
// store with the same records as the prefix it came from, copies into a
// bbolt file, and refuses writes; a damaged dump does not load.
func TestDumpAsStore(t *testing.T) {
	ctx := context.Background()
	c := etcddev.Embedded(t)
	edb := openEtcdDB(t, c)
	fillStore(t, edb, 300)
	want, err := edb.Summarize(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := edb.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	d, err := etcdstore.LoadDump(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	ddb, err := store.New(d, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("a dump does not open as a store: %v", err)
	}
	defer ddb.Close()
	got, err := ddb.Summarize(ctx, nil)
	if err != nil || !got.Equal(want) {
		t.Fatalf("dump summary %+v, want %+v (%v)", got, want, err)
	}
	if err := ddb.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, []byte("k"), nil) }); !errors.Is(err, etcdstore.ErrReadOnly) {
		t.Fatalf("write into a dump: %v", err)
	}
	bdb := openBoltDB(t, filepath.Join(t.TempDir(), "from-dump.db"), false)
	if _, err := store.Copy(ctx, bdb, ddb, store.CopyOptions{}); err != nil {
		t.Fatalf("dump → bbolt: %v", err)
	}

	damaged := bytes.Clone(buf.Bytes())
	damaged[len(damaged)/2] ^= 1
	if _, err := etcdstore.LoadDump(bytes.NewReader(damaged)); err == nil || !strings.Contains(err.Error(), "dump") {
		t.Fatalf("damaged dump: %v", err)
	}
}

// hookWriter calls hook once, at the first write it receives.
type hookWriter struct {
	buf  bytes.Buffer
	hook func()
}

func (w *hookWriter) Write(p []byte) (int, error) {
	if w.hook != nil {
		h := w.hook
		w.hook = nil
		h()
	}
	return w.buf.Write(p)
}

// TestSnapshotIsOneRevision: the backup of a node on etcd is one revision
// of the prefix even when writes commit while it streams (the node stays
// online): a transaction that rewrites the first and the last record
// between the dump's first and last page shows in neither.
func TestSnapshotIsOneRevision(t *testing.T) {
	ctx := context.Background()
	c := etcddev.Embedded(t)
	db := openEtcdDB(t, c)
	const n = 2000 // four pages of range reads
	key := func(i int) []byte { return []byte(fmt.Sprintf("k%05d", i)) }
	for i := 0; i < n; i += 100 {
		if err := db.Update(ctx, func(tx *store.Tx) error {
			for j := i; j < i+100; j++ {
				if err := tx.Put(store.BucketKeys, key(j), []byte("old")); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	w := &hookWriter{hook: func() {
		// The first bytes leave after the first page was read: commit a
		// change to the first and the last record now.
		if err := db.Update(ctx, func(tx *store.Tx) error {
			if err := tx.Put(store.BucketKeys, key(0), []byte("new")); err != nil {
				return err
			}
			return tx.Put(store.BucketKeys, key(n-1), []byte("new"))
		}); err != nil {
			t.Error(err)
		}
	}}
	if _, err := db.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	if w.hook != nil {
		t.Fatal("the snapshot wrote nothing")
	}
	d, err := etcdstore.LoadDump(bytes.NewReader(w.buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	ddb, err := store.New(d, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ddb.Close()
	err = ddb.View(ctx, func(tx *store.Tx) error {
		first, err := tx.Get(store.BucketKeys, key(0))
		if err != nil {
			return err
		}
		last, err := tx.Get(store.BucketKeys, key(n-1))
		if err != nil {
			return err
		}
		if string(first) != "old" || string(last) != "old" {
			t.Errorf("the dump mixes revisions: first %q, last %q", first, last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
