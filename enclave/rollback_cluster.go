package enclave

// # Rollback detection on several nodes (RollbackOptions.Node; decisions/45)
//
// Several appliances over one shared store (etcd) cannot share the
// single-node record: it binds ONE TPM's storage root key and NV index,
// and each node's in-memory digest would go stale as soon as another node
// writes. With a node name, the state is split in two:
//
//   - the cluster record (meta "rollback_cluster", MACed under the root
//     subkey "rollback"): the cluster generation G and the record digest D
//     itself. Every write transaction that changes a record, on any node,
//     reads it, checks its MAC, XORs its changes into D, advances G and
//     writes it back in the same transaction. On etcd every write
//     transaction is guarded by one fence key, so writers of different
//     nodes serialize on it and no update of D is lost. Storing D (rather
//     than a commitment to it, as the single-node record does) lets any
//     node continue it: its elements are keyed PRF outputs only the root
//     key can compute, and the MAC stops anyone without the root key from
//     setting it. What copies of the record over time reveal is the XOR of
//     the PRF outputs of the records changed in between: nothing about
//     their contents.
//   - one record per node (meta "rollback_node" 0x00 name, MACed, binding
//     the node name, that node's TPM (storage root key name) and NV
//     index): the value T its own TPM counter must not exceed, and the
//     cluster generation g it covers. A node's own change raises T past its
//     counter in the change's transaction (as on one node); and every node
//     FOLLOWS the cluster: at each interval it reads G, and when G is no
//     longer its g it raises T the same way (a transaction that writes only
//     its own record) and increments its own counter to T, at most once per
//     interval (coalesced as on one node).
//
// Why restoring every member from an old snapshot is caught by every node,
// not only by the one that made the change: let S be a snapshot in which
// node N's record says T_S. A change committed after S (on any node)
// moves G. N then follows: it writes T > its counter, and increments its
// counter to T. Restoring S brings back T_S, while N's counter (kept in
// its TPM, outside the store) now exceeds T_S: N's start refuses with
// [ErrRolledBack] — for every node that followed the change before the
// restore, whoever wrote it. The limit is the single-node one, per node: a
// snapshot taken within one interval before the change, while N's
// increment for an earlier change was still pending, may carry the T that
// the later change shares (coalescing); [Rollback.BeforeBackup] closes the
// generation on the node that takes a backup, and a node that stops
// follows and increments once more on its way down.
//
// At start a node checks its own record against its own counter (counter >
// T: refused until `keywarden rollback accept`, which rebases this node's
// record only — after a deliberate restore of the cluster, accept on every
// node) and D against a scan of the records (at one revision; refused with
// [ErrRecordsAltered] on a difference). A node without a record whose TPM
// has no counter of this root key is a joining node: its counter is
// defined and its record made ([RollbackNewCounter]). A node without a
// record whose TPM already holds this cluster's counter had a record that
// was removed (or the store is older than its join): refused. A node's
// record copied over another's does not verify (the MAC binds the name).
// A store that has only the single-node record is converted at the first
// cluster start: its digest is checked against that record's commitment,
// and on the TPM it names, that record's generation is checked against the
// counter and becomes this node's record.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

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

// clusterState is the shared meta record.
type clusterState struct {
	V          int    `json:"v"`
	Generation uint64 `json:"gen"`
	Digest     []byte `json:"digest"` // D
	MAC        []byte `json:"mac"`
}

func (s *clusterState) macWith(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("keywarden rollback cluster v1\x00"))
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(s.V))
	b = binary.BigEndian.AppendUint64(b, s.Generation)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Digest)))
	b = append(b, s.Digest...)
	m.Write(b)
	return m.Sum(nil)
}

func (s *clusterState) verify(key []byte) bool {
	return s.V == 1 && len(s.Digest) == sha256.Size && hmac.Equal(s.macWith(key), s.MAC)
}

func (s *clusterState) seal(key []byte) ([]byte, error) {
	s.V = 1
	s.MAC = s.macWith(key)
	return json.Marshal(s)
}

func (s *clusterState) digest() (d digest) {
	copy(d[:], s.Digest)
	return d
}

// nodeState is one node's meta record.
type nodeState struct {
	V       int    `json:"v"`
	Node    string `json:"node"`
	Target  uint64 `json:"target"`  // the counter must not exceed it
	Cluster uint64 `json:"cluster"` // the cluster generation it covers
	NVIndex uint32 `json:"nv_index"`
	TPM     []byte `json:"tpm"`     // name of the node TPM's storage root key
	Counter bool   `json:"counter"` // false: no NV counter (dev)
	MAC     []byte `json:"mac"`
}

func (s *nodeState) macWith(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("keywarden rollback node v1\x00"))
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(s.V))
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Node)))
	b = append(b, s.Node...)
	b = binary.BigEndian.AppendUint64(b, s.Target)
	b = binary.BigEndian.AppendUint64(b, s.Cluster)
	b = binary.BigEndian.AppendUint32(b, s.NVIndex)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.TPM)))
	b = append(b, s.TPM...)
	if s.Counter {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	m.Write(b)
	return m.Sum(nil)
}

// verify checks the MAC and that the record is node's (a record copied
// from another node's key names that node).
func (s *nodeState) verify(key []byte, node string) bool {
	return s.V == 1 && s.Node == node && hmac.Equal(s.macWith(key), s.MAC)
}

func (s *nodeState) seal(key []byte) ([]byte, error) {
	s.V = 1
	s.MAC = s.macWith(key)
	return json.Marshal(s)
}

// readCluster reads the cluster record in tx: nil when there is none.
func readCluster(tx *store.Tx) (*clusterState, error) {
	b, err := tx.GetMeta(store.MetaRollbackCluster)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s clusterState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: the cluster rollback record is damaged", ErrRollbackRecord)
	}
	return &s, nil
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
		return nil, fmt.Errorf("%w: node %q's rollback record is damaged", ErrRollbackRecord, node)
	}
	return &s, nil
}

// openCluster is OpenRollback with opts.Node set (see the section comment
// above); r is set up, its ledger not installed yet.
func (r *Rollback) openCluster(ctx context.Context, opts RollbackOptions, fail func(error) (*Rollback, error)) (*Rollback, error) {
	key := r.macKey.Reveal()
	var (
		cs     *clusterState
		ns     *nodeState
		legacy *rollbackState
	)
	err := r.db.View(ctx, func(tx *store.Tx) (err error) {
		cs, err = readCluster(tx)
		if err != nil {
			return err
		}
		ns, err = readNode(tx, r.node)
		return err
	})
	accept := opts.AcceptRollback
	override := ""
	resetCluster := false
	var base uint64 // the cluster generation a new cluster record starts from
	switch {
	case err != nil && errors.Is(err, ErrRollbackRecord) && accept:
		override, resetCluster, cs, ns = "a rollback record was damaged", true, nil, nil
	case err != nil:
		return fail(err)
	}
	switch {
	case cs != nil && !cs.verify(key):
		if !accept {
			return fail(fmt.Errorf("%w: the cluster rollback record's MAC does not verify under the root key (altered)", ErrRollbackRecord))
		}
		override, resetCluster, base = "the cluster rollback record did not verify", true, cs.Generation
	case cs == nil && !opts.init && !resetCluster:
		// A single-node store on its first cluster start?
		st, lerr := loadRollbackState(ctx, r.db)
		switch {
		case lerr == nil && st != nil && st.V >= 2 && st.verify(r.root):
			legacy, base = st, st.Generation
		case opts.Dev:
		case !accept:
			return fail(fmt.Errorf("%w: the store has no cluster rollback record (every store started in cluster mode records one; was it removed?); accept deliberately with `keywarden rollback accept`", ErrRollbackRecord))
		default:
			override = "the store had no cluster rollback record"
		}
	}
	var st *rollbackState // this node's record in the single-node form start() takes
	switch {
	case ns != nil && !ns.verify(key, r.node):
		if !accept {
			return fail(fmt.Errorf("%w: node %q's rollback record does not verify under the root key for this node name (altered, or copied from another node's record)", ErrRollbackRecord, r.node))
		}
		override = fmt.Sprintf("node %q's rollback record did not verify", r.node)
		ns = nil
	case ns != nil:
		st = &rollbackState{V: rollbackRecordVersion, Generation: ns.Target, NVIndex: ns.NVIndex, TPM: ns.TPM, Counter: ns.Counter}
		base = max(base, ns.Cluster)
		r.mu.Lock()
		r.nrec, r.haveRec, r.gen, r.cgen = *ns, true, ns.Target, ns.Cluster
		r.mu.Unlock()
	case legacy != nil:
		st = legacy // on the TPM it names, checked against the counter
	case !opts.init && override == "":
		r.joining = true // no record: a new node, unless its TPM counted for us before
	}
	// From here on every change to the covered buckets is seen.
	r.db.SetLedger(r)
	n, altered, err := r.checkCluster(ctx, cs == nil || resetCluster, resetCluster, accept, legacy, base)
	if err != nil {
		return fail(err)
	}
	if err := r.start(ctx, st, opts, override, false); err != nil {
		return fail(err)
	}
	r.mu.Lock()
	r.started = true
	r.status.Records = n
	r.status.Node = r.node
	r.status.ClusterGeneration = r.cgen
	if altered {
		r.status.Event = RollbackOverride
		r.status.Detail = fmt.Sprintf("rollback accepted by the operator: the store's %d records did not match the cluster rollback record's digest, which now records them; %s", n, r.status.Detail)
	}
	r.mu.Unlock()
	r.wg.Add(1)
	go r.loop()
	return r, nil
}

// checkCluster compares a scan of the records with the cluster record's
// digest, or (create) makes the cluster record from a scan. The check
// reads at one revision (no write, so it never conflicts with other
// nodes' writers); the creation runs in a write transaction.
func (r *Rollback) checkCluster(ctx context.Context, create, reset, accept bool, legacy *rollbackState, base uint64) (n int, altered bool, err error) {
	key := r.macKey.Reveal()
	if !create {
		lkey := r.root.Subkey(SubkeyRollbackLedger)
		h := newLedgerHash(lkey.Reveal()) // r.lhash belongs to the writer goroutine
		lkey.Wipe()
		var cs *clusterState
		var d digest
		err = r.db.View(ctx, func(tx *store.Tx) (err error) {
			if cs, err = readCluster(tx); err != nil {
				return err
			}
			d, n, err = h.scan(tx)
			return err
		})
		if err != nil {
			return 0, false, err
		}
		switch {
		case cs == nil || !cs.verify(key):
			return 0, false, fmt.Errorf("%w: the cluster rollback record is missing or does not verify", ErrRollbackRecord)
		case cs.digest() == d:
			return n, false, nil
		case !accept:
			return 0, false, fmt.Errorf("%w (%d records now); restore the newest backup, or accept this store deliberately with `keywarden rollback accept` (audited)", ErrRecordsAltered, n)
		}
		reset, base = true, cs.Generation
	}
	err = r.db.Update(ctx, func(tx *store.Tx) error {
		t, err := r.ledgerOf(tx)
		if err != nil {
			return err
		}
		d, cnt, err := r.lhash.scan(tx)
		if err != nil {
			return err
		}
		n, altered, t.delta = cnt, false, digest{}
		cur, err := readCluster(tx)
		if err != nil && !reset {
			return err
		}
		g := base
		switch {
		case cur != nil && !reset && cur.verify(key):
			// Another node made it meanwhile: check against it.
			if cur.digest() == d {
				return nil
			}
			if !accept {
				return fmt.Errorf("%w (%d records now); restore the newest backup, or accept this store deliberately with `keywarden rollback accept` (audited)", ErrRecordsAltered, cnt)
			}
			g = cur.Generation
			altered = true
		case legacy != nil && !hmac.Equal(r.lhash.commitment(d), legacy.Records):
			if !accept {
				return fmt.Errorf("%w (%d records now); restore the newest backup, or accept this store deliberately with `keywarden rollback accept` (audited)", ErrRecordsAltered, cnt)
			}
			altered = true
		case reset:
			altered = true
		}
		if cur != nil {
			g = max(g, cur.Generation)
		}
		if reset || altered {
			g++ // a new generation: every node follows the change
		}
		t.cset = &clusterState{Generation: g, Digest: bytes.Clone(d[:])}
		return nil
	})
	return n, altered, err
}

// finishCluster is Finish with a node name: the cluster record takes this
// transaction's changes, and this node's record its target (see the
// section comment above).
func (t *ledgerTx) finishCluster(tx *store.Tx) error {
	r := t.r
	if t.changes == 0 && t.set == nil && !t.follow && t.cset == nil {
		return nil
	}
	key := r.macKey.Reveal()
	c := t.cset
	if c == nil {
		cur, err := readCluster(tx)
		if err != nil {
			return err
		}
		if cur == nil {
			r.mu.Lock()
			started := r.started
			r.mu.Unlock()
			if started {
				return fmt.Errorf("%w: the cluster rollback record is gone from the store; no change is written without it", ErrRollbackRecord)
			}
			return nil // before the start's scan, which sees these changes
		}
		if !cur.verify(key) {
			return fmt.Errorf("%w: the cluster rollback record's MAC does not verify (altered); no change is written", ErrRollbackRecord)
		}
		c = cur
	}
	cs := *c
	if t.changes > 0 || t.cset != nil {
		if t.changes > 0 {
			d := cs.digest()
			d.xor(&t.delta)
			cs.Digest = bytes.Clone(d[:])
			cs.Generation++
		}
		b, err := cs.seal(key)
		if err != nil {
			return err
		}
		if err := tx.PutMeta(store.MetaRollbackCluster, b); err != nil {
			return err
		}
	}
	t.cgen, t.cread = cs.Generation, true

	r.mu.Lock()
	rec, have := r.nrec, r.haveRec
	if t.set != nil {
		target := t.set.Generation
		if r.started && have && rec.Target > target {
			target = rec.Target // never lower a target a change raised meanwhile
		}
		rec = nodeState{Node: r.node, Target: target, Cluster: rec.Cluster, NVIndex: t.set.NVIndex, TPM: t.set.TPM, Counter: t.set.Counter}
		have = true
	}
	if !have {
		r.mu.Unlock()
		return nil
	}
	if r.started && (t.changes > 0 || (t.follow && cs.Generation != rec.Cluster)) {
		// As on one node: past the counter, unless a pending increment
		// not yet started (and no backup since) already covers it.
		if !r.shareable || rec.Target <= r.confirmed || !r.available {
			rec.Target++
		}
		t.raised = true
	}
	write := t.set != nil || t.raised || rec.Cluster != cs.Generation
	rec.Cluster = cs.Generation
	r.mu.Unlock()
	if !write {
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
	if t.cread {
		r.cgen = t.cgen
		r.status.ClusterGeneration = t.cgen
	}
	if t.nwrite {
		r.nrec, r.haveRec, r.gen = t.nrec, true, t.nrec.Target
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

// follow reads the cluster generation and, when it moved since this
// node's record, raises the node's target in a transaction of its own
// (the background loop then increments the counter). The loop calls it at
// each interval; Close once more.
func (r *Rollback) follow(ctx context.Context) error {
	var g uint64
	err := r.db.View(ctx, func(tx *store.Tx) error {
		cs, err := readCluster(tx)
		if err != nil {
			return err
		}
		if cs == nil || !cs.verify(r.macKey.Reveal()) {
			return fmt.Errorf("%w: the cluster rollback record is missing or does not verify", ErrRollbackRecord)
		}
		g = cs.Generation
		return nil
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	same := g == r.cgen
	r.mu.Unlock()
	if same {
		return nil
	}
	return r.db.Update(ctx, func(tx *store.Tx) error {
		t, err := r.ledgerOf(tx)
		if err != nil {
			return err
		}
		t.follow = true
		return nil
	})
}
