package enclave

// # Record digest (splice detection)
//
// Each record is sealed with its own write version, but a reader learns
// the version from the record itself: an older record copied over the
// current one (from a backup or an earlier disk image) opens. So the store
// also carries an authenticated digest of its whole record set, kept with
// the rollback generation:
//
//	D = XOR over every record of the covered buckets (all but meta) of
//	    HMAC-SHA256(k, 'E' ‖ len ‖ bucket ‖ len ‖ key ‖ SHA-256(value))
//
// with k the root subkey [SubkeyRollbackLedger]. Each element is a keyed PRF output
// that only the root key can compute, so no set of records other than the
// one written has the same D (XOR of a secret PRF is a sound set MAC).
// D itself is never stored: the rollback record holds only
// HMAC(k, 'S' ‖ D) under its MAC, so copies of the file taken over time
// reveal no XOR relations between elements. The running node keeps D in
// memory.
//
// Upkeep is O(1) per change: the store reports every Put and Delete on a
// covered bucket from inside the write transaction ([store.Ledger]), D
// moves by elem(old) ^ elem(new), and once per committed batch the
// rollback record (generation and digest, one MAC) is rewritten in the
// same transaction: no change commits without its digest.
//
// The check runs once, at start ([OpenRollback]): the covered records are
// scanned, D recomputed and compared with the record; a difference is
// [ErrRecordsAltered]. No later open needs a TPM command or a check of
// its own: while the appliance runs, bbolt's file lock makes it the only
// writer, and every write it makes keeps D current. What an attacker
// changes in the file while the appliance is stopped is caught at the
// next start. (Someone who can write the mapped file of the running
// process is root on the appliance and can read the root key from memory
// anyway: out of scope.) Since rollback record version 3 the digest is
// kept by range, and a large store's ranges are checked as they are first
// read instead of all at start (ledger_ranges.go, decisions/55).

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"

	"github.com/keywarden/keywarden/store"
)

type digest [sha256.Size]byte

func (d *digest) xor(e *digest) {
	for i := range d {
		d[i] ^= e[i]
	}
}

// ledgerHash computes digest elements; not safe for concurrent use.
type ledgerHash struct {
	mac hash.Hash
	buf []byte
}

func newLedgerHash(key []byte) *ledgerHash { return &ledgerHash{mac: hmac.New(sha256.New, key)} }

func (h *ledgerHash) elem(b store.Bucket, k, v []byte) digest {
	vh := sha256.Sum256(v)
	h.buf = append(h.buf[:0], 'E')
	h.buf = binary.BigEndian.AppendUint32(h.buf, uint32(len(b)))
	h.buf = append(h.buf, b...)
	h.buf = binary.BigEndian.AppendUint32(h.buf, uint32(len(k)))
	h.buf = append(h.buf, k...)
	h.buf = append(h.buf, vh[:]...)
	return h.sum()
}

// sum is the HMAC of h.buf.
func (h *ledgerHash) sum() digest {
	h.mac.Reset()
	h.mac.Write(h.buf)
	var d digest
	h.mac.Sum(d[:0])
	return d
}

// scan computes D over every covered record in tx.
func (h *ledgerHash) scan(tx *store.Tx) (d digest, n int, err error) {
	err = tx.ForEachCovered(func(b store.Bucket, k, v []byte) error {
		e := h.elem(b, k, v)
		d.xor(&e)
		n++
		return nil
	})
	return d, n, err
}

// commitment is what the rollback record keeps of D.
func (h *ledgerHash) commitment(d digest) []byte {
	h.mac.Reset()
	h.mac.Write([]byte{'S'})
	h.mac.Write(d[:])
	return h.mac.Sum(nil)
}

// ledgerTx is the Rollback's observer of one write transaction.
type ledgerTx struct {
	r       *Rollback
	delta   digest
	changes int
	rebased bool // a full scan in this transaction set base
	base    digest
	set     *rollbackState // a record requested by Rollback.record
	fresh   bool           // Rollback.NewGeneration: this transaction takes a generation of its own

	// With a node name (rollback_cluster.go).
	seen   map[string]uint64 // the others' generations the follow loop read
	nset   *nodeState        // this node's record made or rebased at start, in this transaction
	nwrite bool
	nrec   nodeState

	// Single node: the record digest by range (ledger_ranges.go).
	rd      map[*lrange]*rangeDelta // what this transaction changed per range
	table   *rangeTable             // a table built or read in this transaction, published at commit
	split   *rangeTable             // the table after this transaction's splits
	updates []rangeUpdate
	pbuf    []byte

	// decided in Finish
	write  bool
	rec    rollbackState
	d      digest
	raised bool
}

// Begin implements store.Ledger.
func (r *Rollback) Begin() store.LedgerTx { return &ledgerTx{r: r} }

// Change implements store.LedgerTx.
func (t *ledgerTx) Change(b store.Bucket, key, old, new []byte) {
	var both digest
	if old != nil {
		e := t.r.lhash.elem(b, key, old)
		both.xor(&e)
	}
	if new != nil {
		e := t.r.lhash.elem(b, key, new)
		both.xor(&e)
	}
	t.delta.xor(&both)
	t.changes++
	if t.r.node != "" {
		return
	}
	tab := t.table
	if tab == nil {
		tab = t.r.ranges.Load()
	}
	if tab == nil {
		return // before the start's check, whose scan sees this change
	}
	t.pbuf = store.Pos(t.pbuf[:0], b, key)
	rg := tab.rs[tab.find(t.pbuf)]
	if t.rd == nil {
		t.rd = make(map[*lrange]*rangeDelta)
	}
	x := t.rd[rg]
	if x == nil {
		x = &rangeDelta{}
		t.rd[rg] = x
	}
	x.d.xor(&both)
	if old == nil {
		x.dn++
	}
	if new == nil {
		x.dn--
	}
}

var errLedgerNotInstalled = errors.New("enclave: the rollback ledger is not installed on this store")

// ledgerOf returns r's observer of tx.
func (r *Rollback) ledgerOf(tx *store.Tx) (*ledgerTx, error) {
	t, ok := tx.Ledger().(*ledgerTx)
	if !ok || t.r != r {
		return nil, errLedgerNotInstalled
	}
	return t, nil
}

// rebase cuts every record of tx into new ranges (ledger_ranges.go),
// writes their entries and makes T the transaction's base; changes made
// earlier in the same transaction are in the scan, later ones are added
// by Change. It returns the full D (a version-2 record's check) and the
// count.
func (r *Rollback) rebase(tx *store.Tx) (digest, int, error) {
	t, err := r.ledgerOf(tx)
	if err != nil {
		return digest{}, 0, err
	}
	tab, tdig, full, n, err := r.lhash.buildRanges(tx, r.rangeMax)
	if err != nil {
		return digest{}, 0, err
	}
	if err := writeRanges(tx, tab); err != nil {
		return digest{}, 0, err
	}
	t.rebased, t.base, t.delta, t.table, t.rd = true, tdig, digest{}, tab, nil
	return full, n, nil
}

// adopt makes tab (read from tx's entries, T tdig) the transaction's
// base without writing anything.
func (t *ledgerTx) adopt(tab *rangeTable, tdig digest) {
	t.rebased, t.base, t.delta, t.table, t.rd = true, tdig, digest{}, tab, nil
}

// finishRanges brings every range this transaction changed up to date:
// a range not known yet is scanned (and checked, when no read checked it
// since the start), one past rangeMax is split, and each changed entry is
// rewritten. It returns the change to T.
func (t *ledgerTx) finishRanges(tx *store.Tx) (tdelta digest, err error) {
	if len(t.rd) == 0 {
		return tdelta, nil
	}
	r := t.r
	tab := t.table
	if tab == nil {
		tab = r.ranges.Load()
	}
	h := r.lhash
	var splits map[*lrange][2]*lrange
	for rg, x := range t.rd {
		i := tab.find(rg.start)
		var d digest
		var n uint64
		switch {
		case rg.have:
			d = rg.d
			d.xor(&x.d)
			n = uint64(int64(rg.n) + x.dn)
		case rg.verified.Load():
			if d, n, err = h.scanRange(tx, rg.start, tab.end(i)); err != nil {
				return tdelta, err
			}
		default:
			if d, n, err = r.verifyRange(tx, h, tab, i, *x); err != nil {
				return tdelta, err
			}
		}
		old := h.entryElem(rg.start, rg.elem, rg.n) // the stored entry: rg.n is its count
		tdelta.xor(&old)
		if n > uint64(r.rangeMax) {
			left, right, err := splitRange(tx, h, tab, i)
			if err != nil {
				return tdelta, err
			}
			for _, half := range []*lrange{left, right} {
				g := h.entryElem(half.start, half.elem, half.n)
				tdelta.xor(&g)
				if err := tx.PutMeta(store.RollbackRangeKey(half.start), encodeRangeEntry(half.elem, half.n)); err != nil {
					return tdelta, err
				}
			}
			if splits == nil {
				splits = make(map[*lrange][2]*lrange)
			}
			splits[rg] = [2]*lrange{left, right}
			continue
		}
		e := h.rangeElem(rg.start, n, d)
		g := h.entryElem(rg.start, e, n)
		tdelta.xor(&g)
		if err := tx.PutMeta(store.RollbackRangeKey(rg.start), encodeRangeEntry(e, n)); err != nil {
			return tdelta, err
		}
		t.updates = append(t.updates, rangeUpdate{rg: rg, n: n, d: d, elem: e})
	}
	if splits != nil {
		next := &rangeTable{rs: make([]*lrange, 0, len(tab.rs)+len(splits))}
		for _, rg := range tab.rs {
			if s, ok := splits[rg]; ok {
				next.rs = append(next.rs, s[0], s[1])
				continue
			}
			next.rs = append(next.rs, rg)
		}
		t.split = next
	}
	return tdelta, nil
}

// splitRange cuts range i of tab, as tx sees it, into two halves with
// their digests and entries' elements.
func splitRange(tx *store.Tx, h *ledgerHash, tab *rangeTable, i int) (left, right *lrange, err error) {
	rg := tab.rs[i]
	end := tab.end(i)
	type item struct {
		pos []byte
		e   digest
	}
	var items []item
	err = h.forEachInRange(tx, rg.start, end, func(pos []byte, e digest) {
		items = append(items, item{pos: bytes.Clone(pos), e: e})
	})
	if err != nil {
		return nil, nil, err
	}
	mid := len(items) / 2
	left = &lrange{start: rg.start, have: true}
	right = &lrange{start: items[mid].pos, have: true}
	for j, it := range items {
		half := left
		if j >= mid {
			half = right
		}
		half.d.xor(&it.e)
		half.n++
	}
	for _, half := range []*lrange{left, right} {
		half.elem = h.rangeElem(half.start, half.n, half.d)
		half.verified.Store(true)
	}
	return left, right, nil
}

// Finish implements store.LedgerTx: it rewrites the rollback record with
// the new digest and, for a change, a generation past the counter (see
// the generation rule in rollback.go).
func (t *ledgerTx) Finish(tx *store.Tx) error {
	r := t.r
	if r.node != "" {
		return t.finishCluster(tx)
	}
	if p := r.altered.Load(); p != nil {
		return *p
	}
	tdelta, err := t.finishRanges(tx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	based, d, rec, haveRec := r.based, r.digest, r.rec, r.haveRec
	if t.rebased {
		d, based = t.base, true
	}
	if t.set != nil {
		rec, haveRec = *t.set, true
	}
	d.xor(&tdelta)
	t.d = d
	if t.set != nil && !based {
		r.mu.Unlock()
		return errors.New("enclave: rollback record written before the store's digest is known")
	}
	if !based || !haveRec || (t.changes == 0 && t.set == nil) {
		r.mu.Unlock()
		return nil
	}
	if t.changes > 0 && r.started {
		// A change a restored older store would undo: the generation
		// moves past the counter, unless it already did and the pending
		// increment has not started (coalescing) and no backup was taken
		// since. A transaction marked by NewGeneration always moves it:
		// every copy of the store taken before it then carries a lower
		// generation.
		if t.fresh || !r.shareable || rec.Generation <= r.confirmed || !r.available {
			rec.Generation++
		}
		t.raised = true
	}
	r.mu.Unlock()
	rec.Records = r.lhash.tableCommitment(d)
	b, err := rec.seal(r.macKey.Reveal())
	if err != nil {
		return err
	}
	if err := tx.PutMeta(store.MetaRollback, b); err != nil {
		return err
	}
	t.write, t.rec = true, rec
	return nil
}

// Committed implements store.LedgerTx.
func (t *ledgerTx) Committed() {
	r := t.r
	if r.node != "" {
		t.committedCluster()
		return
	}
	for _, u := range t.updates {
		u.rg.have, u.rg.n, u.rg.d, u.rg.elem = true, u.n, u.d, u.elem
	}
	switch {
	case t.split != nil:
		r.ranges.Store(t.split)
	case t.table != nil:
		r.ranges.Store(t.table)
	}
	r.mu.Lock()
	if t.rebased || t.write {
		r.digest, r.based = t.d, true
	}
	if t.write {
		r.rec, r.haveRec, r.gen = t.rec, true, t.rec.Generation
		r.status.Generation = r.gen
	}
	kick := false
	if t.raised {
		r.shareable = true
		r.status.Pending = r.available && r.gen > r.confirmed
		kick = r.available && !r.closed
	}
	r.mu.Unlock()
	if kick {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}
