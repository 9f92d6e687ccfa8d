package enclave

// # Rollback detection on several nodes (RollbackOptions.Node; decisions/45)
//
// Several appliances over one shared store (etcd) cannot share the
// single-node record: it binds ONE TPM's storage root key and NV index,
// and each node's in-memory digest would go stale as soon as another node
// writes. Nor may they share one record that every change rewrites: the
// nodes' writers would all conflict on it. So each node keeps ONE record
// of its own (meta "rollback_node" 0x00 name, MACed under the root subkey
// "rollback", binding the node name, that node's TPM (storage root key
// name) and NV index), written by that node only:
//
//   - T, the value its own TPM counter must not exceed;
//   - D_n, its share of the record digest D (ledger.go): the XOR of the
//     elements its own changes moved (elem(old) ^ elem(new) per change).
//     XOR is commutative, so D = XOR of every node's share whoever wrote
//     what: a record written by node a and overwritten by node b is XORed
//     in by a and out (and the new value in) by b. Storing a share
//     (rather than a commitment, as the single-node record does) lets the
//     start check recombine them: its elements are keyed PRF outputs only
//     the root key computes, and the MAC stops anyone without the root key
//     from setting it. What copies of the records over time reveal is the
//     XOR of the PRF outputs of the records changed in between: nothing
//     about their contents;
//   - g_n, its own generation, advanced by each transaction of this node
//     that changes a record;
//   - seen, the highest g_m it has followed of every other node m.
//
// A change's transaction reads and rewrites only the writing node's
// record (one writer per node: the store's group commit), so nodes never
// conflict on rollback state (etcdstore guards a transaction that read
// single keys by those keys only). The change raises T past the counter,
// as on one node. Every node FOLLOWS the others: at each interval it reads
// every node's record (one linearizable read) and, when some g_m rose past
// seen[m], raises its own seen and T in its own record and increments its
// own counter to T, at most once per interval (coalesced as on one node).
// A removed node's record stays, marked removed ([RemoveRollbackNode]):
// the records it wrote are still in the store, so its share stays in the
// XOR; a removed node does not start under its old name.
//
// Why restoring every member from an old snapshot is caught by every node,
// not only by the one that made the change: let S be a snapshot in which
// node N's record says T_S. A change committed after S (on any node m)
// moves g_m. N then follows: it writes T > its counter, and increments its
// counter to T. Restoring S brings back T_S, while N's counter (kept in
// its TPM, outside the store) now exceeds T_S: N's start refuses with
// [ErrRolledBack] — for every node that followed the change before the
// restore, whoever wrote it. A PARTIAL restore — node m's record and the
// records it had changed put back from an older copy, the rest left
// current — matches the digest (m's old share vouches for the old
// records), but every node n that followed m's later change has seen[m]
// above the restored g_m: its start refuses with [ErrRolledBack] (and m's
// own start does, by its counter). The limit is the single-node one, per
// node: a snapshot taken within one interval before a change, while N's
// increment for an earlier change was still pending, may carry the T
// that the later change shares (coalescing); [Rollback.BeforeBackup]
// closes the generation on the node that takes a backup, a transaction
// marked by [Rollback.NewGeneration] always takes a T of its own (and
// [Rollback.Sync] waits for this node's counter), and a node that stops
// follows and increments once more on its way down.
//
// At start a node checks, at one revision and without writing: its own
// counter against its T (counter > T: refused until `keywarden rollback
// accept`, which rebases this node's record only — after a deliberate
// restore of the cluster, accept on every node); every node's record
// against the MAC; the XOR of every share against a scan of the records
// ([ErrRecordsAltered] on a difference); and its seen vector against the
// others' generations (a record older than seen, or gone: refused). A node
// without a record, in a store where other nodes have one, is a joining
// node: its record starts with an empty share and the others' current
// generations, and its counter is defined ([RollbackNewCounter]); if its
// TPM already holds this cluster's counter, its record was removed (or the
// store is older than its join): refused. A node's record copied over
// another's does not verify (the MAC binds the name). A store that has
// only the single-node record is converted at the first cluster start: its
// digest is checked against that record's commitment and becomes this
// node's share, and on the TPM it names, that record's generation is
// checked against the counter. (An earlier, unreleased layout kept one
// record shared by all writers; it is not read.)

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/keywarden/keywarden/store"
)

// maxNodeName bounds a node name (it is part of a meta key).
const maxNodeName = 64

// checkNodeName: 1–64 letters, digits, '.', '_' or '-'.
func checkNodeName(n string) error {
	if n == "" || len(n) > maxNodeName {
		return fmt.Errorf("enclave: rollback node name must be 1 to %d characters", maxNodeName)
	}
	for _, c := range []byte(n) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("enclave: rollback node name %q: only letters, digits, '.', '_' and '-'", n)
		}
	}
	return nil
}

// nodeRecordVersion is the version of a node record: 2 carries the node's
// own generation, digest share and seen vector (1 was an unreleased layout
// with one record shared by every writer; it is not read).
const nodeRecordVersion = 2

// nodeState is one node's meta record.
type nodeState struct {
	V       int               `json:"v"`
	Node    string            `json:"node"`
	Target  uint64            `json:"target"`         // this node's counter must not exceed it
	Gen     uint64            `json:"gen"`            // g_n: advances with each change this node commits
	Digest  []byte            `json:"digest"`         // D_n: XOR of the elements this node's changes moved
	Seen    map[string]uint64 `json:"seen,omitempty"` // the highest generation of each other node it followed
	Removed bool              `json:"removed,omitempty"`
	NVIndex uint32            `json:"nv_index"`
	TPM     []byte            `json:"tpm"`     // name of the node TPM's storage root key
	Counter bool              `json:"counter"` // false: no NV counter (dev)
	MAC     []byte            `json:"mac"`
}

func (s *nodeState) macWith(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("keywarden rollback node v2\x00"))
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(s.V))
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Node)))
	b = append(b, s.Node...)
	b = binary.BigEndian.AppendUint64(b, s.Target)
	b = binary.BigEndian.AppendUint64(b, s.Gen)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Digest)))
	b = append(b, s.Digest...)
	names := slices.Sorted(maps.Keys(s.Seen))
	b = binary.BigEndian.AppendUint32(b, uint32(len(names)))
	for _, n := range names {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
		b = binary.BigEndian.AppendUint64(b, s.Seen[n])
	}
	b = append(b, boolByte(s.Removed))
	b = binary.BigEndian.AppendUint32(b, s.NVIndex)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.TPM)))
	b = append(b, s.TPM...)
	b = append(b, boolByte(s.Counter))
	m.Write(b)
	return m.Sum(nil)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// verify checks the MAC and that the record is node's (a record copied
// from another node's key names that node).
func (s *nodeState) verify(key []byte, node string) bool {
	return s.V == nodeRecordVersion && s.Node == node && len(s.Digest) == sha256.Size && hmac.Equal(s.macWith(key), s.MAC)
}

func (s *nodeState) seal(key []byte) ([]byte, error) {
	s.V = nodeRecordVersion
	if len(s.Digest) != sha256.Size {
		s.Digest = make([]byte, sha256.Size)
	}
	s.MAC = s.macWith(key)
	return json.Marshal(s)
}

func (s *nodeState) digest() (d digest) {
	copy(d[:], s.Digest)
	return d
}

// clone copies s deeply (the committed record is shared under r.mu).
func (s *nodeState) clone() nodeState {
	c := *s
	c.Digest, c.TPM, c.MAC = bytes.Clone(s.Digest), bytes.Clone(s.TPM), nil
	c.Seen = maps.Clone(s.Seen)
	return c
}

// covered is how many changes of the cluster this record covers: its own
// generation and those it saw of the others (Status.ClusterGeneration).
func (s *nodeState) covered() uint64 {
	n := s.Gen
	for _, g := range s.Seen {
		n += g
	}
	return n
}

// readNode reads node's record in tx: nil when there is none.
func readNode(tx *store.Tx, node string) (*nodeState, error) {
	b, err := tx.GetMeta(store.RollbackNodeKey(node))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s nodeState
	if err := json.Unmarshal(b, &s); err != nil {
		return &nodeState{}, nil // damaged: does not verify
	}
	return &s, nil
}

// readNodes reads every node's record in tx (one range read), by name. A
// damaged record is returned empty: it does not verify.
func readNodes(tx *store.Tx) (map[string]*nodeState, error) {
	prefix := store.RollbackNodeKey("")
	recs := map[string]*nodeState{}
	err := tx.ForEachMeta(prefix, func(k store.MetaKey, v []byte) error {
		var s nodeState
		if err := json.Unmarshal(v, &s); err != nil {
			s = nodeState{}
		}
		recs[string(k[len(prefix):])] = &s
		return nil
	})
	return recs, err
}

// checkOthers verifies every record of recs but node's own.
func checkOthers(recs map[string]*nodeState, key []byte, node string) error {
	for _, name := range slices.Sorted(maps.Keys(recs)) {
		if name != node && !recs[name].verify(key, name) {
			return fmt.Errorf("%w: node %q's rollback record does not verify under the root key (altered)", ErrRollbackRecord, name)
		}
	}
	return nil
}

// shares is the XOR of the digest shares of recs (every node's, removed
// ones included: the records they wrote are still in the store).
func shares(recs map[string]*nodeState) (x digest) {
	for _, s := range recs {
		d := s.digest()
		x.xor(&d)
	}
	return x
}

// staleSeen reports a node whose record is older than own saw it (or
// gone): the record was restored from an older copy.
func staleSeen(own *nodeState, recs map[string]*nodeState) *RollbackError {
	for _, name := range slices.Sorted(maps.Keys(own.Seen)) {
		saw := own.Seen[name]
		m := recs[name]
		switch {
		case m == nil && saw > 0:
			return &RollbackError{Node: name, Counter: saw, Reason: "its record is gone from the store"}
		case m != nil && m.Gen < saw:
			return &RollbackError{Node: name, Store: m.Gen, Counter: saw, Reason: "its record was restored from an older copy"}
		}
	}
	return nil
}

// openCluster is OpenRollback with opts.Node set (see the section comment
// above); r is set up, its ledger not installed yet.
func (r *Rollback) openCluster(ctx context.Context, opts RollbackOptions, fail func(error) (*Rollback, error)) (*Rollback, error) {
	key := r.macKey.Reveal()
	var (
		ns     *nodeState
		others int
		legacy *rollbackState
	)
	err := r.db.View(ctx, func(tx *store.Tx) error {
		recs, err := readNodes(tx)
		if err != nil {
			return err
		}
		ns = recs[r.node]
		others = len(recs)
		if ns != nil {
			others--
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	accept := opts.AcceptRollback
	override := ""
	initShare := false    // a record made anew takes the whole scan as its share
	var st *rollbackState // this node's record in the single-node form start() takes
	switch {
	case ns != nil && !ns.verify(key, r.node):
		if !accept {
			return fail(fmt.Errorf("%w: node %q's rollback record does not verify under the root key for this node name (altered, copied from another node's record, or written by an unreleased layout)", ErrRollbackRecord, r.node))
		}
		override = fmt.Sprintf("node %q's rollback record did not verify", r.node)
		ns = nil
	case ns != nil && ns.Removed:
		return fail(fmt.Errorf("%w: node %q was removed from the cluster; join the cluster again under a new node name", ErrRollbackRecord, r.node))
	case ns != nil:
		st = &rollbackState{V: rollbackRecordVersion, Generation: ns.Target, NVIndex: ns.NVIndex, TPM: ns.TPM, Counter: ns.Counter}
		c := ns.clone()
		r.mu.Lock()
		r.nrec, r.haveRec, r.gen = c, true, ns.Target
		r.mu.Unlock()
	case opts.init:
		initShare = true
	case others > 0:
		r.joining = true // no record: a new node, unless its TPM counted for us before
	default:
		// No node record at all: a single-node store on its first
		// cluster start?
		l, lerr := loadRollbackState(ctx, r.db)
		switch {
		case lerr == nil && l != nil && l.V >= 2 && l.verify(r.root):
			legacy, st = l, l // on the TPM it names, checked against the counter
		case opts.Dev:
		case !accept:
			return fail(fmt.Errorf("%w: the store has no cluster rollback record (every store started in cluster mode records one per node; were they removed?); accept deliberately with `keywarden rollback accept`", ErrRollbackRecord))
		default:
			override = "the store had no cluster rollback record"
		}
		initShare = true
	}
	// From here on every change to the covered buckets is seen.
	r.db.SetLedger(r)
	n, altered, stale, err := r.checkCluster(ctx, ns, initShare, legacy, accept)
	if err != nil {
		return fail(err)
	}
	if stale != "" {
		override = strings.TrimPrefix(override+"; "+stale, "; ")
	}
	if err := r.start(ctx, st, opts, override, false); err != nil {
		return fail(err)
	}
	r.mu.Lock()
	r.started = true
	r.status.Records = n
	r.status.Node = r.node
	r.status.ClusterGeneration = r.nrec.covered()
	if altered {
		r.status.Event = RollbackOverride
		r.status.Detail = fmt.Sprintf("rollback accepted by the operator: the store's %d records did not match the nodes' rollback records' digest, which now records them; %s", n, r.status.Detail)
	}
	r.mu.Unlock()
	r.wg.Add(1)
	go r.loop()
	return r, nil
}

// checkCluster compares a scan of the records with the XOR of the nodes'
// digest shares, and this node's seen vector with the others' records.
// With own (this node's verified record) and no override, it only reads,
// at one revision (no write: it never conflicts with other nodes'
// writers). Otherwise, in a write transaction, it makes this node's record
// (initShare: the whole scan is its share, for a new store or a converted
// single-node one; else an empty share, for a joining node) or, on the
// operator's word, rebases it: its share absorbs any difference and its
// seen vector takes the others' current generations. stale is the
// refusal the operator overrode.
func (r *Rollback) checkCluster(ctx context.Context, own *nodeState, initShare bool, legacy *rollbackState, accept bool) (n int, altered bool, stale string, err error) {
	key := r.macKey.Reveal()
	altErr := func(cnt int) error {
		return fmt.Errorf("%w (%d records now); restore the newest backup, or accept this store deliberately with `keywarden rollback accept` (audited)", ErrRecordsAltered, cnt)
	}
	if own != nil && !accept {
		lkey := r.root.Subkey(SubkeyRollbackLedger)
		h := newLedgerHash(lkey.Reveal()) // r.lhash belongs to the writer goroutine
		lkey.Wipe()
		var recs map[string]*nodeState
		var d digest
		err = r.db.View(ctx, func(tx *store.Tx) (err error) {
			if recs, err = readNodes(tx); err != nil {
				return err
			}
			d, n, err = h.scan(tx)
			return err
		})
		if err != nil {
			return 0, false, "", err
		}
		mine := recs[r.node]
		if mine == nil || !mine.verify(key, r.node) {
			return 0, false, "", fmt.Errorf("%w: node %q's rollback record is gone or altered", ErrRollbackRecord, r.node)
		}
		if err := checkOthers(recs, key, r.node); err != nil {
			return 0, false, "", err
		}
		if shares(recs) != d {
			return 0, false, "", altErr(n)
		}
		if re := staleSeen(mine, recs); re != nil {
			return 0, false, "", re
		}
		return n, false, "", nil
	}
	err = r.db.Update(ctx, func(tx *store.Tx) error {
		t, err := r.ledgerOf(tx)
		if err != nil {
			return err
		}
		recs, err := readNodes(tx)
		if err != nil {
			return err
		}
		d, cnt, err := r.lhash.scan(tx)
		if err != nil {
			return err
		}
		n, altered, stale, t.delta = cnt, false, "", digest{} // the scan has this transaction's earlier changes
		rec := nodeState{Node: r.node}
		if own != nil {
			if mine := recs[r.node]; mine != nil && mine.verify(key, r.node) {
				rec = mine.clone()
			}
		}
		delete(recs, r.node)
		for _, name := range slices.Sorted(maps.Keys(recs)) {
			if recs[name].verify(key, name) {
				continue
			}
			if !accept {
				return checkOthers(recs, key, r.node)
			}
			// On the operator's word: that node rejoins (or is accepted
			// on) as after a removed record; its share is absorbed here.
			if err := tx.DeleteMeta(store.RollbackNodeKey(name)); err != nil {
				return err
			}
			delete(recs, name)
			altered = true
		}
		want := shares(recs)
		want.xor(&d) // the share that makes the XOR of all shares the scan's digest
		switch {
		case legacy != nil && !legacyMatches(tx, r.lhash, legacy, d):
			if !accept {
				return altErr(cnt)
			}
			altered = true
		case own == nil && !initShare && want != (digest{}), own != nil && rec.digest() != want:
			if !accept {
				return altErr(cnt)
			}
			altered = true
		}
		if own != nil || initShare || altered {
			rec.Digest = bytes.Clone(want[:])
		} else {
			rec.Digest = make([]byte, sha256.Size)
		}
		if re := staleSeen(&rec, recs); re != nil {
			if !accept {
				return re
			}
			stale = fmt.Sprintf("node %q's rollback record was at generation %d, below the %d this node had seen (%s)", re.Node, re.Store, re.Counter, re.Reason)
		}
		// Seen: the others' generations now. Own generation: past what
		// any other node saw of it, and one more after an override, so
		// every node follows the change.
		rec.Seen = map[string]uint64{}
		for name, m := range recs {
			if m.Gen > 0 {
				rec.Seen[name] = m.Gen
			}
			rec.Gen = max(rec.Gen, m.Seen[r.node])
		}
		if own == nil || altered || stale != "" {
			rec.Gen++ // a record made or rebased is a change the others follow
		}
		t.nset = &rec
		return nil
	})
	return n, altered, stale, err
}

// finishCluster is Finish with a node name: this node's own record takes
// the transaction's changes (its digest share and generation), a raised
// target, and the generations its follow loop saw (see the section
// comment above). No other node's record is read or written.
func (t *ledgerTx) finishCluster(tx *store.Tx) error {
	r := t.r
	if t.changes == 0 && t.set == nil && t.seen == nil && t.nset == nil {
		return nil
	}
	key := r.macKey.Reveal()
	var rec nodeState
	if t.nset != nil {
		rec = t.nset.clone()
	} else {
		cur, err := readNode(tx, r.node)
		if err != nil {
			return err
		}
		if cur == nil {
			r.mu.Lock()
			started := r.started
			r.mu.Unlock()
			if started {
				return fmt.Errorf("%w: node %q's rollback record is gone from the store; no change is written without it", ErrRollbackRecord, r.node)
			}
			return nil // before the start's check, whose scan sees these changes
		}
		if !cur.verify(key, r.node) {
			return fmt.Errorf("%w: node %q's rollback record does not verify (altered); no change is written", ErrRollbackRecord, r.node)
		}
		rec = cur.clone()
	}
	if t.changes > 0 {
		d := rec.digest()
		d.xor(&t.delta)
		rec.Digest = bytes.Clone(d[:])
		rec.Gen++
	}
	rose := false
	for name, g := range t.seen {
		if g > rec.Seen[name] {
			if rec.Seen == nil {
				rec.Seen = map[string]uint64{}
			}
			rec.Seen[name], rose = g, true
		}
	}
	r.mu.Lock()
	if t.set != nil {
		target := t.set.Generation
		if r.started && rec.Target > target {
			target = rec.Target // never lower a target a change raised meanwhile
		}
		rec.Target, rec.NVIndex, rec.TPM, rec.Counter = target, t.set.NVIndex, bytes.Clone(t.set.TPM), t.set.Counter
	}
	if r.started && (t.changes > 0 || rose) {
		// As on one node: past the counter, unless a pending increment
		// not yet started (and no backup since) already covers it. A
		// transaction marked by NewGeneration always moves it.
		if t.fresh || !r.shareable || rec.Target <= r.confirmed || !r.available {
			rec.Target++
		}
		t.raised = true
	}
	r.mu.Unlock()
	if t.changes == 0 && t.set == nil && !rose && t.nset == nil {
		return nil
	}
	b, err := rec.seal(key)
	if err != nil {
		return err
	}
	if err := tx.PutMeta(store.RollbackNodeKey(r.node), b); err != nil {
		return err
	}
	t.nwrite, t.nrec = true, rec
	return nil
}

// committedCluster is Committed with a node name.
func (t *ledgerTx) committedCluster() {
	r := t.r
	r.mu.Lock()
	if t.nwrite {
		r.nrec, r.haveRec, r.gen = t.nrec, true, t.nrec.Target
		r.status.Generation = r.gen
		r.status.ClusterGeneration = t.nrec.covered()
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

// follow reads every node's record (one linearizable read) and, when
// another node's generation rose past what this node's record saw, raises
// this node's target and seen vector in a transaction that writes only
// this node's record (the background loop then increments the counter).
// The loop calls it at each interval; Close once more.
func (r *Rollback) follow(ctx context.Context) error {
	key := r.macKey.Reveal()
	gens := map[string]uint64{}
	err := r.db.View(ctx, func(tx *store.Tx) error {
		recs, err := readNodes(tx)
		if err != nil {
			return err
		}
		if err := checkOthers(recs, key, r.node); err != nil {
			return err
		}
		for name, m := range recs {
			if name != r.node {
				gens[name] = m.Gen
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	rose := false
	for name, g := range gens {
		rose = rose || g > r.nrec.Seen[name]
	}
	r.mu.Unlock()
	if !rose {
		return nil
	}
	return r.db.Update(ctx, func(tx *store.Tx) error {
		t, err := r.ledgerOf(tx)
		if err != nil {
			return err
		}
		t.seen = gens
		return nil
	})
}

// RemoveRollbackNode marks node's rollback record removed (for `cluster
// remove`): the record stays, because the records that node wrote stay in
// the store and its digest share must stay in the XOR, and so does its
// generation, which the other nodes' seen vectors check. A node whose
// record is marked removed refuses to start under that name.
func RemoveRollbackNode(ctx context.Context, db *store.DB, root *Root, node string) error {
	if err := checkNodeName(node); err != nil {
		return err
	}
	k := root.Subkey(SubkeyRollback)
	defer k.Wipe()
	return db.Update(ctx, func(tx *store.Tx) error {
		rec, err := readNode(tx, node)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("enclave: node %q has no rollback record in the store", node)
		}
		if !rec.verify(k.Reveal(), node) {
			return fmt.Errorf("%w: node %q's rollback record does not verify", ErrRollbackRecord, node)
		}
		rec.Removed = true
		b, err := rec.seal(k.Reveal())
		if err != nil {
			return err
		}
		return tx.PutMeta(store.RollbackNodeKey(node), b)
	})
}

// legacyMatches reports whether the records of tx (full digest d) are the
// ones the single-node record legacy vouches for: by its range entries
// (version 3) or by its one digest (version 2).
func legacyMatches(tx *store.Tx, h *ledgerHash, legacy *rollbackState, d digest) bool {
	if legacy.V < 3 {
		return hmac.Equal(h.commitment(d), legacy.Records)
	}
	es, tdig, err := readRangeEntries(tx, h)
	if err != nil || !hmac.Equal(h.tableCommitment(tdig), legacy.Records) {
		return false
	}
	_, _, _, err = h.checkAllRanges(tx, es)
	return err == nil
}
