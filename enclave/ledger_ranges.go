package enclave

// # The record digest by range (a start that does not read every record)
//
// Version 3 of the rollback record splits the single-node digest D
// (ledger.go) by position: the covered records, in the order of
// [store.Pos], are cut into ranges of at most rangeMax records, each
// with its own XOR digest D_i and count n_i. A range's entry in the meta
// bucket ([store.RollbackRangeKey] of its first position) holds
//
//	E_i = HMAC-SHA256(k, 'R' ‖ len ‖ start_i ‖ n_i ‖ D_i)
//
// and the rollback record's MAC covers HMAC(k, 'U' ‖ T) with
//
//	T = XOR over every entry of G_i = HMAC-SHA256(k, 'G' ‖ len ‖ start_i ‖ E_i ‖ n_i)
//
// so the set of entries is authenticated as a whole (no entry added,
// removed, edited or brought back from another copy goes unnoticed) and
// each entry vouches for its own records (E_i is a PRF of the range's
// start, count and digest, so a record spliced into, added to or removed
// from range i gives another E_i). T must be a XOR of secret values, as D
// is: the E_i are stored, and were T their plain XOR, anyone holding
// copies of the file could pick, among a few hundred changed ranges, a
// subset whose old and new entries XOR to the same T (linear algebra over
// 256-bit vectors) and bring back those ranges' old records and entries
// together. The G_i are never stored, nor are T and the D_i.
//
// At start the entries are read and T checked: that costs one read per
// range (a few thousand at 10 M records), not one per record. Stores of
// up to syncCheckLimit records are then checked in full before the start
// returns, as before. A larger store starts at once and is checked range
// by range: the first read of a record of a range not yet checked
// ([store.ReadGuard]) scans that range (at most rangeMax records, about a
// millisecond) and compares it with its entry, in the reader's own
// transaction, and a background pass checks every range within seconds.
// A write to a range checks it first. A difference anywhere stops the
// appliance's service as a refused start would have: every read and write
// of the store fails with [ErrRecordsAltered] (503 store_unavailable,
// /readyz not ready) until the operator restarts with `keywarden rollback
// accept` (audited). No record of a range that does not match its entry
// is ever returned.
//
// Ranges split in two when a write makes one pass rangeMax; they do not
// merge (a range emptied by deletions stays, one entry). Upkeep stays
// O(1) HMACs per change plus one meta entry rewritten per range a
// transaction touches.

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/keywarden/keywarden/store"
)

const (
	// defaultRangeMax is the most records a range holds before it splits:
	// a range's check reads this many at most (≈ 1.5 ms).
	defaultRangeMax = 2048
	// defaultSyncCheck is the most records checked in full before a start
	// returns (≈ 0.1 s); larger stores are checked range by range.
	defaultSyncCheck = 150_000
	// backgroundChunk bounds the records one read transaction of the
	// background check reads: bbolt cannot grow its file's mapping while
	// a read transaction is open.
	backgroundChunk = 50_000
)

// lrange is one range of the record digest.
type lrange struct {
	start    []byte      // position of its first record; empty for the first range
	verified atomic.Bool // its records matched its entry since this start

	// Known to the store's writer goroutine only.
	have bool   // d and n are known (a write or a full scan computed them)
	n    uint64 // records
	d    digest
	elem digest // E of the committed entry
}

// rangeTable is the ranges in position order; rs[0].start is empty. A
// table is never changed once published: a split publishes a new one.
type rangeTable struct{ rs []*lrange }

// find returns the index of the range that holds pos.
func (t *rangeTable) find(pos []byte) int {
	return sort.Search(len(t.rs), func(i int) bool { return bytes.Compare(t.rs[i].start, pos) > 0 }) - 1
}

// end returns the first position after range i (nil: the end).
func (t *rangeTable) end(i int) []byte {
	if i+1 < len(t.rs) {
		return t.rs[i+1].start
	}
	return nil
}

// rangeElem is E for a range.
func (h *ledgerHash) rangeElem(start []byte, n uint64, d digest) digest {
	h.buf = append(h.buf[:0], 'R')
	h.buf = binary.BigEndian.AppendUint32(h.buf, uint32(len(start)))
	h.buf = append(h.buf, start...)
	h.buf = binary.BigEndian.AppendUint64(h.buf, n)
	h.buf = append(h.buf, d[:]...)
	return h.sum()
}

// entryElem is G for a stored entry: the secret PRF that T XORs.
func (h *ledgerHash) entryElem(start []byte, e digest, n uint64) digest {
	h.buf = append(h.buf[:0], 'G')
	h.buf = binary.BigEndian.AppendUint32(h.buf, uint32(len(start)))
	h.buf = append(h.buf, start...)
	h.buf = append(h.buf, e[:]...)
	h.buf = binary.BigEndian.AppendUint64(h.buf, n)
	return h.sum()
}

// tableCommitment is what a version-3 rollback record keeps of T.
func (h *ledgerHash) tableCommitment(t digest) []byte {
	h.mac.Reset()
	h.mac.Write([]byte{'U'})
	h.mac.Write(t[:])
	return h.mac.Sum(nil)
}

func encodeRangeEntry(e digest, n uint64) []byte {
	b := make([]byte, 0, len(e)+8)
	b = append(b, e[:]...)
	return binary.BigEndian.AppendUint64(b, n)
}

func decodeRangeEntry(b []byte) (e digest, n uint64, ok bool) {
	if len(b) != len(e)+8 {
		return e, 0, false
	}
	copy(e[:], b)
	return e, binary.BigEndian.Uint64(b[len(e):]), true
}

// rangeEntry is a stored entry.
type rangeEntry struct {
	start []byte
	elem  digest
	n     uint64
}

// readRangeEntries reads every range entry in position order and T.
func readRangeEntries(tx *store.Tx, h *ledgerHash) (es []rangeEntry, t digest, err error) {
	prefix := store.RollbackRangeKey(nil)
	err = tx.ForEachMeta(prefix, func(k store.MetaKey, v []byte) error {
		e, n, ok := decodeRangeEntry(v)
		if !ok {
			return fmt.Errorf("%w: a range entry of the record digest is damaged", ErrRecordsAltered)
		}
		start := []byte(k[len(prefix):])
		es = append(es, rangeEntry{start: start, elem: e, n: n})
		g := h.entryElem(start, e, n)
		t.xor(&g)
		return nil
	})
	return es, t, err
}

// forEachInRange calls fn with the position and element of every record
// in [start, end) (end nil: to the last record); pos is valid only inside fn.
func (h *ledgerHash) forEachInRange(tx *store.Tx, start, end []byte, fn func(pos []byte, e digest)) error {
	var pos []byte
	return tx.ForEachCoveredFrom(start, func(b store.Bucket, k, v []byte) error {
		pos = store.Pos(pos[:0], b, k)
		if end != nil && bytes.Compare(pos, end) >= 0 {
			return store.ErrStop
		}
		fn(pos, h.elem(b, k, v))
		return nil
	})
}

// scanRange computes the digest and count of the records in [start, end).
func (h *ledgerHash) scanRange(tx *store.Tx, start, end []byte) (d digest, n uint64, err error) {
	err = h.forEachInRange(tx, start, end, func(_ []byte, e digest) {
		d.xor(&e)
		n++
	})
	return d, n, err
}

// checkAllRanges compares every record with the entries es (T already
// checked) in one pass: a full check. It returns the records' count and,
// per entry, their digest and count.
func (h *ledgerHash) checkAllRanges(tx *store.Tx, es []rangeEntry) (total int, ds []digest, ns []uint64, err error) {
	if len(es) == 0 || len(es[0].start) != 0 {
		return 0, nil, nil, fmt.Errorf("%w: the record digest has no first range", ErrRecordsAltered)
	}
	ds, ns = make([]digest, len(es)), make([]uint64, len(es))
	i := 0
	var pos []byte
	err = tx.ForEachCovered(func(b store.Bucket, k, v []byte) error {
		pos = store.Pos(pos[:0], b, k)
		for i+1 < len(es) && bytes.Compare(pos, es[i+1].start) >= 0 {
			i++
		}
		e := h.elem(b, k, v)
		ds[i].xor(&e)
		ns[i]++
		total++
		return nil
	})
	if err != nil {
		return 0, nil, nil, err
	}
	for i, e := range es {
		if want := h.rangeElem(e.start, ns[i], ds[i]); !hmac.Equal(want[:], e.elem[:]) {
			return total, nil, nil, fmt.Errorf("%w (%d records now; the range from %s does not match its entry)", ErrRecordsAltered, total, describePos(e.start))
		}
	}
	return total, ds, ns, nil
}

// describePos names a position for an operator without the key itself (a
// key holds a user id): the bucket only.
func describePos(pos []byte) string {
	if len(pos) == 0 {
		return "the first record"
	}
	b, _, _ := bytes.Cut(pos, []byte{0})
	return fmt.Sprintf("bucket %q", b)
}

// buildRanges cuts every record of tx into ranges of half rangeMax (room
// to grow before the first split) and returns the new table, its entries
// and T, the full D (for a version-2 record's check) and the count.
func (h *ledgerHash) buildRanges(tx *store.Tx, rangeMax int) (t *rangeTable, tdig, full digest, total int, err error) {
	per := uint64(max(rangeMax/2, 1))
	cur := &lrange{start: []byte{}, have: true}
	t = &rangeTable{rs: []*lrange{cur}}
	err = tx.ForEachCovered(func(b store.Bucket, k, v []byte) error {
		if cur.n == per {
			cur = &lrange{start: store.Pos(nil, b, k), have: true}
			t.rs = append(t.rs, cur)
		}
		e := h.elem(b, k, v)
		cur.d.xor(&e)
		full.xor(&e)
		cur.n++
		total++
		return nil
	})
	if err != nil {
		return nil, tdig, full, 0, err
	}
	for _, rg := range t.rs {
		rg.elem = h.rangeElem(rg.start, rg.n, rg.d)
		rg.verified.Store(true)
		g := h.entryElem(rg.start, rg.elem, rg.n)
		tdig.xor(&g)
	}
	return t, tdig, full, total, nil
}

// writeRanges replaces every stored range entry with t's.
func writeRanges(tx *store.Tx, t *rangeTable) error {
	var old []store.MetaKey
	if err := tx.ForEachMeta(store.RollbackRangeKey(nil), func(k store.MetaKey, _ []byte) error {
		old = append(old, k)
		return nil
	}); err != nil {
		return err
	}
	for _, k := range old {
		if err := tx.DeleteMeta(k); err != nil {
			return err
		}
	}
	for _, rg := range t.rs {
		if err := tx.PutMeta(store.RollbackRangeKey(rg.start), encodeRangeEntry(rg.elem, rg.n)); err != nil {
			return err
		}
	}
	return nil
}

// rangeDelta is what one write transaction changed in one range.
type rangeDelta struct {
	d  digest
	dn int64
}

// rangeUpdate is a range's state after a write transaction, applied when
// it commits.
type rangeUpdate struct {
	rg      *lrange
	n       uint64
	d, elem digest
}

// hashes hands each reader its own ledgerHash (an HMAC is not safe for
// concurrent use).
type hashPool struct {
	key []byte
	p   sync.Pool
}

func (hp *hashPool) get() *ledgerHash {
	if h, ok := hp.p.Get().(*ledgerHash); ok {
		return h
	}
	return newLedgerHash(hp.key)
}

func (hp *hashPool) put(h *ledgerHash) { hp.p.Put(h) }

// errAltered wraps ErrRecordsAltered as the store's unavailability: the
// server answers 503 store_unavailable, and retrying after the operator's
// accept succeeds.
func errAltered(cause error) error {
	return fmt.Errorf("%w: %w; restart with `keywarden rollback accept` (audited) after restoring or accepting the store", store.ErrUnavailable, cause)
}

// verifyRange checks range i of t against its entry as tx sees it: tx's
// own changes to the range (delta, a write transaction's) are taken out
// first, so it is the state before tx that is checked. It returns the
// range's digest and count as tx sees them.
func (r *Rollback) verifyRange(tx *store.Tx, h *ledgerHash, t *rangeTable, i int, delta rangeDelta) (d digest, n uint64, err error) {
	rg := t.rs[i]
	d, n, err = h.scanRange(tx, rg.start, t.end(i))
	if err != nil {
		return d, n, err
	}
	raw, err := tx.GetMeta(store.RollbackRangeKey(rg.start))
	if errors.Is(err, store.ErrNotFound) {
		return d, n, r.setAltered(fmt.Errorf("%w: the entry of the range from %s is missing", ErrRecordsAltered, describePos(rg.start)))
	}
	if err != nil {
		return d, n, err
	}
	stored, _, ok := decodeRangeEntry(raw)
	old := d
	old.xor(&delta.d)
	want := h.rangeElem(rg.start, uint64(int64(n)-delta.dn), old)
	if !ok || !hmac.Equal(want[:], stored[:]) {
		if r.stopped.Load() {
			return d, n, store.ErrClosed // the keys may be wiped: no verdict at shutdown
		}
		return d, n, r.setAltered(fmt.Errorf("%w: the records of the range from %s do not match its entry", ErrRecordsAltered, describePos(rg.start)))
	}
	rg.verified.Store(true)
	return d, n, nil
}

// setAltered records the first difference found after the start and
// returns the error every later read and write gets.
func (r *Rollback) setAltered(cause error) error {
	err := errAltered(cause)
	if r.altered.CompareAndSwap(nil, &err) {
		r.log.Error("the store's records do not match its rollback record: serving stopped", "err", cause)
		r.mu.Lock()
		r.status.Altered = cause.Error()
		r.mu.Unlock()
	}
	return *r.altered.Load()
}

// CheckRead implements store.ReadGuard: a read of a record whose range is
// not checked yet checks the range first.
func (r *Rollback) CheckRead(tx *store.Tx, b store.Bucket, key []byte, prefix bool) error {
	if p := r.altered.Load(); p != nil {
		return *p
	}
	if r.stopped.Load() && !r.checked.Load() {
		return store.ErrClosed
	}
	if r.checked.Load() {
		return nil
	}
	t := r.ranges.Load()
	if t == nil {
		return nil
	}
	lo := store.Pos(nil, b, key)
	i := t.find(lo)
	var hi []byte // the first position the read cannot reach
	if prefix {
		hi = prefixEnd(b, key)
	}
	var lt *ledgerTx
	if x, ok := tx.Ledger().(*ledgerTx); ok && x.r == r {
		lt = x
	}
	var h *ledgerHash
	defer func() {
		if h != nil {
			r.hashes.put(h)
		}
	}()
	for ; i < len(t.rs); i++ {
		rg := t.rs[i]
		if i > 0 && hi != nil && bytes.Compare(rg.start, hi) >= 0 {
			break
		}
		if !rg.verified.Load() {
			if h == nil {
				h = r.hashes.get()
			}
			var delta rangeDelta
			if lt != nil && lt.rd != nil {
				if x := lt.rd[rg]; x != nil {
					delta = *x
				}
			}
			if _, _, err := r.verifyRange(tx, h, t, i, delta); err != nil {
				return err
			}
		}
		if !prefix {
			break
		}
	}
	return nil
}

// prefixEnd is the first position after every key of b with prefix p.
func prefixEnd(b store.Bucket, p []byte) []byte {
	end := store.Pos(nil, b, p)
	for i := len(end) - 1; i > len(b); i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return store.BucketEnd(b)
}

// background checks every range not checked yet, a chunk of ranges per
// read transaction, and marks the store checked.
func (r *Rollback) background() {
	defer r.wg.Done()
	t := r.ranges.Load()
	if t == nil {
		return
	}
	h := newLedgerHash(r.hashes.key)
	i := 0
	for i < len(t.rs) {
		select {
		case <-r.done:
			return
		default:
		}
		if r.altered.Load() != nil {
			return
		}
		err := r.db.View(r.bgCtx, func(tx *store.Tx) error {
			var read uint64
			for ; i < len(t.rs) && read < backgroundChunk; i++ {
				if t.rs[i].verified.Load() {
					continue
				}
				_, n, err := r.verifyRange(tx, h, t, i, rangeDelta{})
				if err != nil {
					return err
				}
				read += n
			}
			return nil
		})
		if err == nil {
			// What the pass read is not what releases need: leave it in
			// the page cache, out of the process's resident memory.
			err = r.db.DropResident()
		}
		if err != nil {
			if r.altered.Load() == nil && r.bgCtx.Err() == nil && !r.stopped.Load() {
				r.log.Error("the background check of the store's records stopped", "err", err)
			}
			return
		}
	}
	r.checked.Store(true)
	r.mu.Lock()
	r.status.Checking = false
	n := r.status.Records
	r.mu.Unlock()
	r.log.Info("the store's records match its rollback record", "records", n)
}
