package audit

import (
	"bufio"
	"bytes"
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// OwnerEvent is one audit line about an owner's records, as the owner may
// see it: what happened, when, and the line's place in the hash chain (its
// seq and SHA-256), by which the line — and the signed anchor after it —
// can be found in any copy of the log. Who asked (actor) and from where
// (remote) are left out: a refusal's address may be someone else's.
type OwnerEvent struct {
	Seq        uint64 `json:"seq"`
	Line       string `json:"line"` // hex SHA-256 of the audit line
	Time       string `json:"time"`
	Action     string `json:"action"`
	Outcome    string `json:"outcome,omitempty"`
	Method     string `json:"method,omitempty"`
	Reason     string `json:"reason,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	KeyVersion string `json:"key_version,omitempty"`
}

// OwnerIndex finds an owner's lines in the audit directory. It reads the
// files themselves, never the writer's state: it costs the writer
// nothing. The first query reads every file once; each later query reads
// only what was appended since, so retention is the log's own (a removed
// file's lines are no longer listed). Safe for concurrent use.
//
// Its memory is bounded ([OwnerIndexLimits]): it keeps at most MaxRefs
// line references in all (the owners written or asked for least recently
// are dropped first) and the newest PerOwner of each owner. An owner
// dropped from memory is found again by reading the files once more when
// asked for, so a query still sees every event of its owner that the log
// retains, up to the newest PerOwner.
//
// Such a read of the files (a scan) runs outside the index's lock, at most
// one per owner at a time (concurrent queries for that owner wait for it
// and share its result) and at most MaxScans in all: a query that needs a
// scan when all are taken waits up to ScanWait, then fails with
// [ErrOwnerIndexBusy]. What a scan finds is remembered, "no lines" too, so
// asking again and again for an owner with no lines reads the files once.
type OwnerIndex struct {
	dir string
	lim OwnerIndexLimits

	mu      sync.Mutex
	file    int   // index of the file read last
	off     int64 // bytes of it read (complete lines only)
	owners  map[string]*ownerEntry
	lru     list.List // of *ownerEntry, most recently written or asked for first
	total   int       // references held
	dropped bool      // an owner was dropped: one not in memory may have lines
	// inflight: the scans running, by owner; nwait: queries waiting for one.
	inflight map[string]*ownerScan
	nwait    int

	slots    chan struct{} // a scan holds one
	scanWait time.Duration
	nscans   atomic.Int64 // scans started (tests)
	scanHook func(string) // called as a scan starts, outside the lock (tests)
}

// ErrOwnerIndexBusy: the query needed a read of the audit files, and as
// many as the index allows were running for other owners; retry later.
var ErrOwnerIndexBusy = errors.New("audit: owner index busy: too many owners are being looked up in the files; retry later")

// ownerScan is a scan of one owner's lines running outside the lock.
type ownerScan struct {
	// file and off: it reads up to off bytes into file, where the index
	// had read when it began.
	file  int
	off   int64
	extra []ownerRef // the owner's lines the index read after that, meanwhile
	done  chan struct{}
	err   error // set before done is closed
}

// OwnerIndexLimits bound an [OwnerIndex]'s memory and its reads of the
// files for owners not in memory.
type OwnerIndexLimits struct {
	// MaxRefs is the most line references kept (≈16 bytes each, plus the
	// owner id once per owner; an owner counts as one more reference, so
	// owners remembered with no lines are bounded too); default
	// DefaultOwnerIndexRefs.
	MaxRefs int
	// MaxScans is the most reads of the files for owners not in memory
	// that run at once; default DefaultOwnerIndexScans.
	MaxScans int
	// ScanWait is how long a query that needs such a read waits for one
	// to end when MaxScans run; default DefaultOwnerIndexScanWait.
	ScanWait time.Duration
	// PerOwner is the most kept per owner, the newest: an owner's older
	// events are not listed (retention of the event list). Default
	// DefaultOwnerIndexPerOwner; at most MaxRefs/2.
	PerOwner int
}

// Defaults of [OwnerIndexLimits].
const (
	DefaultOwnerIndexRefs     = 1 << 18
	DefaultOwnerIndexPerOwner = 1000
	DefaultOwnerIndexScans    = 2
	DefaultOwnerIndexScanWait = 2 * time.Second
)

type ownerEntry struct {
	owner string
	refs  []ownerRef
	// complete: refs hold every line of the owner read so far (the newest
	// PerOwner of them). An entry made after another owner was dropped may
	// miss lines read while this owner was not in memory.
	complete bool
	elem     *list.Element
}

type ownerRef struct {
	file int
	off  int64
	n    int32
}

// NewOwnerIndex indexes the audit directory dir with the default limits.
func NewOwnerIndex(dir string) *OwnerIndex { return NewOwnerIndexLimits(dir, OwnerIndexLimits{}) }

// NewOwnerIndexLimits indexes the audit directory dir within lim.
func NewOwnerIndexLimits(dir string, lim OwnerIndexLimits) *OwnerIndex {
	if lim.MaxRefs <= 0 {
		lim.MaxRefs = DefaultOwnerIndexRefs
	}
	if lim.PerOwner <= 0 {
		lim.PerOwner = DefaultOwnerIndexPerOwner
	}
	if lim.MaxScans <= 0 {
		lim.MaxScans = DefaultOwnerIndexScans
	}
	if lim.ScanWait <= 0 {
		lim.ScanWait = DefaultOwnerIndexScanWait
	}
	lim.PerOwner = max(1, min(lim.PerOwner, lim.MaxRefs/2)) // an owner holds up to twice PerOwner between trims
	return &OwnerIndex{dir: dir, lim: lim, owners: map[string]*ownerEntry{}, inflight: map[string]*ownerScan{},
		slots: make(chan struct{}, lim.MaxScans), scanWait: lim.ScanWait}
}

// scanCount reports the scans started (tests).
func (x *OwnerIndex) scanCount() int64 { return x.nscans.Load() }

// waiting reports the queries waiting for another's scan (tests).
func (x *OwnerIndex) waiting() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.nwait
}

// size reports the references (an owner counting as one) and owners held
// (tests).
func (x *OwnerIndex) size() (refs, owners int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.total, len(x.owners)
}

// add records a line of owner read by refresh.
func (x *OwnerIndex) add(owner string, r ownerRef) {
	if s := x.inflight[owner]; s != nil { // read after the scan's end: kept for it
		if s.extra = append(s.extra, r); len(s.extra) >= 2*x.lim.PerOwner {
			s.extra = append(s.extra[:0], s.extra[len(s.extra)-x.lim.PerOwner:]...)
		}
	}
	e := x.owners[owner]
	if e == nil {
		e = &ownerEntry{owner: owner, complete: !x.dropped}
		e.elem = x.lru.PushFront(e)
		x.owners[owner] = e
		x.total++ // the owner itself
	} else {
		x.lru.MoveToFront(e.elem)
	}
	e.refs = append(e.refs, r)
	x.total++
	if len(e.refs) >= 2*x.lim.PerOwner { // trimmed in steps: a busy owner's line costs no copy each
		n := copy(e.refs, e.refs[len(e.refs)-x.lim.PerOwner:])
		x.total -= len(e.refs) - n
		e.refs = e.refs[:n]
	}
	x.evict()
}

// set replaces owner's references with a complete list read from the
// files. An empty list is remembered too: the owner has no lines (the
// ones written later are added as they are read).
func (x *OwnerIndex) set(owner string, refs []ownerRef) *ownerEntry {
	if e := x.owners[owner]; e != nil {
		x.remove(e)
	}
	e := &ownerEntry{owner: owner, refs: refs, complete: true}
	e.elem = x.lru.PushFront(e)
	x.owners[owner] = e
	x.total += 1 + len(refs)
	x.evict()
	return e
}

func (x *OwnerIndex) remove(e *ownerEntry) {
	x.lru.Remove(e.elem)
	delete(x.owners, e.owner)
	x.total -= 1 + len(e.refs)
}

// evict drops the least recently used owners until the references fit
// (the most recent one always stays: it holds fewer than 2·PerOwner
// references, and counts one more, ≤ MaxRefs).
func (x *OwnerIndex) evict() {
	for x.total > x.lim.MaxRefs && x.lru.Len() > 1 {
		x.remove(x.lru.Back().Value.(*ownerEntry))
		x.dropped = true
	}
}

// Events returns the owner's events, newest first, at most limit (and only
// those with a seq below before, when before > 0).
func (x *OwnerIndex) Events(owner string, limit int, before uint64) ([]OwnerEvent, error) {
	if owner == "" || limit <= 0 {
		return nil, nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.refresh(); err != nil {
		return nil, err
	}
	e, err := x.entry(owner)
	if e == nil || err != nil {
		return nil, err
	}
	refs := e.refs
	if len(refs) > x.lim.PerOwner {
		refs = refs[len(refs)-x.lim.PerOwner:]
	}
	open := map[int]*os.File{}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	var out []OwnerEvent
	var gone []int
	for i := len(refs) - 1; i >= 0 && len(out) < limit; i-- {
		r := refs[i]
		f, ok := open[r.file]
		if !ok {
			var err error
			if f, err = os.Open(filepath.Join(x.dir, fileName(r.file))); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					gone = append(gone, i) // removed for retention
					continue
				}
				return nil, err
			}
			open[r.file] = f
		}
		line := make([]byte, r.n)
		if _, err := f.ReadAt(line, r.off); err != nil {
			return nil, err
		}
		var v struct {
			Seq       uint64            `json:"seq"`
			Time      string            `json:"time"`
			Action    string            `json:"action"`
			Outcome   string            `json:"outcome"`
			Owner     string            `json:"owner"`
			Method    string            `json:"method"`
			Reason    string            `json:"reason"`
			RequestID string            `json:"request_id"`
			Fields    map[string]string `json:"fields"`
		}
		if json.Unmarshal(line, &v) != nil || v.Owner != owner {
			continue // the file changed under the index: never show another owner's line
		}
		if before > 0 && v.Seq >= before {
			continue
		}
		sum := sha256.Sum256(line)
		out = append(out, OwnerEvent{Seq: v.Seq, Line: hex.EncodeToString(sum[:]), Time: v.Time, Action: v.Action,
			Outcome: v.Outcome, Method: v.Method, Reason: v.Reason, RequestID: v.RequestID, KeyVersion: v.Fields["key_version"]})
	}
	if len(gone) > 0 {
		n := len(e.refs)
		e.refs = slices.DeleteFunc(e.refs, func(r ownerRef) bool {
			_, err := os.Stat(filepath.Join(x.dir, fileName(r.file)))
			return errors.Is(err, os.ErrNotExist)
		})
		x.total -= n - len(e.refs) // kept when empty: the owner has no lines left
	}
	return out, nil
}

// entry returns owner's complete entry, scanning the files for it when
// the owner may have lines the index does not hold, or nil when the owner
// has never been written. Called with x.mu held; a scan runs without it.
func (x *OwnerIndex) entry(owner string) (*ownerEntry, error) {
	for {
		e := x.owners[owner]
		if e == nil && !x.dropped {
			return nil, nil // never written
		}
		if e != nil && e.complete {
			x.lru.MoveToFront(e.elem)
			return e, nil
		}
		if s := x.inflight[owner]; s != nil { // another query scans for this owner: share its result
			x.nwait++
			x.mu.Unlock()
			<-s.done
			x.mu.Lock()
			x.nwait--
			if s.err != nil {
				return nil, s.err
			}
			continue
		}
		if err := x.scanFor(owner); err != nil {
			return nil, err
		}
	}
}

// scanFor reads owner's lines from the files, up to where the index has
// read now, outside x.mu (held on entry and on return), and makes them
// owner's complete entry with the lines the index read meanwhile.
func (x *OwnerIndex) scanFor(owner string) error {
	s := &ownerScan{file: x.file, off: x.off, done: make(chan struct{})}
	x.inflight[owner] = s
	x.mu.Unlock()
	refs, err := x.scanSlot(owner, s.file, s.off)
	x.mu.Lock()
	delete(x.inflight, owner)
	if err == nil {
		refs = append(refs, s.extra...)
		if len(refs) > x.lim.PerOwner {
			refs = append(refs[:0], refs[len(refs)-x.lim.PerOwner:]...)
		}
		x.set(owner, slices.Clip(refs))
	}
	s.err = err
	close(s.done)
	return err
}

// scanSlot runs scanOwner in one of the scan slots, waiting up to
// scanWait for one.
func (x *OwnerIndex) scanSlot(owner string, file int, off int64) ([]ownerRef, error) {
	select {
	case x.slots <- struct{}{}:
	default:
		t := time.NewTimer(x.scanWait)
		select {
		case x.slots <- struct{}{}:
			t.Stop()
		case <-t.C:
			return nil, ErrOwnerIndexBusy
		}
	}
	defer func() { <-x.slots }()
	x.nscans.Add(1)
	if x.scanHook != nil {
		x.scanHook(owner)
	}
	return x.scanOwner(owner, file, off)
}

var ownerKey = []byte(`"owner":"`)

// refresh reads the complete lines appended since the last call.
func (x *OwnerIndex) refresh() error {
	files, err := listFiles(x.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, af := range files {
		if af.index < x.file {
			continue
		}
		if af.index > x.file {
			x.file, x.off = af.index, 0
		}
		end, err := x.scan(af, x.off, -1, "", x.add)
		if err != nil {
			return err
		}
		x.off = end
	}
	return nil
}

// scanOwner reads owner's lines from the files, up to off bytes into file
// (where the index had read): what an owner dropped from memory had (the
// newest PerOwner). It reads no state under x.mu.
func (x *OwnerIndex) scanOwner(owner string, file int, off int64) ([]ownerRef, error) {
	files, err := listFiles(x.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var refs []ownerRef
	for _, af := range files {
		if af.index > file {
			break
		}
		limit := int64(-1)
		if af.index == file {
			limit = off
		}
		if _, err := x.scan(af, 0, limit, owner, func(_ string, r ownerRef) {
			if refs = append(refs, r); len(refs) > 2*x.lim.PerOwner {
				refs = append(refs[:0], refs[len(refs)-x.lim.PerOwner:]...)
			}
		}); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed for retention meanwhile
			}
			return nil, err
		}
	}
	if len(refs) > x.lim.PerOwner {
		refs = append(refs[:0], refs[len(refs)-x.lim.PerOwner:]...)
	}
	return slices.Clip(refs), nil
}

// scan reads the complete lines of af from off (up to limit bytes into the
// file, or to its end with limit < 0) and calls fn for each owner's line
// (only owner's when owner is set). It returns the offset after the last
// complete line read.
func (x *OwnerIndex) scan(af auditFile, off, limit int64, owner string, fn func(string, ownerRef)) (int64, error) {
	f, err := os.Open(filepath.Join(x.dir, af.name))
	if err != nil {
		return off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off, err
	}
	var want []byte // a quick filter, when the owner needs no escaping in JSON
	if j, _ := json.Marshal(owner); owner != "" && string(j) == `"`+owner+`"` {
		want = j
	}
	br := bufio.NewReaderSize(f, MaxLineBytes)
	for limit < 0 || off < limit {
		raw, err := br.ReadSlice('\n')
		if err != nil {
			break // EOF or a partial last line (being written): read it next time
		}
		line := raw[:len(raw)-1]
		if bytes.Contains(line, ownerKey) && (want == nil || bytes.Contains(line, want)) {
			var v struct {
				Owner string `json:"owner"`
			}
			if json.Unmarshal(line, &v) == nil && v.Owner != "" && (owner == "" || v.Owner == owner) {
				fn(v.Owner, ownerRef{file: af.index, off: off, n: int32(len(line))})
			}
		}
		off += int64(len(raw))
	}
	return off, nil
}
