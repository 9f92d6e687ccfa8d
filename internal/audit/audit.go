// Package audit is Keywarden's tamper-evident audit log: one JSON line per
// event, hash-chained, group-committed, anchored with an HMAC, and built to
// fail closed without ever hanging a request.
//
// # Files and lines
//
// The log lives in [Options.Dir] as audit-000001.jsonl, audit-000002.jsonl, …
// A file is rotated once it reaches [Options.MaxFileBytes]. Every line is a
// JSON object that starts with
//
//	{"seq":N,"time":"…","prev":"<hex SHA-256 of the previous line>","type":"event"|"anchor",…}
//
// seq counts lines from 1 across all files; prev is the SHA-256 of the
// previous line's bytes (without its newline), and the first line ever has a
// prev of 64 zeros. The chain runs across rotation: the first line of a new
// file carries the hash of the last line of the file before it.
//
// # Durability: group commit, bounded waits, failing closed
//
// [Log.Record] returns only when its line is on disk (written and fsynced).
// One writer goroutine takes every line that arrived while the previous
// batch was being written, writes them with one write and one fsync, and
// wakes all their callers: failing closed costs one fsync per batch, not one
// per request. A Record that cannot be made durable within
// [Options.WriteTimeout] (or its context) returns an error wrapping
// [ErrUnavailable]; the caller must refuse the action. The log then reports
// itself unhealthy ([Log.Healthy], [Log.LastError]) until a later write
// succeeds. A Record that gave up before the writer took its line is never
// written; one that gave up while its line was being written may still
// appear in the log. The log may over-report an attempted action; it never
// under-reports one that was allowed.
//
// [Log.RecordPending] splits the two: it returns once the line is written,
// with a wait for its fsync, which the background syncer runs at once. A
// caller can then make its own change durable at the same time and answer
// only when both are (keys.Service.Store does; see its decision record).
//
// When a write or fsync fails, the file is truncated back to the end of the
// last good batch, so no partial line stays in the chain. If that is not
// possible (the descriptor is gone, the file was deleted), the log starts a
// new file for the next batch, chaining from the last good line. A deleted
// audit file is noticed on the next batch (its link count is zero) and the
// batch fails.
//
// # Refusals cannot flood the log
//
// [Log.Refusal] never blocks and is not durable per call. Refusals are
// counted per reason ([Stats.RefusalsByReason]) and at most
// [Options.RefusalRate] lines per second are written (a token bucket with a
// burst of one second's worth); the others are dropped and their number, per
// reason, is carried in the "refusals_skipped" object of the next line
// written. Sampled lines reach the disk with the next fsync, at the latest
// at the next anchor.
//
// # Disk space reserve
//
// Open allocates [Options.ReserveBytes] in a file named .audit-reserve in
// the audit directory (fallocate on Linux, written out elsewhere). When a
// write fails because the disk or quota is full, the log truncates the
// failed batch away, deletes the reserve file and, in the space that frees,
// writes an "audit_disk_full" line. From then on every Record fails at once
// with [ErrDiskFull] (callers refuse: fail closed, without waiting for a
// timeout), while sampled refusal lines and anchors keep being written until
// they have used ReserveBytes. Each later batch tries to allocate the
// reserve again; when that succeeds the log writes "audit_space_restored"
// and accepts Records again. The reserve guarantees space only against this
// appliance's own growth on a shared filesystem: another process may take
// the freed space first, and copy-on-write filesystems with snapshots may
// not free it at all. For a hard guarantee give the audit directory its own
// filesystem or quota.
//
// # Anchors and verification
//
// Every [Options.AnchorInterval] (when something was written since the last
// anchor), every [Options.AnchorLines] lines when set, on [Log.Anchor] and
// at [Log.Close], the log writes an anchor line
// {"seq","time","prev","type":"anchor",…,"hmac"} whose hmac is
// HMAC-SHA256 under [Options.AnchorKey] over the domain string
// "keywarden-audit-anchor-v1\x00" and the anchor line itself without its
// hmac member. Since prev commits to every line before it, an anchor
// authenticates the whole chain up to itself. [Verify] checks every line and
// every anchor and reports the first broken entry; its semantics are
// documented there. Someone who can write the disk but does not hold the key
// can still cut the log back to an earlier anchor: the cut log verifies on
// its own. [Options.Heads] records the head of every anchor outside the log
// (Keywarden: the store's meta bucket, [StoreHeads]), MACed under the anchor
// key, and [VerifyHead] fails a log that ends before that recorded head,
// naming the missing lines. Lines written after the last recorded head can
// still be cut unnoticed: the window is one AnchorInterval.
//
// # Secrets
//
// No secret ever belongs in an audit line. The log writes what the caller
// gives it: every [Event] field, Fields included, is a string the caller
// vouches for. A [secret.Bytes] or [secret.String] formatted with fmt turns
// into "[redacted]", so an accidental fmt.Sprint of one is harmless; never
// call Reveal to fill an Event.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/receipt"
)

// Defaults for the zero values of [Options].
const (
	DefaultMaxFileBytes   = 64 << 20
	DefaultReserveBytes   = 16 << 20
	DefaultWriteTimeout   = 2 * time.Second
	DefaultAnchorInterval = time.Minute
	DefaultRefusalRate    = 10
	// DefaultReceiptSignEvery: a receipt signature waits at most 2 ms
	// after the one before it for more lines to join.
	DefaultReceiptSignEvery = 2 * time.Millisecond

	// MinAnchorKeyBytes is the shortest accepted anchor key.
	MinAnchorKeyBytes = 32
	// MaxEventBytes is the longest event line Record accepts.
	MaxEventBytes = 8 << 10
	// MaxLineBytes is the longest line the log writes and [Verify]
	// accepts: an event and the refusals_skipped counts it may carry.
	MaxLineBytes = 16 << 10
	// minMaxFileBytes is the smallest MaxFileBytes accepted.
	minMaxFileBytes = 4 << 10
)

// Actions used across Keywarden. Admin actions are "admin_" + a verb.
const (
	ActionStore           = "store"
	ActionRelease         = "release"
	ActionDelete          = "delete"
	ActionRefusal         = "refusal"
	ActionPasskeyRegister = "passkey_register"
	ActionPasskeyRevoke   = "passkey_revoke"
	ActionStart           = "start"
	ActionStop            = "stop"

	// Written by the log itself; [Verify] lists them as [Incident]s.
	// Actions starting with "audit_" are reserved for the log.
	ActionTailRepaired   = "audit_tail_repaired"   // an incomplete last line was cut at Open
	ActionTailUnanchored = "audit_tail_unanchored" // the previous run ended without an anchor
	ActionDiskFull       = "audit_disk_full"       // the reserve was released
	ActionSpaceRestored  = "audit_space_restored"  // the reserve was allocated again
	ActionFsyncFailed    = "audit_fsync_failed"    // a background fsync failed: earlier written-only lines may be lost
	ActionTruncated      = "audit_truncated"       // Open found the log shorter than (or other than) the head recorded outside it
	incidentActionPrefix = "audit_"
)

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeRefused = "refused"
	OutcomeWarning = "warning"
)

// Errors. Every error Record returns because the log could not make the line
// durable wraps ErrUnavailable (and, where it applies, ErrTimeout,
// ErrDiskFull or ErrClosed); callers refuse the action on any error.
var (
	ErrUnavailable    = errors.New("audit: log unavailable")
	ErrTimeout        = errors.New("audit: write not durable within the write timeout")
	ErrDiskFull       = errors.New("audit: disk full")
	ErrClosed         = errors.New("audit: log closed")
	ErrFileRemoved    = errors.New("audit: current audit file was removed")
	ErrInvalidEvent   = errors.New("audit: invalid event")
	ErrInvalidOptions = errors.New("audit: invalid options")

	// Verify's errors.
	ErrBroken     = errors.New("audit: chain broken")
	ErrUnanchored = errors.New("audit: unanchored tail")
)

// Options configure [Open]. Zero values take the documented defaults;
// [Options.Validate] checks and never changes them.
type Options struct {
	// Dir holds the audit files (created 0700 if missing). Required.
	Dir string
	// MaxFileBytes rotates to a new file once a file reaches this size; a
	// single batch is never split, so a file may exceed it by one batch.
	// 0 means DefaultMaxFileBytes (64 MiB); at least 4 KiB.
	MaxFileBytes int64
	// ReserveBytes is disk space allocated up front so that a full disk
	// still lets the log record that it is full, keep writing sampled
	// refusals and anchors, and fail closed cleanly (see the package doc).
	// Guards against the log being silenced by a disk filled through other
	// means. 0 means DefaultReserveBytes (16 MiB); negative disables it.
	ReserveBytes int64
	// WriteTimeout bounds how long Record waits for durability before it
	// fails (a dead disk or a hung fsync must not hang every request).
	// 0 means DefaultWriteTimeout (2 s).
	WriteTimeout time.Duration
	// AnchorKey is the HMAC key for anchors, a root-key subkey; at least 32
	// bytes. It makes a recomputed chain fail verification. Required.
	// Open copies it; Close wipes the copy.
	AnchorKey secret.Bytes
	// AnchorInterval is how often the head is anchored while lines are
	// being written. 0 means DefaultAnchorInterval (1 min).
	AnchorInterval time.Duration
	// AnchorLines, when positive, also anchors as soon as this many lines
	// were written since the last anchor (a batch of its own, right after
	// the batch that reached it), so the lines not yet covered by an anchor
	// stay few under load. 0: the interval only.
	AnchorLines int
	// RefusalRate is the number of refusal lines written per second at
	// most (see [Log.Refusal]). It bounds what a flood of bad requests
	// costs in disk space and I/O. 0 means DefaultRefusalRate (10).
	RefusalRate int
	// Clock returns the time written into lines and drives the refusal
	// sampler. nil means time.Now.
	Clock func() time.Time
	// WrittenActions lists actions that Record treats as RecordWritten:
	// answered once the line is written, with its fsync started right
	// after (a window of one fsync), instead of after the fsync. Empty (the
	// zero value): every Record waits for durability.
	WrittenActions []string
	// Heads, when set, keeps the chain head outside the log: after every
	// anchor is durable, its seq, hash and file are recorded there, MACed
	// under AnchorKey, by a background goroutine (no Record waits for it);
	// Anchor and Close wait for it. Open compares the log with the recorded
	// head and, if the log ends before it, records an [ActionTruncated]
	// incident (which makes [Verify] fail) before going on. Anchors of a
	// log with Heads say so, so [VerifyHead] notices a removed head.
	Heads HeadStore
	// WrittenSyncDelay is how long the background fsync of written-only
	// lines waits for more batches to join it. It bounds the window in
	// which an acknowledged RecordWritten line is not yet durable (delay
	// plus one fsync) and trades it for fewer fsyncs under load. Zero:
	// fsync as soon as asked. At most 100 ms.
	WrittenSyncDelay time.Duration
	// Signer, when set, makes the log publicly verifiable: every anchor is
	// a signed anchor (v 2) carrying Node, the batch key's certificate and
	// its Ed25519 signature (see [VerifySigned]), and a release recorded
	// with a [ReceiptSlot] in its context gets a receipt: the statements
	// of a batch are Merkle-hashed and the root signed once per batch (see
	// package receipt). The batch key is in memory: no TPM command.
	Signer *receipt.BatchKey
	// ReceiptSignEvery is how long after a receipt signature lines may
	// wait for others to join the next: within it, the signer lets the
	// goroutines that can run do so and takes the lines they write, for as
	// long as that brings new ones or lines wait for the writer, so that
	// under load one signature (one Ed25519 signature) serves several
	// releases. A line written after a quiet spell is signed at once.
	// Zero: [DefaultReceiptSignEvery]; negative: never wait. At most 100 ms.
	ReceiptSignEvery time.Duration
	// Node is the cluster node's name, written into signed anchors and
	// receipts (each node has its own chain). Empty: left out. It must be
	// the name Signer was certified for.
	Node string
}

// Validate checks o without changing it.
func (o Options) Validate() error {
	bad := func(field, why string) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidOptions, field, why)
	}
	switch {
	case o.Dir == "":
		return bad("Dir", "required")
	case o.MaxFileBytes < 0 || (o.MaxFileBytes > 0 && o.MaxFileBytes < minMaxFileBytes):
		return bad("MaxFileBytes", fmt.Sprintf("must be 0 (default) or at least %d", minMaxFileBytes))
	case o.WriteTimeout < 0:
		return bad("WriteTimeout", "must not be negative")
	case o.AnchorKey.Len() < MinAnchorKeyBytes:
		return bad("AnchorKey", fmt.Sprintf("must be at least %d bytes", MinAnchorKeyBytes))
	case o.AnchorInterval < 0:
		return bad("AnchorInterval", "must not be negative")
	case o.AnchorLines < 0:
		return bad("AnchorLines", "must not be negative")
	case o.RefusalRate < 0:
		return bad("RefusalRate", "must not be negative")
	case o.WrittenSyncDelay < 0 || o.WrittenSyncDelay > 100*time.Millisecond:
		return bad("WrittenSyncDelay", "must be between 0 and 100ms")
	case o.ReceiptSignEvery > 100*time.Millisecond:
		return bad("ReceiptSignEvery", "must be at most 100ms")
	case o.Signer != nil && o.Signer.Node() != o.Node:
		return bad("Node", fmt.Sprintf("the signer was certified for node %q", o.Signer.Node()))
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.MaxFileBytes == 0 {
		o.MaxFileBytes = DefaultMaxFileBytes
	}
	if o.ReserveBytes == 0 {
		o.ReserveBytes = DefaultReserveBytes
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.AnchorInterval == 0 {
		o.AnchorInterval = DefaultAnchorInterval
	}
	if o.RefusalRate == 0 {
		o.RefusalRate = DefaultRefusalRate
	}
	if o.ReceiptSignEvery == 0 {
		o.ReceiptSignEvery = DefaultReceiptSignEvery
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return o
}

// Event is one audited fact. Every field is written as given: never put a
// secret in one (see the package doc).
type Event struct {
	Time      time.Time         // zero means the log's clock at Record
	Action    string            // required: ActionStore, ActionRelease, "admin_…", …
	Outcome   string            // OutcomeSuccess, OutcomeFailure, OutcomeRefused, …
	Actor     string            // who asked: "admin:<key id>", "user:<id>", …
	Owner     string            // whose key (enclave.Owner)
	Method    string            // backup method
	Reason    string            // why, as a stable snake_case code
	RequestID string            // correlation id (X-Portal-Trace-Id, …)
	Remote    string            // client address
	Fields    map[string]string // anything else; strings the caller vouches for
}

// Stats is a snapshot of the log's counters, for Prometheus.
type Stats struct {
	Lines       uint64 // lines written (events, sampled refusals, anchors)
	Batches     uint64 // successful batch writes
	Fsyncs      uint64 // fsyncs issued
	Anchors     uint64 // anchor lines written
	WriteErrors uint64 // failed batches
	Timeouts    uint64 // Records that gave up after WriteTimeout

	Refusals         uint64            // Refusal calls
	RefusalsSampled  uint64            // refusal lines written
	RefusalsDropped  uint64            // refusals not written as a line (counted in refusals_skipped)
	RefusalsByReason map[string]uint64 // Refusal calls per reason (at most 64 reasons, then "other")

	Receipts       uint64 // receipts made (releases recorded with a ReceiptSlot)
	ReceiptBatches uint64 // batch signatures made for them

	HeadsRecorded uint64 // heads recorded in Options.Heads
	HeadErrors    uint64 // heads that could not be recorded
	HeadSeq       uint64 // seq of the last recorded head
	HeadError     error  // why the last attempt failed; nil if it succeeded

	File      string // current file name
	LowSpace  bool   // the reserve is in use: Records fail with ErrDiskFull
	Healthy   bool
	LastError error // nil when healthy
}

// Log is an open audit log. Its methods are safe for concurrent use.
type Log struct {
	opts Options // with defaults
	key  secret.Bytes

	reqs     chan *request
	refusals chan Event
	inject   chan func() // lets tests run code on the writer goroutine
	closing  chan struct{}
	done     chan struct{}
	closed   atomic.Bool
	closeErr error // set by the writer before done is closed

	w writer // owned by the writer goroutine (w.f also read by the syncer, under w.fmu)

	syncKick chan struct{} // the writer asks the syncer for an fsync
	syncDone chan struct{} // closed when the syncer has exited

	signReqs chan *request         // written lines waiting for their receipt (closed by the writer when it exits)
	signDone chan struct{}         // closed when the receipt signer has exited
	syncErr  atomic.Pointer[error] // a background fsync failed (the writer handles it)

	pendingNotes []Event // incident lines for the next batch (writer goroutine only)

	heads *headSaver // nil without Options.Heads

	certB64 string // Signer's certificate as signed anchors carry it

	sampler sampler

	lines, batches, fsyncs, anchors, writeErrors, timeouts atomic.Uint64
	receipts, receiptBatches                               atomic.Uint64
	busySince                                              atomic.Int64 // unix nanos while a batch is being written

	mu       sync.Mutex // guards the fields below
	lastErr  error
	pubSeq   uint64
	pubHead  [sha256.Size]byte
	pubFile  string
	lowSpace bool
}

// request is one Record or Anchor call waiting for its line.
type request struct {
	anchor   bool
	written  bool   // answer once written, before the fsync (RecordWritten)
	answered bool   // written and answered (set by the writer)
	pending  bool   // RecordPending: written, its caller waits for the fsync itself
	seq      uint64 // of the anchor that answered an Anchor call (set by the writer)
	ev       Event
	// wantReceipt: make a receipt for this line (set by the caller).
	// Once the line is written the writer hands the request to the
	// receipt signer (lineSeq, lineHash), which sets batch and leaf and
	// answers; the caller builds its receipt from them.
	wantReceipt bool
	lineSeq     uint64
	lineHash    [sha256.Size]byte
	batch       *receipt.Signed
	leaf        int
	state       atomic.Int32 // reqPending → reqTaken (by the writer) or reqAbandoned (by the caller)
	done        chan error   // buffered: the writer never blocks on it
}

const (
	reqPending int32 = iota
	reqTaken
	reqAbandoned
)

// Open opens (or creates) the log in opts.Dir and continues its chain. It
// checks the last file completely (every link and anchor): a broken line
// there is an error naming the file and line. An incomplete last line (a
// write interrupted by a crash: it was never acknowledged) is cut off, and a
// tail that ends without an anchor is accepted; both are recorded in the log
// ([ActionTailRepaired], [ActionTailUnanchored]) before Open returns. The
// disk reserve is allocated before anything else; Open fails if it cannot be.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	l := &Log{
		opts:     o,
		key:      secret.CopyBytes(o.AnchorKey.Reveal()),
		reqs:     make(chan *request, 1024),
		refusals: make(chan Event, max(o.RefusalRate, 16)),
		inject:   make(chan func()),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		syncKick: make(chan struct{}, 1),
		syncDone: make(chan struct{}),
		signReqs: make(chan *request, 4096),
		signDone: make(chan struct{}),
	}
	l.opts.AnchorKey = secret.Bytes{} // the caller's slice; l.key is ours
	if o.Signer != nil {
		cb, err := json.Marshal(o.Signer.Cert())
		if err != nil {
			return nil, fmt.Errorf("audit: open: %w", err)
		}
		l.certB64 = base64.RawURLEncoding.EncodeToString(cb)
	}
	l.sampler.init(o.RefusalRate)
	var err error
	if o.ReserveBytes > 0 {
		l.w.reserve = &reserve{path: reservePath(o.Dir), size: o.ReserveBytes}
		if err := l.w.reserve.allocate(); err != nil {
			return nil, fmt.Errorf("audit: open: reserving %d bytes in %s: %w", o.ReserveBytes, o.Dir, err)
		}
	}
	var want *Checkpoint
	var headNote *Event
	if o.Heads != nil {
		if want, headNote, err = l.loadHead(ctx); err != nil {
			return nil, err
		}
	}
	notes, err := l.w.resume(o.Dir, l.key.Reveal(), want)
	if err != nil {
		return nil, err
	}
	if o.Heads != nil {
		if headNote == nil {
			headNote = l.checkHead(want)
		}
		if headNote != nil {
			notes = append(notes, *headNote)
		}
		l.heads = newHeadSaver(o.Heads, l.key.Reveal(), o.WriteTimeout)
	}
	l.w.durable.init(l.w.seq)
	l.publish()
	go l.syncer()
	go l.receiptSigner()
	go l.run()
	for _, n := range notes {
		n.Time = o.Clock()
		if err := l.record(ctx, n); err != nil {
			_ = l.Close(ctx)
			return nil, fmt.Errorf("audit: open: recording %s: %w", n.Action, err)
		}
	}
	return l, nil
}

// Record writes ev as one line and returns when it is durable. Any error
// means the line may not be on disk and the action must be refused; errors
// from the log wrap [ErrUnavailable]. Record waits at most
// [Options.WriteTimeout] (less if ctx ends sooner).
func (l *Log) Record(ctx context.Context, ev Event) error {
	if ev.RequestID == "" {
		ev.RequestID = RequestIDFrom(ctx)
	}
	if ev.Time.IsZero() {
		ev.Time = l.opts.Clock()
	}
	if strings.HasPrefix(ev.Action, incidentActionPrefix) {
		return fmt.Errorf("%w: actions starting with %q are reserved", ErrInvalidEvent, incidentActionPrefix)
	}
	if slices.Contains(l.opts.WrittenActions, ev.Action) {
		return l.RecordWritten(ctx, ev)
	}
	return l.record(ctx, ev)
}

// RecordWritten writes ev as one line and returns when the line is
// written to the file, in chain order, and the fsync that makes it durable
// has been started by the same batch: the writer fsyncs right after
// answering, so the line is durable about one fsync later. Any write error
// refuses (fail closed); an fsync that fails makes the log unhealthy and
// every later Record and RecordWritten fails until a write succeeds again.
// It trades a window of one fsync (a power loss in it can lose the line)
// for not making the caller wait for the disk's flush: Keywarden uses it
// for key releases when audit.sync_releases is off (see
// docs/ARCHITECTURE.md), and Record for everything else.
func (l *Log) RecordWritten(ctx context.Context, ev Event) error {
	if ev.RequestID == "" {
		ev.RequestID = RequestIDFrom(ctx)
	}
	if ev.Time.IsZero() {
		ev.Time = l.opts.Clock()
	}
	if strings.HasPrefix(ev.Action, incidentActionPrefix) {
		return fmt.Errorf("%w: actions starting with %q are reserved", ErrInvalidEvent, incidentActionPrefix)
	}
	if err := checkEvent(ev); err != nil {
		return err
	}
	return l.submitEvent(ctx, &request{ev: ev, written: true, done: make(chan error, 1)})
}

// submitEvent submits an event's request, with a receipt when the context
// carries a [ReceiptSlot] for a release and the log has a Signer.
func (l *Log) submitEvent(ctx context.Context, r *request) error {
	slot := receiptSlotFrom(ctx)
	r.wantReceipt = slot != nil && l.opts.Signer != nil && r.ev.Action == ActionRelease
	if err := l.submit(ctx, r); err != nil {
		return err
	}
	if r.wantReceipt && r.batch != nil {
		slot.mu.Lock()
		slot.batch, slot.leaf = r.batch, r.leaf
		slot.mu.Unlock()
	}
	return nil
}

// ReceiptSlot receives the receipt of a release recorded with it in the
// context ([WithReceiptSlot]).
type ReceiptSlot struct {
	mu    sync.Mutex
	batch *receipt.Signed
	leaf  int
}

// Receipt returns the receipt of the release recorded last with the slot,
// or nil (none recorded, recording failed, or the log has no Signer).
func (s *ReceiptSlot) Receipt() *receipt.Receipt {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batch == nil {
		return nil
	}
	return s.batch.Receipt(s.leaf)
}

// Encoded is the receipt's encoding (its Keywarden-Receipt header value),
// or "" when there is none.
func (s *ReceiptSlot) Encoded() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batch == nil {
		return ""
	}
	return s.batch.Encode(s.leaf)
}

type receiptSlotKey struct{}

func receiptSlotFrom(ctx context.Context) *ReceiptSlot {
	if st, ok := ctx.Value(requestStateKey{}).(*RequestState); ok && st.Receipts {
		return &st.Slot
	}
	slot, _ := ctx.Value(receiptSlotKey{}).(*ReceiptSlot)
	return slot
}

// RequestState is what the HTTP layer keeps for one request in its
// context, in one allocation: the correlation id ([RequestIDFrom]) and,
// when Receipts is set, the slot a release leaves its receipt in (as
// [WithReceiptSlot]). Embed it in the layer's own per-request state.
type RequestState struct {
	ID       string
	Receipts bool
	Slot     ReceiptSlot
}

type requestStateKey struct{}

// WithRequestState returns ctx carrying st (WithRequestID and
// WithReceiptSlot in one context value).
func WithRequestState(ctx context.Context, st *RequestState) context.Context {
	return context.WithValue(ctx, requestStateKey{}, st)
}

// WithReceiptSlot returns ctx carrying a new slot: a release recorded
// with that context (by however deep a service) leaves its receipt there.
func WithReceiptSlot(ctx context.Context) (context.Context, *ReceiptSlot) {
	s := &ReceiptSlot{}
	return context.WithValue(ctx, receiptSlotKey{}, s), s
}

// record is Record without the reserved-action check, for the log's own
// notes.
func (l *Log) record(ctx context.Context, ev Event) error {
	if err := checkEvent(ev); err != nil {
		return err
	}
	return l.submitEvent(ctx, &request{ev: ev, done: make(chan error, 1)})
}

// Anchor writes an anchor line now and returns when it is durable and,
// with [Options.Heads], recorded there. Call it before verifying a live log,
// so that its tail is anchored.
func (l *Log) Anchor(ctx context.Context) error {
	r := &request{anchor: true, done: make(chan error, 1)}
	if err := l.submit(ctx, r); err != nil {
		return err
	}
	if l.heads != nil {
		return l.heads.wait(r.seq)
	}
	return nil
}

func (l *Log) submit(ctx context.Context, r *request) error {
	if l.closed.Load() {
		return unavailable(ErrClosed)
	}
	timer := time.NewTimer(l.opts.WriteTimeout)
	defer timer.Stop()
	var why error
	select {
	case l.reqs <- r:
		select {
		case err := <-r.done:
			return err
		case <-timer.C:
			why = ErrTimeout
		case <-ctx.Done():
			why = ctx.Err()
		case <-l.done:
			why = ErrClosed
		}
	case <-timer.C:
		why = ErrTimeout
	case <-ctx.Done():
		return unavailable(ctx.Err())
	case <-l.done:
		return unavailable(ErrClosed)
	}
	// Gave up. If the writer has not taken the line, it never will; if it
	// has, its answer may already be there (and it always is once the
	// writer has exited).
	if !r.state.CompareAndSwap(reqPending, reqAbandoned) {
		if why == ErrClosed {
			return <-r.done
		}
		select {
		case err := <-r.done:
			return err
		default:
		}
	}
	if why == ErrTimeout {
		l.timeouts.Add(1)
		l.setErr(fmt.Errorf("%w (%s)", ErrTimeout, l.opts.WriteTimeout))
	}
	return unavailable(why)
}

// Refusal counts a refused request and, within [Options.RefusalRate],
// writes it as a line. It never blocks and is not durable per call (see the
// package doc). Action defaults to [ActionRefusal], Outcome to
// [OutcomeRefused]; Reason should be a stable code such as
// "origin_mismatch": it is the counting key.
func (l *Log) Refusal(ctx context.Context, ev Event) {
	if ev.RequestID == "" {
		ev.RequestID = RequestIDFrom(ctx)
	}
	if ev.Action == "" {
		ev.Action = ActionRefusal
	}
	if ev.Outcome == "" {
		ev.Outcome = OutcomeRefused
	}
	now := l.opts.Clock()
	if !l.sampler.admit(ev.Reason, now) {
		return
	}
	if l.closed.Load() {
		l.sampler.skip(ev.Reason)
		return
	}
	if ev.Time.IsZero() {
		ev.Time = now
	}
	if checkEvent(ev) != nil || strings.HasPrefix(ev.Action, incidentActionPrefix) {
		l.sampler.skip(ev.Reason)
		return
	}
	select {
	case l.refusals <- ev:
	default:
		l.sampler.skip(ev.Reason)
	}
}

// Close writes the remaining lines and a final anchor, then closes the
// file. Records after Close fail with [ErrClosed]. It returns an error if the
// final lines could not be made durable, or ctx's error if it ends first.
func (l *Log) Close(ctx context.Context) error {
	if !l.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(l.closing)
	select {
	case <-l.done:
	case <-ctx.Done():
		return fmt.Errorf("audit: close: %w", ctx.Err())
	}
	<-l.signDone // the writer closed its queue: it answers what is left and exits
	if l.heads != nil {
		if err := l.closeHeads(ctx); err != nil && l.closeErr == nil {
			l.closeErr = err
		}
	}
	l.key.Wipe()
	return l.closeErr
}

// Healthy reports whether the last write succeeded and no batch has been
// pending longer than the write timeout.
func (l *Log) Healthy() bool { return l.LastError() == nil }

// LastError is why the log is unhealthy, or nil.
func (l *Log) LastError() error {
	if since := l.busySince.Load(); since != 0 {
		if d := time.Since(time.Unix(0, since)); d > l.opts.WriteTimeout {
			return fmt.Errorf("%w: a batch has been pending for %s", ErrTimeout, d.Round(time.Millisecond))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// Head returns the seq and hex hash of the last line written. Keep the
// value of an anchor somewhere outside the audit directory to notice the log
// being cut back to an earlier anchor.
func (l *Log) Head() (seq uint64, hash string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pubSeq, hex.EncodeToString(l.pubHead[:])
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	s := Stats{
		Lines:       l.lines.Load(),
		Batches:     l.batches.Load(),
		Fsyncs:      l.fsyncs.Load(),
		Anchors:     l.anchors.Load(),
		WriteErrors: l.writeErrors.Load(),
		Timeouts:    l.timeouts.Load(),

		Receipts:       l.receipts.Load(),
		ReceiptBatches: l.receiptBatches.Load(),
	}
	s.Refusals, s.RefusalsSampled, s.RefusalsDropped, s.RefusalsByReason = l.sampler.stats()
	s.LastError = l.LastError()
	s.Healthy = s.LastError == nil
	if l.heads != nil {
		s.HeadsRecorded, s.HeadErrors, s.HeadSeq, s.HeadError = l.heads.stats()
	}
	l.mu.Lock()
	s.File, s.LowSpace = l.pubFile, l.lowSpace
	l.mu.Unlock()
	return s
}

func (l *Log) setErr(err error) {
	l.mu.Lock()
	l.lastErr = err
	l.mu.Unlock()
}

// publish copies the writer's state for the getters.
func (l *Log) publish() {
	l.mu.Lock()
	l.pubSeq, l.pubHead, l.pubFile, l.lowSpace = l.w.seq, l.w.head, l.w.fileName(), l.w.lowSpace
	l.mu.Unlock()
}

func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request's correlation id: Record,
// RecordWritten and Refusal fill an event's empty RequestID from it, so
// services deep below the HTTP layer audit with the id of the request that
// called them.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestIDFrom returns the correlation id WithRequestID put in ctx.
func RequestIDFrom(ctx context.Context) string {
	if st, ok := ctx.Value(requestStateKey{}).(*RequestState); ok {
		return st.ID
	}
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
