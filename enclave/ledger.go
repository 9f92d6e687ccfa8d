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
// anyway: out of scope.) The scan costs about 0.07 s per 100,000 records
// (docs/BENCHMARKS.md).

import (
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
	if old != nil {
		e := t.r.lhash.elem(b, key, old)
		t.delta.xor(&e)
	}
	if new != nil {
		e := t.r.lhash.elem(b, key, new)
		t.delta.xor(&e)
	}
	t.changes++
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

// rebase recomputes D by scanning tx; changes made earlier in the same
// transaction are in the scan, later ones are added by Change.
func (r *Rollback) rebase(tx *store.Tx) (digest, int, error) {
	t, err := r.ledgerOf(tx)
	if err != nil {
		return digest{}, 0, err
	}
	d, n, err := r.lhash.scan(tx)
	if err != nil {
		return digest{}, 0, err
	}
	t.rebased, t.base, t.delta = true, d, digest{}
	return d, n, nil
}

// Finish implements store.LedgerTx: it rewrites the rollback record with
// the new digest and, for a change, a generation past the counter (see
// the generation rule in rollback.go).
func (t *ledgerTx) Finish(tx *store.Tx) error {
	r := t.r
	if r.node != "" {
		return t.finishCluster(tx)
	}
	r.mu.Lock()
	based, d, rec, haveRec := r.based, r.digest, r.rec, r.haveRec
	if t.rebased {
		d, based = t.base, true
	}
	if t.set != nil {
		rec, haveRec = *t.set, true
	}
	d.xor(&t.delta)
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
	rec.Records = r.lhash.commitment(d)
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
