package store

import (
	"bytes"
	"errors"
)

// # Change ledger
//
// A [Ledger] installed with [DB.SetLedger] sees every change to the
// covered buckets (every bucket but meta; see [Covered]) from inside the
// write transaction that makes it, and gets one call per transaction
// before the commit, in which it may write into the meta bucket. So a
// change and what the ledger records about it commit together or not at
// all. The enclave keeps the rollback generation and a digest of every
// covered record this way (package enclave, rollback).
//
// Writes made while no ledger is installed (an offline tool that opens
// the store without the enclave's rollback state) are not seen: the
// enclave's start-time check then reports the records as altered.

// Ledger observes the changes of write transactions.
type Ledger interface {
	// Begin is called at the start of each write transaction (a
	// transaction retried after a failed function begins again).
	Begin() LedgerTx
}

// LedgerTx observes one write transaction. Its methods run on the store's
// single writer goroutine, one transaction at a time.
type LedgerTx interface {
	// Change reports that key in bucket b went from old to new (old nil:
	// it was absent; new nil: it was deleted). It is called after the
	// change succeeded; old and new are valid only during the call.
	// Rewriting a value with identical bytes is not reported.
	Change(b Bucket, key, old, new []byte)
	// Finish runs after every function of the transaction succeeded,
	// before the commit. It may write into the meta bucket (writes there
	// are not reported). An error abandons the transaction and every
	// caller in it gets the error.
	Finish(tx *Tx) error
	// Committed runs after the transaction committed durably.
	Committed()
}

// Covered reports whether changes in bucket b are reported to the ledger:
// every bucket except meta (which holds the appliance's own bookkeeping:
// the sealed root key, the rollback record, the readiness heartbeat).
func Covered(b Bucket) bool { return b != BucketMeta }

// SetLedger installs l (nil removes it). Transactions that begin after the
// call report to l; one already running keeps what it began with.
func (db *DB) SetLedger(l Ledger) {
	if l == nil {
		db.ledger.Store(nil)
		return
	}
	db.ledger.Store(&l)
}

// RemoveLedger removes l if it is the installed ledger (another one
// installed since stays).
func (db *DB) RemoveLedger(l Ledger) {
	if p := db.ledger.Load(); p != nil && *p == l {
		db.ledger.CompareAndSwap(p, nil)
	}
}

// Ledger returns the observer of this write transaction: nil in a read
// transaction or when no ledger is installed.
func (tx *Tx) Ledger() LedgerTx { return tx.lt }

// ForEachCovered calls fn for every record of every covered bucket, in
// bucket-name order, then key order (the whole set the ledger sees). k and
// v are valid only inside fn.
func (tx *Tx) ForEachCovered(fn func(b Bucket, k, v []byte) error) error {
	for _, b := range Buckets() {
		if !Covered(b) {
			continue
		}
		if err := tx.tx.ForEach(b, nil, func(k, v []byte) error { return fn(b, k, v) }); err != nil {
			return err
		}
	}
	return nil
}

// Pos is the position of key in bucket b in the order of every covered
// record ([Tx.ForEachCovered]'s order), appended to dst: b, 0x00, key.
// Bucket names hold no 0x00, and a bucket name that is a prefix of
// another sorts first either way, so positions sort as (bucket, key) do.
func Pos(dst []byte, b Bucket, key []byte) []byte {
	dst = append(dst, b...)
	dst = append(dst, 0)
	return append(dst, key...)
}

// BucketEnd is the first position after every record of bucket b.
func BucketEnd(b Bucket) []byte { return append([]byte(b), 1) }

// ErrStop ends [Tx.ForEachCoveredFrom] early without an error.
var ErrStop = errors.New("store: stop")

// ErrNoSeek means the backend cannot scan from a position
// ([Tx.ForEachCoveredFrom]): only the bbolt backend can.
var ErrNoSeek = errors.New("store: this backend cannot scan the covered records from a position")

// seeker is a backend transaction that iterates a bucket from a key.
type seeker interface {
	ForEachFrom(b Bucket, start []byte, fn func(k, v []byte) error) error
}

// ForEachCoveredFrom calls fn for every covered record at or after
// position from ([Pos]), in order, until fn returns [ErrStop] (not an
// error) or another error. It reads past the read guard: it is the
// guard's own scan.
func (tx *Tx) ForEachCoveredFrom(from []byte, fn func(b Bucket, k, v []byte) error) error {
	sk, ok := tx.tx.(seeker)
	if !ok {
		return ErrNoSeek
	}
	fb, fk, _ := bytes.Cut(from, []byte{0})
	for _, b := range Buckets() {
		if !Covered(b) || string(b) < string(fb) {
			continue
		}
		start := []byte(nil)
		if string(b) == string(fb) {
			start = fk
		}
		err := sk.ForEachFrom(b, start, func(k, v []byte) error { return fn(b, k, v) })
		if errors.Is(err, ErrStop) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// LocalFile reports whether the store is a file this process maps (bbolt),
// where a range of records is read in microseconds: the rollback check
// reads ranges lazily only there.
func (db *DB) LocalFile() bool {
	_, ok := db.b.(interface{ DropResident() error })
	return ok
}

// DropResident releases the pages of the store file this process has
// read from its resident set, where the backend maps the file (bbolt);
// elsewhere it does nothing.
func (db *DB) DropResident() error {
	if d, ok := db.b.(interface{ DropResident() error }); ok {
		return d.DropResident()
	}
	return nil
}

// ReadGuard checks covered records before a transaction reads them: the
// enclave's rollback check, which verifies the records of a range of
// positions against their digest the first time any of them is read after
// a start (package enclave, ledger_ranges.go).
type ReadGuard interface {
	// CheckRead is called by [Tx.Get] (key) and [Tx.ForEach] (prefix
	// true: every key with that prefix) on a covered bucket, before the
	// read. An error fails the read.
	CheckRead(tx *Tx, b Bucket, key []byte, prefix bool) error
}

// SetReadGuard installs g (nil removes it) for transactions that begin
// after the call.
func (db *DB) SetReadGuard(g ReadGuard) {
	if g == nil {
		db.guard.Store(nil)
		return
	}
	db.guard.Store(&g)
}

// RemoveReadGuard removes g if it is the installed guard.
func (db *DB) RemoveReadGuard(g ReadGuard) {
	if p := db.guard.Load(); p != nil && *p == g {
		db.guard.CompareAndSwap(p, nil)
	}
}

func (db *DB) readGuard() ReadGuard {
	if p := db.guard.Load(); p != nil {
		return *p
	}
	return nil
}

// get is Get for the ledger: old is nil when key is absent, non-nil (maybe
// empty) when it is present.
func (tx *Tx) get(b Bucket, key []byte) (old []byte, err error) {
	v, err := tx.tx.Get(b, key)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// put is Put with the ledger told.
func (tx *Tx) put(b Bucket, key, value []byte) error {
	if tx.lt == nil || !Covered(b) {
		return tx.tx.Put(b, key, value)
	}
	old, err := tx.get(b, key)
	if err != nil {
		return err
	}
	if old != nil && bytes.Equal(old, value) {
		return nil // nothing changes
	}
	if err := tx.tx.Put(b, key, value); err != nil {
		return err
	}
	if value == nil {
		value = []byte{} // stored as an empty value, not deleted
	}
	tx.lt.Change(b, key, old, value)
	return nil
}

// del is Delete with the ledger told.
func (tx *Tx) del(b Bucket, key []byte) error {
	if tx.lt == nil || !Covered(b) {
		return tx.tx.Delete(b, key)
	}
	old, err := tx.get(b, key)
	if err != nil || old == nil {
		return err
	}
	if err := tx.tx.Delete(b, key); err != nil {
		return err
	}
	tx.lt.Change(b, key, old, nil)
	return nil
}
