package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// recLedger records what it is told, per transaction, and writes the
// number of changes it saw into meta in Finish.
type recLedger struct {
	mu        sync.Mutex
	committed []string
	finishErr error
}

type recTx struct {
	l       *recLedger
	changes []string
}

func (l *recLedger) Begin() LedgerTx { return &recTx{l: l} }

func (t *recTx) Change(b Bucket, key, old, new []byte) {
	t.changes = append(t.changes, fmt.Sprintf("%s/%s:%s>%s", b, key, old, new))
}

func (t *recTx) Finish(tx *Tx) error {
	if t.l.finishErr != nil {
		return t.l.finishErr
	}
	return tx.Put(BucketMeta, []byte("ledger"), []byte(strings.Join(t.changes, ",")))
}

func (t *recTx) Committed() {
	t.l.mu.Lock()
	t.l.committed = append(t.l.committed, t.changes...)
	t.l.mu.Unlock()
}

func (l *recLedger) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.Join(l.committed, ",")
	l.committed = nil
	return s
}

// TestLedgerSeesEveryCoveredChange: Put, Delete and DeletePrefix on covered
// buckets are reported with old and new values, meta and identical
// rewrites are not, Finish writes in the same transaction, a failed
// function's changes are not reported, and a Finish error fails the batch.
func TestLedgerSeesEveryCoveredChange(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	l := &recLedger{}
	db.SetLedger(l)
	up := func(fn func(*Tx) error) error { return db.Update(ctx, fn) }

	if err := up(func(tx *Tx) error {
		if err := tx.Put(BucketKeys, []byte("a"), []byte("1")); err != nil {
			return err
		}
		if err := tx.Put(BucketMeta, []byte("x"), []byte("y")); err != nil {
			return err
		}
		return tx.Put(BucketCredentials, []byte("c"), []byte("9"))
	}); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); got != "keys/a:>1,credentials/c:>9" {
		t.Fatalf("puts: %q", got)
	}
	var inMeta []byte
	_ = db.View(ctx, func(tx *Tx) (err error) { inMeta, err = tx.Get(BucketMeta, []byte("ledger")); return })
	if string(inMeta) != "keys/a:>1,credentials/c:>9" {
		t.Fatalf("Finish's write: %q", inMeta)
	}
	if err := up(func(tx *Tx) error {
		if err := tx.Put(BucketKeys, []byte("a"), []byte("1")); err != nil { // identical
			return err
		}
		if err := tx.Put(BucketKeys, []byte("a"), []byte("2")); err != nil {
			return err
		}
		if err := tx.Delete(BucketKeys, []byte("missing")); err != nil {
			return err
		}
		return tx.Delete(BucketCredentials, []byte("c"))
	}); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); got != "keys/a:1>2,credentials/c:9>" {
		t.Fatalf("overwrite and delete: %q", got)
	}
	if err := up(func(tx *Tx) error {
		for _, k := range []string{"p\x001", "p\x002", "q"} {
			if err := tx.Put(BucketClientShares, []byte(k), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l.take()
	if err := up(func(tx *Tx) error { _, err := tx.DeletePrefix(BucketClientShares, []byte("p\x00")); return err }); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); got != "client_shares/p\x001:v>,client_shares/p\x002:v>" {
		t.Fatalf("DeletePrefix: %q", got)
	}

	// A failed function in a batch: its change is not reported.
	bad := errors.New("bad")
	if err := up(func(tx *Tx) error {
		if err := tx.Put(BucketKeys, []byte("z"), []byte("1")); err != nil {
			return err
		}
		return bad
	}); !errors.Is(err, bad) {
		t.Fatal(err)
	}
	if got := l.take(); got != "" {
		t.Fatalf("failed update reported: %q", got)
	}

	// A Finish error fails the write: nothing commits.
	l.finishErr = errors.New("ledger refused")
	if err := up(func(tx *Tx) error { return tx.Put(BucketKeys, []byte("y"), []byte("1")) }); err == nil || err.Error() != "ledger refused" {
		t.Fatalf("Finish error: %v", err)
	}
	l.finishErr = nil
	if err := db.View(ctx, func(tx *Tx) error { _, err := tx.Get(BucketKeys, []byte("y")); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a write committed although Finish failed: %v", err)
	}

	// The whole covered set.
	var all []string
	_ = db.View(ctx, func(tx *Tx) error {
		return tx.ForEachCovered(func(b Bucket, k, v []byte) error { all = append(all, fmt.Sprintf("%s/%s=%s", b, k, v)); return nil })
	})
	if strings.Join(all, ",") != "client_shares/q=v,keys/a=2" {
		t.Fatalf("ForEachCovered: %v", all)
	}

	db.SetLedger(nil)
	if err := up(func(tx *Tx) error { return tx.Put(BucketKeys, []byte("b"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); got != "" {
		t.Fatalf("removed ledger still told: %q", got)
	}
}

// TestRemoveLedgerOnlyItsOwn: removing a ledger that was replaced leaves
// the new one installed.
func TestRemoveLedgerOnlyItsOwn(t *testing.T) {
	db := openTemp(t)
	a, b := &recLedger{}, &recLedger{}
	db.SetLedger(a)
	db.SetLedger(b)
	db.RemoveLedger(a)
	if err := db.Update(context.Background(), func(tx *Tx) error { return tx.Put(BucketKeys, []byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if a.take() != "" || b.take() != "keys/k:>v" {
		t.Fatal("RemoveLedger removed a ledger it was not given")
	}
	db.RemoveLedger(b)
	if db.ledger.Load() != nil {
		t.Fatal("RemoveLedger left its own ledger installed")
	}
}
