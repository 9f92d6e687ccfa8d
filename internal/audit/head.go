package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// HeadMetaKey is the key, in the store's meta bucket, under which
// [StoreHeads] keeps the recorded head (a MACed [Checkpoint] as JSON):
// [store.MetaAuditHead], as a string for messages.
const HeadMetaKey = string(store.MetaAuditHead)

// An anchor written by a log with [Options.Heads] carries
// "fields":{"head":"recorded"}: [VerifyHead] then expects a recorded head.
const (
	headField    = "head"
	headRecorded = "recorded"
)

// headDomain separates the head's MAC from the anchors' (same key).
const headDomain = "keywarden-audit-head-v1\x00"

// Errors about the recorded head.
var (
	// ErrTruncated: the log ends before the recorded head, holds another
	// line at its seq, has no recorded head although its anchors say one
	// was recorded, or holds an [ActionTruncated] incident.
	ErrTruncated = errors.New("audit: log truncated")
	// ErrBadHead: the recorded head does not verify under the anchor key.
	ErrBadHead = errors.New("audit: recorded head does not verify")
)

// Checkpoint is a recorded head: the position of an anchor line, kept
// outside the audit directory so that a log cut back to an earlier anchor
// fails verification.
type Checkpoint struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"` // hex SHA-256 of the line at Seq
	File string    `json:"file"` // the audit file holding that line
	Time time.Time `json:"time"` // when it was recorded
	MAC  string    `json:"mac,omitempty"`
}

func (c Checkpoint) String() string {
	return fmt.Sprintf("seq %d in %s, recorded %s", c.Seq, c.File, c.Time.UTC().Format(time.RFC3339))
}

func (c Checkpoint) mac(key []byte) []byte {
	c.MAC = ""
	body, _ := json.Marshal(c) // cannot fail: plain fields
	m := hmac.New(sha256.New, key)
	m.Write([]byte(headDomain))
	m.Write(body)
	return m.Sum(nil)
}

// seal returns c as JSON with its MAC.
func (c Checkpoint) seal(key []byte) []byte {
	c.Time = c.Time.UTC()
	c.MAC = hex.EncodeToString(c.mac(key))
	b, _ := json.Marshal(c)
	return b
}

// OpenCheckpoint parses a recorded head and checks its MAC under the anchor
// key. An error wraps [ErrBadHead].
func OpenCheckpoint(b []byte, anchorKey secret.Bytes) (Checkpoint, error) {
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: not a recorded head: %v", ErrBadHead, err)
	}
	got, err := hex.DecodeString(c.MAC)
	if err != nil || !hmac.Equal(got, c.mac(anchorKey.Reveal())) {
		return Checkpoint{}, fmt.Errorf("%w: its MAC does not verify (the store's %q was altered, or the anchor key is wrong)", ErrBadHead, HeadMetaKey)
	}
	if c.Seq == 0 || len(c.Hash) != 2*sha256.Size {
		return Checkpoint{}, fmt.Errorf("%w: malformed", ErrBadHead)
	}
	return c, nil
}

// HeadStore keeps the recorded head outside the audit directory (see
// [Options.Heads]). [StoreHeads] is the store's meta bucket.
type HeadStore interface {
	// LoadHead returns the recorded head, or nil and no error when none is.
	LoadHead(ctx context.Context) ([]byte, error)
	// SaveHead replaces it, durably.
	SaveHead(ctx context.Context, b []byte) error
}

// StoreHeads keeps the head in db's meta bucket under [HeadMetaKey]: one
// store transaction per anchor, none per line.
func StoreHeads(db *store.DB) HeadStore { return storeHeads{db, store.MetaAuditHead} }

// NodeStoreHeads keeps the head of one node's log under its own meta key
// (store.MetaAuditHead.ForNode(node)): in a cluster sharing one store every
// node has its own audit log, and one shared key would hold whichever
// node recorded last — every other node would take it for its own and see
// its log as truncated.
func NodeStoreHeads(db *store.DB, node string) HeadStore {
	return storeHeads{db, store.MetaAuditHead.ForNode(node)}
}

type storeHeads struct {
	db  *store.DB
	key store.MetaKey
}

func (s storeHeads) LoadHead(ctx context.Context) ([]byte, error) {
	var b []byte
	err := s.db.View(ctx, func(tx *store.Tx) error {
		var err error
		b, err = tx.GetMeta(s.key)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

func (s storeHeads) SaveHead(ctx context.Context, b []byte) error {
	return s.db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(s.key, b) })
}

// headSaver records anchored heads in the background, so that no Record
// waits for the head store: the latest offered head wins.
type headSaver struct {
	heads   HeadStore
	key     []byte // the log's copy of the anchor key (wiped by Close after the saver stopped)
	timeout time.Duration

	kick chan struct{}
	done chan struct{}

	mu        sync.Mutex
	cond      *sync.Cond
	pending   *Checkpoint
	attempted uint64 // highest seq a save was tried for
	saved     uint64 // highest seq saved
	saves     uint64
	failures  uint64
	lastErr   error
}

func newHeadSaver(h HeadStore, key []byte, timeout time.Duration) *headSaver {
	s := &headSaver{heads: h, key: key, timeout: timeout, kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	go s.run()
	return s
}

// offer queues cp to be recorded; a later offer replaces it.
func (s *headSaver) offer(cp Checkpoint) {
	s.mu.Lock()
	s.pending = &cp
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *headSaver) run() {
	defer close(s.done)
	for range s.kick {
		s.mu.Lock()
		cp := s.pending
		s.pending = nil
		s.mu.Unlock()
		if cp == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := s.heads.SaveHead(ctx, cp.seal(s.key))
		cancel()
		s.mu.Lock()
		s.attempted = max(s.attempted, cp.Seq)
		if err == nil {
			s.saved = max(s.saved, cp.Seq)
			s.saves++
		} else {
			s.failures++
			err = fmt.Errorf("audit: recording the head (seq %d): %w", cp.Seq, err)
		}
		s.lastErr = err
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// wait returns once a save for seq (or later) was tried: nil if one
// succeeded.
func (s *headSaver) wait(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.attempted < seq && s.saved < seq {
		s.cond.Wait()
	}
	if s.saved >= seq {
		return nil
	}
	return s.lastErr
}

// stop ends the saver after the pending save.
func (s *headSaver) stop() {
	close(s.kick)
	<-s.done
}

func (s *headSaver) stats() (saves, failures, saved uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves, s.failures, s.saved, s.lastErr
}

// headCheck compares the log's end with a recorded head. lastSeq is the
// last line's seq; at is the hash of the line at want.Seq when the log
// holds it (found). It returns the incident reason and fields, or "".
func headCheck(want Checkpoint, lastSeq uint64, found bool, at [sha256.Size]byte) (reason string, fields map[string]string) {
	fields = map[string]string{
		"recorded_seq":  fmt.Sprint(want.Seq),
		"recorded_file": want.File,
		"recorded_at":   want.Time.UTC().Format(time.RFC3339),
	}
	switch {
	case lastSeq < want.Seq:
		fields["first_missing"] = fmt.Sprint(lastSeq + 1)
		fields["last_missing"] = fmt.Sprint(want.Seq)
		return "log_ends_before_recorded_head", fields
	case found && hex.EncodeToString(at[:]) != want.Hash:
		return "recorded_head_replaced", fields
	}
	return "", nil
}

// truncationText describes an [ActionTruncated] incident or a failed head
// check for people.
func truncationText(reason string, f map[string]string) string {
	switch reason {
	case "log_ends_before_recorded_head":
		return fmt.Sprintf("log truncated: lines %s–%s are missing (recorded head at %s, in %s)",
			f["first_missing"], f["last_missing"], f["recorded_at"], f["recorded_file"])
	case "recorded_head_replaced":
		return fmt.Sprintf("log truncated and rewritten: the line at seq %s is not the recorded head (recorded at %s, in %s): the log was cut back before it and written again",
			f["recorded_seq"], f["recorded_at"], f["recorded_file"])
	case "recorded_head_missing":
		return "log truncated: no head is recorded in the store although the log's anchors say one was (the store's " + HeadMetaKey + " was removed, or the store was restored from before the first recorded head)"
	case "recorded_head_invalid":
		return "the recorded head in the store did not verify when the log was opened: " + f["error"]
	}
	return "log truncated: " + reason
}

// loadHead reads and checks the recorded head for Open. A head that does
// not verify is not an error (the log still opens) but an incident.
func (l *Log) loadHead(ctx context.Context) (*Checkpoint, *Event, error) {
	b, err := l.opts.Heads.LoadHead(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("audit: open: reading the recorded head: %w", err)
	}
	if b == nil {
		return nil, nil, nil
	}
	cp, err := OpenCheckpoint(b, l.key)
	if err != nil {
		return nil, &Event{Action: ActionTruncated, Outcome: OutcomeFailure, Reason: "recorded_head_invalid",
			Fields: map[string]string{"error": err.Error()}}, nil
	}
	return &cp, nil, nil
}

// checkHead compares the resumed chain with the recorded head: an
// incident when the log ends before it, holds another line at its seq, or
// no head is recorded although the log's anchors say one was.
func (l *Log) checkHead(want *Checkpoint) *Event {
	if want == nil {
		if l.w.marked {
			return &Event{Action: ActionTruncated, Outcome: OutcomeFailure, Reason: "recorded_head_missing"}
		}
		return nil
	}
	reason, fields := headCheck(*want, l.w.seq, l.w.wantFound, l.w.wantHash)
	if reason == "" {
		return nil
	}
	return &Event{Action: ActionTruncated, Outcome: OutcomeFailure, Reason: reason, Fields: fields}
}

// checkpoint is the writer's current head (writer goroutine, or after it
// exited).
func (l *Log) checkpoint() Checkpoint {
	return Checkpoint{Seq: l.w.seq, Hash: hex.EncodeToString(l.w.head[:]), File: l.w.fileName(), Time: l.opts.Clock()}
}

// offerHead queues the writer's head, an anchor line, to be recorded
// unless it is already recorded or queued.
func (l *Log) offerHead() {
	s := l.heads
	if s == nil || l.w.seq == 0 || l.w.sinceAnchor != 0 {
		return
	}
	s.mu.Lock()
	skip := s.saved >= l.w.seq || (s.pending != nil && s.pending.Seq >= l.w.seq)
	s.mu.Unlock()
	if !skip {
		s.offer(l.checkpoint())
	}
}

// closeHeads stops the saver and, if the final head is not recorded yet,
// records it now (Close, after the writer exited).
func (l *Log) closeHeads(ctx context.Context) error {
	s := l.heads
	s.stop()
	if l.w.seq == 0 || l.w.sinceAnchor != 0 {
		return nil // nothing anchored to record (the final write failed)
	}
	if _, _, saved, _ := s.stats(); saved >= l.w.seq {
		return nil
	}
	if err := s.heads.SaveHead(ctx, l.checkpoint().seal(s.key)); err != nil {
		return fmt.Errorf("audit: close: recording the head (seq %d): %w", l.w.seq, err)
	}
	s.mu.Lock()
	s.saved, s.attempted = l.w.seq, l.w.seq
	s.saves++
	s.lastErr = nil
	s.mu.Unlock()
	return nil
}
