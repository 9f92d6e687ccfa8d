package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/storetest"
)

// TestBoltConformance runs the backend conformance suite against bbolt.
func TestBoltConformance(t *testing.T) {
	openAt := func(t *testing.T, path string) store.Backend {
		t.Helper()
		b, err := store.OpenBolt(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Backend {
			return openAt(t, filepath.Join(t.TempDir(), "k.db"))
		},
		Reopen: func(t *testing.T, b store.Backend) store.Backend {
			path := b.(*store.Bolt).Path()
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			return openAt(t, path)
		},
		Restore: func(t *testing.T, snap []byte) store.Backend {
			// A bbolt snapshot is a bbolt file: restoring is putting it in place.
			path := filepath.Join(t.TempDir(), "restored.db")
			if err := os.WriteFile(path, snap, 0o600); err != nil {
				t.Fatal(err)
			}
			return openAt(t, path)
		},
	})
}

// retrying is bbolt as an optimistic backend (etcd's software transactional
// memory) behaves under contention: every Update runs its function once in
// a transaction that is thrown away, as after a conflict, then again for
// real. The suite and the façade must hold on such a backend too.
type retrying struct{ *store.Bolt }

var errConflict = errors.New("simulated conflict")

func (r retrying) Update(ctx context.Context, fn func(store.BackendTx) error) error {
	err := r.Bolt.Update(ctx, func(tx store.BackendTx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errConflict
	})
	if !errors.Is(err, errConflict) {
		return err
	}
	return r.Bolt.Update(ctx, fn)
}

func TestRetryingBackendConformance(t *testing.T) {
	open := func(t *testing.T, path string) store.Backend {
		b, err := store.OpenBolt(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return retrying{b}
	}
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Backend { return open(t, filepath.Join(t.TempDir(), "k.db")) },
		Reopen: func(t *testing.T, b store.Backend) store.Backend {
			b.Close()
			return open(t, b.(retrying).Path())
		},
		Restore: func(t *testing.T, snap []byte) store.Backend {
			path := filepath.Join(t.TempDir(), "restored.db")
			if err := os.WriteFile(path, snap, 0o600); err != nil {
				t.Fatal(err)
			}
			return open(t, path)
		},
	})
}

// countLedger counts what the ledger is told.
type countLedger struct {
	mu                        sync.Mutex
	begins, changes, finishes int
	committed                 int
	lastChanges               int
}

func (l *countLedger) Begin() store.LedgerTx {
	l.mu.Lock()
	l.begins++
	l.mu.Unlock()
	return &countTx{l: l}
}

type countTx struct {
	l *countLedger
	n int
}

func (c *countTx) Change(b store.Bucket, key, old, new []byte) { c.n++ }
func (c *countTx) Finish(tx *store.Tx) error {
	c.l.mu.Lock()
	c.l.finishes++
	c.l.mu.Unlock()
	return nil
}
func (c *countTx) Committed() {
	c.l.mu.Lock()
	c.l.committed++
	c.l.lastChanges = c.n
	c.l.mu.Unlock()
}

// TestGroupCommitOverRetryingBackend: when the backend reruns a batch, the
// ledger begins again and only the run that commits is reported, with each
// change once.
func TestGroupCommitOverRetryingBackend(t *testing.T) {
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.New(retrying{b}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := &countLedger{}
	db.SetLedger(l)
	err = db.Update(context.Background(), func(tx *store.Tx) error {
		for i := range 3 {
			if err := tx.Put(store.BucketKeys, store.Key("o", fmt.Sprint(i)), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if l.begins != 2 || l.finishes != 2 || l.committed != 1 || l.lastChanges != 3 {
		t.Fatalf("ledger: %d begins, %d finishes, %d commits, %d changes in the committed run; want 2, 2, 1, 3", l.begins, l.finishes, l.committed, l.lastChanges)
	}
}
