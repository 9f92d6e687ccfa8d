package enclave

// # Rollback detection
//
// A copy of the store is a complete, valid store: restoring yesterday's
// backup would bring back keys that were deleted or replaced since. A TPM
// NV counter (TPM_NT_COUNTER: it only moves forward, and a counter
// defined anew starts at or above the highest value any counter of that
// TPM has had) records how far the store has gone:
//
//   - the store keeps a generation in its meta bucket, MACed under the root
//     subkey "rollback" together with the counter's NV index, the name of
//     the TPM's storage root key (which TPM it counts on) and a commitment
//     to the digest of every record (ledger.go);
//   - every change to a record (any bucket but meta: a store, an
//     overwrite, a deletion, a block, a sign-counter update …) raises the
//     recorded generation past the counter's value in the change's own
//     transaction (the store's change ledger), and a background goroutine
//     then increments the counter to it — commit first, then increment; no
//     request waits on the NV write. Changes that arrive while an
//     increment is pending share its generation, so the counter moves at
//     most once per [RollbackOptions.Interval] (rollback.min_interval,
//     default 1 s) whatever the write rate;
//   - at start, [OpenRollback] compares: a store generation ≥ the counter is
//     accepted and the counter is caught up (an increment lost in a crash);
//     a store generation below the counter is a store older than the last
//     change the TPM saw: [ErrRolledBack]. Records that are not the set the
//     digest vouches for are [ErrRecordsAltered]. An operator who restores
//     a backup on purpose accepts it with [RollbackOptions.AcceptRollback],
//     which records the counter's value as the new baseline and the
//     records' digest (and the caller audits it).
//
// Limits, stated plainly: a copy taken within one Interval before a change
// may carry the same generation as the store after it (coalescing).
// Backups through the admin API call [Rollback.BeforeBackup] so the next
// change takes a new generation; a raw disk snapshot does not, and a crash
// between a commit and its increment loses that increment (the next start
// makes it).
//
// The counter's authValue is a subkey of the root key, so only this
// appliance can increment it (an unauthorised increment would make the
// store look rolled back at the next start). Defining it needs owner
// authorization (empty by default).
//
// Several appliances over one shared store use the cluster scheme instead
// (RollbackOptions.Node; rollback_cluster.go): the records above bind ONE
// TPM and keep D in one process's memory, which several nodes cannot share;
// there each node keeps its own record with its share of D.
//
// On another TPM (after `keywarden recover`) the storage root key differs:
// the counter there has no history of this store, and the store's
// generation is rebased onto it. On the same TPM a missing counter means it
// was deleted (TPM2_Clear also changes the storage root key, so that is
// not it): refused like a rollback. The in-process simulator keeps no NV
// state across a process restart; in dev mode a missing counter is defined
// again with a warning in [RollbackStatus], and when the TPM refuses to
// define one the counter is reported unavailable and the store generation
// alone is kept.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// DefaultCounterIndex is the NV index of the rollback counter: in the range
// the TCG handle registry leaves to the platform owner (0x01800000–0x01BFFFFF).
const DefaultCounterIndex uint32 = 0x01800020

// DefaultRollbackInterval is how often, at most, the counter is incremented
// (rollback.min_interval). A copy of the store older than this is caught.
const DefaultRollbackInterval = time.Second

// rollbackRecordVersion is the version of the rollback record written: 2
// adds the commitment to the record digest (ledger.go), 3 makes it a
// commitment to the digest's ranges (ledger_ranges.go). A version-1 or -2
// record is read once, checked as it was written, and upgraded at start.
const rollbackRecordVersion = 3

// maxCatchUp bounds the increments [OpenRollback] makes to bring the counter
// up to the store: the store is normally ahead by one at most.
const maxCatchUp = 64

// ErrRolledBack means the store is older than the TPM's rollback counter:
// it is a copy from before the last destructive change (deleted keys would
// come back). Restore the newest backup, or accept this one deliberately
// (`keywarden rollback accept`, audited).
var ErrRolledBack = errors.New("enclave: the store is older than the TPM's rollback counter (a restored or copied store from before the last deletion)")

// ErrRollbackRecord means the store's rollback record is missing where one
// must exist, or does not verify under the root key (altered).
var ErrRollbackRecord = errors.New("enclave: the store's rollback record is missing or does not verify")

// ErrRecordsAltered means the store's records are not the set the
// appliance last wrote: a record was spliced in (say, from an older
// backup), added or removed while the appliance was not running. Restore
// the newest backup, or accept this store deliberately (`keywarden
// rollback accept`, audited).
var ErrRecordsAltered = errors.New("enclave: the store's records do not match the digest in its rollback record (a record was spliced in from another copy, added or removed outside the appliance)")

// RollbackError says by how much a store is behind.
type RollbackError struct {
	Store   uint64 // generation recorded in the store
	Counter uint64 // the TPM counter's value
	Reason  string // extra detail, may be empty
	// Node, on a cluster, names another node whose record is behind what
	// this node saw of it: Store is that record's generation, Counter the
	// generation this node saw (a partial restore).
	Node string
}

func (e *RollbackError) Error() string {
	msg := fmt.Sprintf("%v: store generation %d, TPM counter %d", ErrRolledBack, e.Store, e.Counter)
	if e.Node != "" {
		msg = fmt.Sprintf("%v: node %q's rollback record is at generation %d, this node saw it at %d", ErrRolledBack, e.Node, e.Store, e.Counter)
	}
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg + "; restore the newest backup, or accept this store deliberately with `keywarden rollback accept` (audited)"
}

func (e *RollbackError) Unwrap() error { return ErrRolledBack }

// RollbackOptions configure [OpenRollback]. The zero value is production's:
// the default index and interval, no override.
type RollbackOptions struct {
	// NVIndex of the counter. Zero means DefaultCounterIndex.
	NVIndex uint32
	// Interval is the least time between two counter increments (NV
	// wear, TPM latency). Zero means DefaultRollbackInterval.
	Interval time.Duration
	// AcceptRollback starts a store older than the counter (or with a
	// missing or unverifiable rollback record) and records the counter as
	// its new baseline. It is the operator's override for a deliberate
	// restore; the caller must audit it (RollbackStatus.Event says what
	// was accepted).
	AcceptRollback bool
	// Dev tolerates a missing counter on the same TPM (the in-process
	// simulator keeps no NV across restarts), a store without a rollback
	// record, and a TPM that refuses to define a counter (then the counter
	// is unavailable and only the store generation is kept).
	Dev bool
	// Logger receives background increment failures. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Node is this appliance's name in a cluster of appliances sharing
	// one store (rollback_cluster.go): one record per node, written by
	// that node only (its share of the digest, its generation, what it
	// saw of the others), each node's own TPM counter following every
	// node's changes. Empty is the single-node scheme above, unchanged. Letters,
	// digits, '.', '_' and '-', up to 64.
	Node string

	// RangeMax is the most records a range of the record digest holds
	// before it splits. Zero means 2048 (tests make it small).
	RangeMax int
	// FullCheck checks every record before OpenRollback returns, whatever
	// the store's size: a command that opens the store once and closes it
	// (recover) must refuse an altered store before it acts on it.
	FullCheck bool
	// SyncCheck is the most records checked in full before OpenRollback
	// returns; a larger store is checked range by range as it is read.
	// Zero means 150,000; negative: never in full (tests).
	SyncCheck int

	// init is set by InitRollback: the store may have no record yet.
	init bool
	// noBackground (tests): ranges are checked only as they are read.
	noBackground bool
}

// Rollback events, in RollbackStatus.Event.
const (
	RollbackAccepted    = "accepted"            // store ≥ counter
	RollbackCaughtUp    = "counter_caught_up"   // store was ahead; counter incremented
	RollbackNewCounter  = "new_counter"         // counter defined (init, new TPM, dev restart); store rebased
	RollbackOverride    = "rollback_accepted"   // AcceptRollback used on a refused store
	RollbackUnavailable = "counter_unavailable" // dev: no NV counter, store generation only
	RollbackUpgraded    = "record_upgraded"     // a version-1 record got its digest and a new generation
)

// RollbackStatus describes the counter at start and now.
type RollbackStatus struct {
	Available  bool   // an NV counter is in use
	NVIndex    uint32 // its index
	Generation uint64 // the store's recorded generation
	Counter    uint64 // the counter's last known value
	Pending    bool   // an increment is scheduled
	Event      string // what OpenRollback did (Rollback… constants)
	Detail     string // a sentence for the log or the audit line
	Records    int    // covered records at start
	// Checking: the store was too large to check every record before the
	// start returned; its ranges are checked as they are first read and
	// in the background until every one is (ledger_ranges.go).
	Checking bool
	// Altered: a range did not match its entry (set once, after the
	// start); serving stopped until `keywarden rollback accept`.
	Altered string
	// With RollbackOptions.Node: the node's name, and how many changes
	// of the cluster its record covers (its own generation plus those it
	// followed of the other nodes; Generation is then the node's counter
	// target).
	Node              string
	ClusterGeneration uint64
}

// Rollback keeps the store's generation and the TPM counter in step.
type Rollback struct {
	tpm       transport.TPM
	db        *store.DB
	root      *Root
	index     tpm2.TPMHandle
	auth      []byte // the counter's authValue (root subkey)
	srkName   []byte
	interval  time.Duration
	log       *slog.Logger
	available bool
	macKey    secret.Bytes // root subkey "rollback"
	lhash     *ledgerHash  // used on the store's writer goroutine only

	tpmMu sync.Mutex // one NV sequence at a time

	mu        sync.Mutex
	gen       uint64 // highest generation recorded in the store
	confirmed uint64 // counter value known to be reached
	shareable bool   // gen may absorb more destructive changes (increment pending, no backup since)
	last      time.Time
	status    RollbackStatus
	closed    bool
	started   bool          // OpenRollback done: changes advance the generation
	based     bool          // digest is known
	digest    digest        // T of the committed store (never stored; ledger_ranges.go)
	rec       rollbackState // the committed rollback record (MAC aside)
	haveRec   bool

	// With a node name (rollback_cluster.go).
	node    string
	nrec    nodeState // this node's committed record (MAC aside)
	joining bool      // no record of this node at start

	increments atomic.Uint64 // NV increments made (metric)

	// The record digest by range (ledger_ranges.go).
	rangeMax  int
	syncCheck int
	fullCheck bool
	stopped   atomic.Bool // Close began: reads are refused, no difference is recorded
	ranges    atomic.Pointer[rangeTable]
	checked   atomic.Bool // every range matched its entry since this start
	altered   atomic.Pointer[error]
	hashes    hashPool
	bgCtx     context.Context
	bgCancel  context.CancelFunc

	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// rollbackState is the meta record.
type rollbackState struct {
	V          int    `json:"v"`
	Generation uint64 `json:"gen"`
	NVIndex    uint32 `json:"nv_index"`
	TPM        []byte `json:"tpm"`               // name of the TPM's storage root key
	Counter    bool   `json:"counter"`           // false: no NV counter (dev)
	Records    []byte `json:"records,omitempty"` // v2: HMAC commitment to the record digest
	MAC        []byte `json:"mac"`
}

func (s *rollbackState) mac(root *Root) []byte {
	k := root.Subkey(SubkeyRollback)
	defer k.Wipe()
	return s.macWith(k.Reveal())
}

// macWith is the record's MAC under key: over the version, generation, NV
// index, TPM name, counter flag and (v2) the digest commitment.
func (s *rollbackState) macWith(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "keywarden rollback v%d\x00", s.V)
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(s.V))
	b = binary.BigEndian.AppendUint64(b, s.Generation)
	b = binary.BigEndian.AppendUint32(b, s.NVIndex)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.TPM)))
	b = append(b, s.TPM...)
	if s.Counter {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	if s.V >= 2 {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s.Records)))
		b = append(b, s.Records...)
	}
	m.Write(b)
	return m.Sum(nil)
}

func (s *rollbackState) verify(root *Root) bool { return hmac.Equal(s.mac(root), s.MAC) }

// seal writes the record as the current version under the MAC key.
func (s *rollbackState) seal(macKey []byte) ([]byte, error) {
	s.V = rollbackRecordVersion
	s.MAC = s.macWith(macKey)
	return json.Marshal(s)
}

// loadRollbackState reads the record; nil when there is none.
func loadRollbackState(ctx context.Context, db *store.DB) (*rollbackState, error) {
	var b []byte
	err := db.View(ctx, func(tx *store.Tx) (err error) { b, err = tx.GetMeta(store.MetaRollback); return })
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseRollbackState(b)
}

func parseRollbackState(b []byte) (*rollbackState, error) {
	var s rollbackState
	if err := json.Unmarshal(b, &s); err != nil || (s.V < 1 || s.V > rollbackRecordVersion) || (s.V == 1 && s.Records != nil) {
		return nil, fmt.Errorf("%w: damaged", ErrRollbackRecord)
	}
	return &s, nil
}

// InitRollback defines the counter for a newly initialized store (at
// `keywarden init`) and records the store's first generation. A stale
// counter at the index that this root key cannot use (left by an earlier
// installation) is replaced, with owner authorization.
func InitRollback(ctx context.Context, tpm transport.TPM, db *store.DB, root *Root, opts RollbackOptions) (*Rollback, error) {
	if opts.Node != "" {
		var recs map[string]*nodeState
		if err := db.View(ctx, func(tx *store.Tx) (err error) { recs, err = readNodes(tx); return }); err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			return nil, errors.New("enclave: the store already has a cluster rollback record")
		}
		opts.init = true
		return OpenRollback(ctx, tpm, db, root, opts)
	}
	st, err := loadRollbackState(ctx, db)
	if err != nil {
		return nil, err
	}
	if st != nil {
		return nil, errors.New("enclave: the store already has a rollback record")
	}
	opts.init = true
	return OpenRollback(ctx, tpm, db, root, opts)
}

// OpenRollback checks the store's generation against the TPM counter (see
// the section comment above) and starts the background incrementer. It
// sends a handful of TPM commands (one storage-root-key creation, the NV
// reads); it runs once, at start. Close it at shutdown.
func OpenRollback(ctx context.Context, tpm transport.TPM, db *store.DB, root *Root, opts RollbackOptions) (*Rollback, error) {
	if opts.NVIndex == 0 {
		opts.NVIndex = DefaultCounterIndex
	}
	if opts.NVIndex>>24 != uint32(tpm2.TPMHTNVIndex) {
		return nil, fmt.Errorf("enclave: rollback NV index %#08x is not an NV index handle (0x01xxxxxx)", opts.NVIndex)
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultRollbackInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &Rollback{
		tpm: tpm, db: db, root: root, index: tpm2.TPMHandle(opts.NVIndex),
		auth: counterAuth(root), interval: opts.Interval, log: opts.Logger,
		macKey: root.Subkey(SubkeyRollback),
		kick:   make(chan struct{}, 1), done: make(chan struct{}),
	}
	lkey := root.Subkey(SubkeyRollbackLedger)
	r.lhash = newLedgerHash(lkey.Reveal()) // the HMAC keeps its own copy
	r.hashes.key = append([]byte(nil), lkey.Reveal()...)
	lkey.Wipe()
	r.rangeMax, r.syncCheck, r.fullCheck = opts.RangeMax, opts.SyncCheck, opts.FullCheck
	if r.rangeMax <= 1 {
		r.rangeMax = defaultRangeMax
	}
	if r.syncCheck == 0 {
		r.syncCheck = defaultSyncCheck
	}
	r.bgCtx, r.bgCancel = context.WithCancel(context.Background())
	fail := func(err error) (*Rollback, error) {
		r.detach()
		r.wipe()
		return nil, err
	}
	if opts.Node != "" {
		if err := checkNodeName(opts.Node); err != nil {
			return fail(err)
		}
		r.node = opts.Node
		return r.openCluster(ctx, opts, fail)
	}
	st, err := loadRollbackState(ctx, db)
	if err != nil && !opts.AcceptRollback {
		return fail(err)
	}
	override := ""
	switch {
	case st != nil && !st.verify(root):
		if !opts.AcceptRollback {
			return fail(fmt.Errorf("%w: its MAC does not verify under the root key (altered)", ErrRollbackRecord))
		}
		override, st = "the rollback record did not verify", nil
	case st == nil && !opts.init && !opts.Dev:
		if !opts.AcceptRollback {
			return fail(fmt.Errorf("%w: the store has none (every initialized store records one; was it removed?); accept deliberately with `keywarden rollback accept`", ErrRollbackRecord))
		}
		override = "the store had no rollback record"
	}
	if st != nil {
		r.rec, r.haveRec, r.gen = *st, true, st.Generation
		r.rec.MAC = nil
	}
	// From here on every change to the covered buckets is seen.
	db.SetLedger(r)
	n, altered, lazy, err := r.checkRecords(ctx, st, opts.AcceptRollback)
	if err != nil {
		return fail(err)
	}
	if lazy {
		// From here on no record is read before its range is checked.
		db.SetReadGuard(r)
	} else {
		r.checked.Store(true)
	}
	upgrade := st != nil && st.V < rollbackRecordVersion
	if err := r.start(ctx, st, opts, override, upgrade); err != nil {
		return fail(err)
	}
	r.mu.Lock()
	r.started = true
	r.status.Records = n
	r.status.Checking = lazy
	if altered {
		r.status.Event = RollbackOverride
		r.status.Detail = fmt.Sprintf("rollback accepted by the operator: the store's %d records did not match its rollback record's digest, which now records them; %s", n, r.status.Detail)
	}
	r.mu.Unlock()
	r.wg.Add(1)
	go r.loop()
	if lazy && !opts.noBackground {
		r.wg.Add(1)
		go r.background()
	}
	return r, nil
}

// checkRecords checks the records against the rollback record in a write
// transaction, so no change lands between the check and the digest kept
// from then on. A version-3 record's range entries are checked against
// its commitment; then every record is checked (a store of up to
// syncCheck records), or lazy reports that the ranges are to be checked
// as they are read (ledger_ranges.go). An older record's single digest is
// checked by a full scan, which also cuts the ranges. altered reports a
// difference accepted by the operator.
func (r *Rollback) checkRecords(ctx context.Context, st *rollbackState, accept bool) (n int, altered, lazy bool, err error) {
	err = r.db.Update(ctx, func(tx *store.Tx) error {
		n, altered, lazy = 0, false, false
		if st != nil && st.V >= 3 {
			t, err := r.ledgerOf(tx)
			if err != nil {
				return err
			}
			es, tdig, err := readRangeEntries(tx, r.lhash)
			if err != nil && !errors.Is(err, ErrRecordsAltered) {
				return err
			}
			var cerr error
			switch {
			case err != nil:
				cerr = err
			case !hmac.Equal(r.lhash.tableCommitment(tdig), st.Records):
				cerr = fmt.Errorf("%w (its range entries are not the ones the rollback record vouches for)", ErrRecordsAltered)
			default:
				var total uint64
				for _, e := range es {
					total += e.n
				}
				if !accept && !r.fullCheck && r.db.LocalFile() && (r.syncCheck < 0 || total > uint64(r.syncCheck)) {
					if len(es) == 0 || len(es[0].start) != 0 {
						cerr = fmt.Errorf("%w: the record digest has no first range", ErrRecordsAltered)
						break
					}
					t.adopt(tableOf(es, nil, nil), tdig)
					n, lazy = int(total), true
					return nil
				}
				cnt, ds, ns, err := r.lhash.checkAllRanges(tx, es)
				if err == nil {
					t.adopt(tableOf(es, ds, ns), tdig)
					n = cnt
					return nil
				}
				if !errors.Is(err, ErrRecordsAltered) {
					return err
				}
				cerr = err
			}
			if !accept {
				return fmt.Errorf("%w; restore the newest backup, or accept this store deliberately with `keywarden rollback accept` (audited)", cerr)
			}
			_, n, err = r.rebase(tx)
			altered = true
			return err
		}
		d, cnt, err := r.rebase(tx)
		if err != nil {
			return err
		}
		n = cnt
		if st == nil || st.V < 2 || hmac.Equal(r.lhash.commitment(d), st.Records) {
			return nil
		}
		if !accept {
			return fmt.Errorf("%w (%d records now); restore the newest backup, or accept this store deliberately with `keywarden rollback accept` (audited)", ErrRecordsAltered, cnt)
		}
		altered = true
		return nil
	})
	return n, altered, lazy, err
}

// tableOf makes the range table of entries es; with ds and ns (a full
// check's digests and counts) every range is known and checked.
func tableOf(es []rangeEntry, ds []digest, ns []uint64) *rangeTable {
	t := &rangeTable{rs: make([]*lrange, len(es))}
	for i, e := range es {
		rg := &lrange{start: e.start, n: e.n, elem: e.elem}
		if ds != nil {
			rg.have, rg.d, rg.n = true, ds[i], ns[i]
			rg.verified.Store(true)
		}
		t.rs[i] = rg
	}
	return t
}

// detach removes the ledger and waits until no transaction that began
// with it is still running (a queued no-op write is a barrier: the store
// has one writer).
func (r *Rollback) detach() {
	r.db.RemoveLedger(r)
	r.db.RemoveReadGuard(r)
	_ = r.db.Update(context.Background(), func(*store.Tx) error { return nil })
}

func (r *Rollback) wipe() {
	clear(r.auth)
	clear(r.hashes.key)
	r.macKey.Wipe()
}

// start does OpenRollback's TPM work and records the result.
func (r *Rollback) start(ctx context.Context, st *rollbackState, opts RollbackOptions, override string, upgrade bool) error {
	r.tpmMu.Lock()
	defer r.tpmMu.Unlock()
	srk, done, err := srk(r.tpm)
	if err != nil {
		return err
	}
	defer done()
	r.srkName = append([]byte(nil), tpm2.Marshal(srk.Name)...)
	sameTPM := st != nil && hmac.Equal(st.TPM, r.srkName)

	status := RollbackStatus{NVIndex: uint32(r.index)}
	fresh := false // the counter has no history of this store: rebase
	pub, err := r.readPublic()
	switch {
	case errors.Is(err, tpm2.TPMRCHandle):
		// No counter at the index.
		if sameTPM && st.Counter && !opts.Dev && !opts.AcceptRollback {
			return &RollbackError{Store: st.Generation, Reason: fmt.Sprintf("the counter at NV index %#08x was deleted from this TPM", uint32(r.index))}
		}
		if sameTPM && st.Counter {
			status.Detail = "the rollback counter was missing from this TPM and was defined again"
			if opts.AcceptRollback && !opts.Dev {
				override = status.Detail
			}
		}
		if err := r.define(srk); err != nil {
			if opts.Dev {
				return r.unavailable(ctx, st, fmt.Sprintf("the TPM refused to define the rollback counter: %v", err))
			}
			return err
		}
		fresh = true
	case err != nil:
		return err
	default:
		if err := checkCounterPublic(pub); err != nil {
			return err
		}
		if _, err := r.read(); errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
			// A counter another root key made (an earlier installation,
			// or someone else's). Replace it where this store has no
			// history on this TPM, or on the operator's word.
			if sameTPM && st.Counter && !opts.AcceptRollback {
				return &RollbackError{Store: st.Generation, Reason: fmt.Sprintf("the counter at NV index %#08x was replaced by one this appliance did not make", uint32(r.index))}
			}
			if err := r.undefine(srk); err != nil {
				return fmt.Errorf("enclave: NV index %#08x holds a counter this root key cannot use, and removing it failed (remove it with `tpm2_nvundefine %#08x` if it is not in use): %w", uint32(r.index), uint32(r.index), err)
			}
			if err := r.define(srk); err != nil {
				return err
			}
			if sameTPM && st.Counter {
				override = "the counter was replaced"
			}
			fresh = true
		} else if err != nil && !errors.Is(err, tpm2.TPMRCNVUninitialized) {
			return err
		} else if errors.Is(err, tpm2.TPMRCNVUninitialized) {
			fresh = true // defined, never incremented (a crash at define)
		}
	}
	if fresh {
		if err := r.increment(); err != nil {
			return err
		}
	}
	c, err := r.read()
	if err != nil {
		return err
	}
	gen := c
	event := RollbackNewCounter
	switch {
	case st == nil || fresh:
		if st == nil && !fresh && r.joining && !opts.Dev {
			// A cluster node without a record, whose TPM already holds a
			// counter of this root key: its record was removed, or the
			// store is older than its join.
			if !opts.AcceptRollback {
				return &RollbackError{Counter: c, Reason: fmt.Sprintf("node %q has no rollback record in the store, yet its TPM holds this cluster's counter at NV index %#08x", r.node, uint32(r.index))}
			}
			override = fmt.Sprintf("node %q had no rollback record, and its TPM's counter was at %d", r.node, c)
		}
		if status.Detail == "" {
			status.Detail = fmt.Sprintf("rollback counter %#08x: store generation set to its value %d", uint32(r.index), c)
		}
	case !sameTPM:
		status.Detail = fmt.Sprintf("first start on this TPM: store generation %d rebased onto counter %d", st.Generation, c)
	case st.Generation >= c:
		gen, event = st.Generation, RollbackAccepted
		if st.Generation > c {
			if st.Generation-c > maxCatchUp && !opts.AcceptRollback {
				return &RollbackError{Store: st.Generation, Counter: c, Reason: "the store is far ahead of the counter; if this is expected, accept it"}
			}
			if st.Generation-c > maxCatchUp {
				gen, override = c, "the store was far ahead of the counter"
				break
			}
			for range st.Generation - c {
				if err := r.increment(); err != nil {
					return err
				}
			}
			if c, err = r.read(); err != nil {
				return err
			}
			event = RollbackCaughtUp
			status.Detail = fmt.Sprintf("counter caught up to the store's generation %d", st.Generation)
			if c > gen {
				gen = c // someone else incremented meanwhile
			}
		}
	default: // st.Generation < c
		if !opts.AcceptRollback {
			return &RollbackError{Store: st.Generation, Counter: c}
		}
		override = fmt.Sprintf("store generation %d was older than counter %d", st.Generation, c)
	}
	if override != "" {
		event = RollbackOverride
		status.Detail = "rollback accepted by the operator: " + override + fmt.Sprintf("; new baseline %d", gen)
	}
	if upgrade && override == "" && event != RollbackNewCounter {
		// A version-1 record carries no digest. Its upgrade takes a new
		// generation, so every version-1 record (whose records nothing
		// vouches for) is older than the counter from now on.
		gen++
		event = RollbackUpgraded
		status.Detail = fmt.Sprintf("rollback record upgraded to version %d (digests of the records by range); new generation %d", rollbackRecordVersion, gen)
	}
	if err := r.record(ctx, gen, true); err != nil {
		return err
	}
	for ; c < gen; c++ { // commit first, then increment
		if err := r.increment(); err != nil {
			return err
		}
	}
	status.Available, status.Generation, status.Counter, status.Event = true, gen, c, event
	r.mu.Lock()
	r.available, r.gen, r.confirmed, r.status, r.last = true, gen, c, status, time.Now()
	r.mu.Unlock()
	return nil
}

// unavailable keeps the store generation only (dev mode without NV).
func (r *Rollback) unavailable(ctx context.Context, st *rollbackState, why string) error {
	var gen uint64
	if st != nil {
		gen = st.Generation
	}
	if err := r.record(ctx, gen, false); err != nil {
		return err
	}
	r.mu.Lock()
	r.gen = gen
	r.status = RollbackStatus{NVIndex: uint32(r.index), Generation: gen, Event: RollbackUnavailable, Detail: why}
	r.mu.Unlock()
	return nil
}

// record writes the state with generation gen (never lowering a recorded
// generation unless it is the start's own decision, which runs before the
// ledger advances any generation).
//
// The record is written by the ledger's Finish, with the digest, in the
// same transaction.
func (r *Rollback) record(ctx context.Context, gen uint64, counter bool) error {
	st := rollbackState{Generation: gen, NVIndex: uint32(r.index), TPM: r.srkName, Counter: counter}
	return r.db.Update(ctx, func(tx *store.Tx) error {
		t, err := r.ledgerOf(tx)
		if err != nil {
			return err
		}
		s := st
		t.set = &s
		return nil
	})
}

// BeforeBackup closes the current generation: the next destructive change
// takes a new one, so a backup written now is detected as older once that
// change's increment lands. Call it just before streaming a backup. It
// sends no TPM command.
func (r *Rollback) BeforeBackup() {
	r.mu.Lock()
	r.shareable = false
	r.mu.Unlock()
}

// NewGeneration marks the write transaction tx: when it changes a record,
// it commits under a generation of its own, higher than that of any state
// of the store before it, instead of sharing the pending one (every
// transaction the store group-commits with it shares it). With [Sync]
// after the commit, no copy of the store taken before the transaction can
// be started again without being refused: a PIN guess is counted this way
// (server/pin). It sends no TPM command.
func (r *Rollback) NewGeneration(tx *store.Tx) error {
	t, err := r.ledgerOf(tx)
	if err != nil {
		return err
	}
	t.fresh = true
	return nil
}

// Sync returns once the TPM counter has reached the generation of every
// change committed before the call: it increments the counter now instead
// of waiting for the background incrementer's interval. Callers that
// arrive while an increment runs wait for it and share the next one, so
// concurrent callers cost one NV increment per generation, not one each.
// Only a PIN guess waits on it; releases and stores never do
// (decisions/13). Without a counter (dev mode, counter unavailable) it
// returns at once.
func (r *Rollback) Sync(ctx context.Context) error {
	r.mu.Lock()
	target, closed := r.gen, r.closed
	r.mu.Unlock()
	if !r.available {
		return nil
	}
	if closed {
		return errors.New("enclave: the rollback counter is closed")
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.mu.Lock()
		done := r.confirmed >= target
		r.mu.Unlock()
		if done {
			return nil
		}
		if err := r.sync(ctx); err != nil {
			return err
		}
	}
}

// Flush increments the counter now up to the store's generation (Close
// does it too).
func (r *Rollback) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.sync(ctx)
}

// Increments is how many times this Rollback incremented the NV counter
// (keywarden_rollback_nv_increments_total: NV endurance is finite).
func (r *Rollback) Increments() uint64 { return r.increments.Load() }

// Status reports the counter's state.
func (r *Rollback) Status() RollbackStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Close stops the background incrementer, makes any pending increment and
// removes the ledger from the store. Close it after the last write: a
// change to a covered bucket made without the ledger is not in the digest,
// and the next start reports the records as altered.
func (r *Rollback) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.stopped.Store(true)
	close(r.done)
	r.bgCancel()
	r.wg.Wait()
	var ferr error
	if r.node != "" {
		ferr = r.follow(context.Background()) // the last changes of other nodes count too
	}
	err := errors.Join(ferr, r.sync(context.Background()))
	r.detach()
	r.wipe()
	return err
}

func (r *Rollback) loop() {
	defer r.wg.Done()
	var retry, tick <-chan time.Time
	if r.node != "" {
		// Follow the cluster: other nodes' changes raise this node's
		// target too.
		t := time.NewTicker(r.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-r.done:
			return
		case <-r.kick:
		case <-retry:
		case <-tick:
			if err := r.follow(context.Background()); err != nil {
				r.log.Error("rollback: following the cluster generation failed; retrying at the next interval", "err", err)
			}
			continue
		}
		retry = nil
		r.mu.Lock()
		wait := time.Until(r.last.Add(r.interval))
		r.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-r.done:
				t.Stop()
				return // Close flushes
			case <-t.C:
			}
		}
		if err := r.sync(context.Background()); err != nil {
			r.log.Error("rollback counter increment failed; retrying (the store stays ahead of the counter, which start accepts)", "err", err)
			retry = time.After(r.interval)
		}
	}
}

// sync increments the counter up to the recorded generation.
func (r *Rollback) sync(ctx context.Context) error {
	if !r.available {
		return nil
	}
	r.tpmMu.Lock()
	defer r.tpmMu.Unlock()
	r.mu.Lock()
	target, confirmed := r.gen, r.confirmed
	// Close the generation before the increment: a change that commits
	// from now on may already be too late for it, so it takes the next.
	r.shareable = false
	r.mu.Unlock()
	if confirmed >= target {
		return nil
	}
	for range target - confirmed {
		if err := r.increment(); err != nil {
			return err
		}
	}
	c, err := r.read()
	if err != nil {
		return err
	}
	if c > target {
		// Someone else incremented the counter (it needs this root's
		// subkey, so: another process of this appliance). Keep the live
		// store ahead so it still starts.
		if err := r.record(ctx, c, true); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.confirmed = c
	if c > r.gen {
		r.gen = c
	}
	r.last = time.Now()
	r.status.Counter, r.status.Generation, r.status.Pending = r.confirmed, r.gen, r.gen > r.confirmed
	r.mu.Unlock()
	return nil
}

// counterAuth is the counter's authValue: 128 bits of a root subkey, in
// hex. It must hold no zero byte: go-tpm v0.9.8 builds the HMAC key by
// cutting the authValue at its last zero byte rather than trimming trailing
// zeros only (tpm2/sessions.go hmacKeyFromAuthValue), so a random binary
// value fails about one time in eight with TPM_RC_BAD_AUTH.
func counterAuth(root *Root) []byte {
	k := root.Subkey(SubkeyRollbackNVAuth)
	defer k.Wipe()
	return []byte(hex.EncodeToString(k.Reveal()[:16]))
}

// counterPublic is the counter's public area.
func (r *Rollback) counterPublic() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: r.index,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			AuthWrite: true,
			AuthRead:  true,
			NT:        tpm2.TPMNTCounter,
			NoDA:      true,
		},
		DataSize: 8,
	}
}

func checkCounterPublic(p *tpm2.TPMSNVPublic) error {
	a := p.Attributes
	if a.NT != tpm2.TPMNTCounter || p.DataSize != 8 || !a.AuthWrite || !a.AuthRead || p.NameAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("enclave: NV index %#08x is in use by something that is not a Keywarden rollback counter; choose another index", uint32(p.NVIndex))
	}
	return nil
}

func (r *Rollback) readPublic() (*tpm2.TPMSNVPublic, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: r.index}.Execute(r.tpm)
	if err != nil {
		return nil, err
	}
	return rsp.NVPublic.Contents()
}

func (r *Rollback) nvHandle() (tpm2.AuthHandle, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: r.index}.Execute(r.tpm)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("enclave: rollback counter: %w", err)
	}
	return tpm2.AuthHandle{Handle: r.index, Name: rsp.NVName, Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(r.auth))}, nil
}

// define creates the counter. The authValue travels encrypted under a
// session salted with the storage root key.
func (r *Rollback) define(srk *tpm2.CreatePrimaryResponse) error {
	srkPub, err := srk.OutPublic.Contents()
	if err != nil {
		return err
	}
	_, err = tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{
			Handle: tpm2.TPMRHOwner,
			Auth:   tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(nil), tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(srk.ObjectHandle, *srkPub)),
		},
		Auth:       tpm2.TPM2BAuth{Buffer: r.auth},
		PublicInfo: tpm2.New2B(r.counterPublic()),
	}.Execute(r.tpm)
	if err != nil {
		return fmt.Errorf("enclave: define rollback counter at NV index %#08x (needs owner authorization): %w", uint32(r.index), err)
	}
	return nil
}

func (r *Rollback) undefine(srk *tpm2.CreatePrimaryResponse) error {
	rsp, err := tpm2.NVReadPublic{NVIndex: r.index}.Execute(r.tpm)
	if err != nil {
		return err
	}
	_, err = tpm2.NVUndefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: r.index, Name: rsp.NVName},
	}.Execute(r.tpm)
	return err
}

func (r *Rollback) increment() error {
	h, err := r.nvHandle()
	if err != nil {
		return err
	}
	if _, err := (tpm2.NVIncrement{AuthHandle: h, NVIndex: tpm2.NamedHandle{Handle: h.Handle, Name: h.Name}}).Execute(r.tpm); err != nil {
		return fmt.Errorf("enclave: increment rollback counter: %w", err)
	}
	r.increments.Add(1)
	return nil
}

func (r *Rollback) read() (uint64, error) {
	h, err := r.nvHandle()
	if err != nil {
		return 0, err
	}
	rsp, err := tpm2.NVRead{AuthHandle: h, NVIndex: tpm2.NamedHandle{Handle: h.Handle, Name: h.Name}, Size: 8}.Execute(r.tpm)
	if err != nil {
		return 0, fmt.Errorf("enclave: read rollback counter: %w", err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("enclave: rollback counter returned %d bytes", len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}
