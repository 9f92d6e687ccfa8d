package audit

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keywarden/keywarden/receipt"
)

var fileNameRE = regexp.MustCompile(`^audit-([0-9]{6,9})\.jsonl$`)

func fileName(index int) string { return fmt.Sprintf("audit-%06d.jsonl", index) }

// auditFile is one audit file found in the directory.
type auditFile struct {
	index int
	name  string
}

// listFiles returns the audit files in dir in chain order.
func listFiles(dir string) ([]auditFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []auditFile
	for _, e := range entries {
		m := fileNameRE.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		files = append(files, auditFile{index: n, name: e.Name()})
	}
	slices.SortFunc(files, func(a, b auditFile) int { return a.index - b.index })
	return files, nil
}

// writer is the state the writer goroutine owns.
// linkCheckEvery bounds how long a deleted audit file can go unnoticed by
// written-only batches.
const linkCheckEvery = 50 * time.Millisecond

type writer struct {
	fmu          sync.Mutex // guards f against the syncer while it is replaced or closed
	scratch      []byte     // the last batch's buffer, reused by the next (write)
	linkChecked  time.Time  // last checkLinked
	dir          string
	f            *os.File // nil: the next batch opens a new file
	index        int      // of f, or of the last file
	size         int64    // bytes of f known to be good
	unsynced     bool     // f has lines written without fsync
	seq          uint64
	head         [sha256.Size]byte
	sinceAnchor  int
	reserve      *reserve   // nil when disabled
	lowSpace     bool       // the reserve was released
	lowSpaceUsed int64      // bytes written since
	lowSpaceErr  error      // why
	durable      durability // which written lines are durable (RecordPending)

	// What resume found about the recorded head it was given.
	wantFound bool              // the last file holds the line at its seq
	wantHash  [sha256.Size]byte // that line's hash
	marked    bool              // an anchor of the last file says heads are recorded
}

func (w *writer) fileName() string {
	if w.index == 0 {
		return ""
	}
	return fileName(w.index)
}

// resume finds the end of the chain in dir, repairs an incomplete last
// line, opens the last file for appending, and returns the events to record
// about what it found.
func (w *writer) resume(dir string, key []byte, want *Checkpoint) ([]Event, error) {
	w.dir = dir
	files, err := listFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	if len(files) == 0 {
		return nil, nil
	}
	w.index = files[len(files)-1].index
	// The chain ends in the last file with a line; later files are empty
	// (created just before a failure).
	var notes []Event
	for i := len(files) - 1; i >= 0; i-- {
		path := filepath.Join(dir, files[i].name)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("audit: open: %w", err)
		}
		if fi.Size() == 0 {
			continue
		}
		c := newChain(key, nil)
		c.want = want
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("audit: open: %w", err)
		}
		good, brk, err := c.file(files[i].name, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("audit: open: reading %s: %w", files[i].name, err)
		}
		if brk == nil {
			brk = c.finish(false)
		}
		if brk != nil && brk.Kind == KindIncomplete && good >= 0 {
			if err := os.Truncate(path, good); err != nil {
				return nil, fmt.Errorf("audit: open: cutting the incomplete last line of %s: %w", files[i].name, err)
			}
			notes = append(notes, Event{Action: ActionTailRepaired, Outcome: OutcomeWarning,
				Reason: "incomplete_last_line", Fields: map[string]string{
					"file": files[i].name, "line": strconv.Itoa(brk.Line), "bytes_cut": strconv.FormatInt(fi.Size()-good, 10)}})
			brk = c.finish(false)
		}
		if brk != nil {
			return nil, fmt.Errorf("audit: open: %w: %s", ErrBroken, brk)
		}
		if c.lines == 0 {
			continue // held only the incomplete line just cut
		}
		w.seq, w.head, w.sinceAnchor = c.seq, c.head, c.sinceAnchor
		w.wantFound, w.wantHash, w.marked = c.wantFound, c.wantHash, c.marked
		if c.sinceAnchor > 0 {
			notes = append(notes, Event{Action: ActionTailUnanchored, Outcome: OutcomeWarning,
				Reason: "previous_run_ended_without_anchor", Fields: map[string]string{
					"file": files[i].name, "lines": strconv.Itoa(c.sinceAnchor),
					"first_seq": strconv.FormatUint(c.seq-uint64(c.sinceAnchor)+1, 10)}})
		}
		break
	}
	last := filepath.Join(dir, fileName(w.index))
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return notes, nil
}

// run is the writer goroutine.
func (l *Log) run() {
	defer close(l.done)
	ticker := time.NewTicker(l.opts.AnchorInterval)
	defer ticker.Stop()
	var reqs []*request
	var refs []Event
	for {
		anchor := false
		select {
		case r := <-l.reqs:
			reqs = append(reqs, r)
		case ev := <-l.refusals:
			refs = append(refs, ev)
		case <-ticker.C:
			anchor = l.w.sinceAnchor > 0 || l.sampler.pendingSkipped()
		case fn := <-l.inject:
			fn()
			continue
		case <-l.closing:
			reqs, refs = l.drain(reqs, refs)
			l.closeErr = l.commit(reqs, refs, true)
			close(l.syncKick)
			<-l.syncDone
			close(l.signReqs)
			if l.w.f != nil {
				if err := l.w.f.Close(); err != nil && l.closeErr == nil {
					l.closeErr = fmt.Errorf("audit: close: %w", err)
				}
			}
			return
		}
		reqs, refs = l.drain(reqs, refs)
		if len(reqs) > 0 && len(reqs) < 16 && allWritten(reqs) {
			// Give requests being served right now a moment to join this
			// batch: one write instead of several.
			runtime.Gosched()
			reqs, refs = l.drain(reqs, refs)
		}
		_ = l.commit(reqs, refs, anchor)
		if n := l.opts.AnchorLines; n > 0 && l.w.sinceAnchor >= n {
			_ = l.commit(nil, nil, true) // an anchor of its own: no Record of that batch waits for it
		}
		clear(reqs)
		clear(refs)
		reqs, refs = reqs[:0], refs[:0]
	}
}

// drain takes every line already waiting: they share one write and fsync.
func (l *Log) drain(reqs []*request, refs []Event) ([]*request, []Event) {
	for {
		select {
		case r := <-l.reqs:
			reqs = append(reqs, r)
		case ev := <-l.refusals:
			refs = append(refs, ev)
		default:
			return reqs, refs
		}
	}
}

// commit writes one batch: the events of reqs (durable), the refusal lines
// refs (not synced unless something else is), and an anchor if asked for or
// if an Anchor call is among reqs. It answers every request it takes.
func (l *Log) commit(reqs []*request, refs []Event, anchor bool) error {
	if perr := l.syncErr.Swap(nil); perr != nil {
		// A background fsync failed: what it covered may be lost. Never
		// write to that file again; the next batch starts a new one and
		// says so first.
		l.w.dropFile(*perr)
		l.setErr(*perr)
		l.pendingNotes = append(l.pendingNotes, Event{Action: ActionFsyncFailed, Outcome: OutcomeFailure,
			Reason: "fsync_failed", Time: l.opts.Clock(), Fields: map[string]string{"error": (*perr).Error()}})
	}
	var events, anchorWaiters []*request
	for _, r := range reqs {
		if !r.state.CompareAndSwap(reqPending, reqTaken) {
			continue // its caller gave up: never written
		}
		if r.anchor {
			anchor = true
			anchorWaiters = append(anchorWaiters, r)
		} else {
			events = append(events, r)
		}
	}
	if anchor && l.w.sinceAnchor == 0 && len(events) == 0 && len(refs) == 0 && !l.sampler.pendingSkipped() && l.w.seq > 0 {
		anchor = false // the head is anchored already
		l.offerHead()
		for _, r := range anchorWaiters {
			r.seq = l.w.seq
		}
		l.answer(anchorWaiters, nil)
		anchorWaiters = nil
	}
	if len(events) == 0 && len(refs) == 0 && !anchor && len(l.pendingNotes) == 0 {
		return nil
	}
	l.busySince.Store(time.Now().UnixNano())

	// Events refused for lack of space, answered with the others at the
	// end, once the health state is set.
	var refused []*request
	notes := l.pendingNotes
	l.pendingNotes = nil
	if l.w.lowSpace {
		if err := l.w.reserve.allocate(); err == nil {
			l.w.lowSpace, l.w.lowSpaceErr = false, nil
			notes = append(notes, Event{Action: ActionSpaceRestored, Outcome: OutcomeSuccess,
				Reason: "reserve_allocated", Time: l.opts.Clock()})
		} else {
			refused, events = events, nil
		}
	}
	err := l.write(notes, events, refs, anchor)
	if err != nil {
		l.writeErrors.Add(1)
	}
	if err != nil && isNoSpace(err) && l.w.reserve != nil && !l.w.lowSpace {
		// The disk is full: refuse the events (their callers refuse the
		// actions), free the reserve and say so in the space it frees.
		l.w.lowSpace, l.w.lowSpaceUsed = true, 0
		l.w.lowSpaceErr = fmt.Errorf("%w: %w", ErrDiskFull, err)
		refused, events = append(refused, events...), nil
		if rerr := l.w.reserve.release(); rerr != nil {
			err = errors.Join(err, rerr)
		} else {
			notes = []Event{{Action: ActionDiskFull, Outcome: OutcomeFailure, Reason: "no_space",
				Time: l.opts.Clock(), Fields: map[string]string{"error": err.Error()}}}
			if err = l.write(notes, nil, refs, anchor); err != nil {
				l.writeErrors.Add(1)
			}
		}
	}
	l.busySince.Store(0)
	if err != nil {
		l.sampler.unwritten(nil, refs)
	}
	switch {
	case err != nil:
		l.setErr(err)
	case l.w.lowSpace:
		l.setErr(l.w.lowSpaceErr)
	default:
		l.setErr(nil)
	}
	l.publish()
	if len(refused) > 0 {
		l.answer(refused, unavailable(l.w.lowSpaceErr))
	}
	l.answer(events, wrapUnavailable(err))
	for _, r := range anchorWaiters {
		r.seq = l.w.seq
	}
	l.answer(anchorWaiters, wrapUnavailable(err))
	return err
}

func wrapUnavailable(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
}

func (l *Log) answer(reqs []*request, err error) {
	for _, r := range reqs {
		if r.written && r.answered {
			continue // answered after the write (RecordWritten)
		}
		if err == nil && r.wantReceipt {
			l.signReqs <- r // answered by the receipt signer
			continue
		}
		r.done <- err
	}
}

// write encodes and writes one batch: notes and events (durable), sampled
// refusal lines, and an anchor last. On error nothing of it counts: the
// chain state is unchanged, the file is cut back, and the skipped counts
// wait for the next line (the caller accounts for refs).
func (l *Log) write(notes []Event, events []*request, refs []Event, anchor bool) error {
	b := batch{buf: l.w.scratch[:0], seq: l.w.seq, head: l.w.head, sinceAnchor: l.w.sinceAnchor, skipped: l.sampler.takeSkipped(), signer: l.opts.Signer}
	// The buffer is written (or dropped) before write returns: the next
	// batch reuses it, unless a burst made it large.
	defer func() {
		if cap(b.buf) <= maxScratchBytes {
			l.w.scratch = b.buf[:0]
		}
	}()
	fail := func(err error) error {
		l.sampler.unwritten(b.skipped, nil)
		return err
	}
	key := l.key.Reveal()
	for _, n := range notes {
		if err := b.add(eventLine(n), key); err != nil {
			return fail(err)
		}
	}
	for _, r := range events {
		if err := b.add(eventLine(r.ev), key); err != nil {
			return fail(err) // cannot happen: Record checked the size
		}
		r.lineSeq, r.lineHash = b.seq, b.head
	}
	b.sync = b.lines > 0
	b.async = len(notes) == 0 && len(events) > 0
	for _, r := range events {
		if !r.written {
			b.async = false
		}
	}
	var sampled, dropped []Event
	for _, ev := range refs {
		// In low space, refusal lines may use half the reserve; anchors
		// and notes keep the rest.
		if l.w.lowSpace && l.w.lowSpaceUsed+int64(len(b.buf)) >= l.w.reserve.size/2 {
			dropped = append(dropped, ev)
			continue
		}
		if err := b.add(eventLine(ev), key); err != nil {
			dropped = append(dropped, ev)
			continue
		}
		sampled = append(sampled, ev)
	}
	if anchor {
		a := wireLine{Type: typeAnchor, Time: formatTime(l.opts.Clock())}
		if l.heads != nil {
			a.Fields = map[string]string{headField: headRecorded}
		}
		if l.opts.Signer != nil {
			a.V, a.Node, a.Cert = anchorVersionSigned, l.opts.Node, l.certB64
		}
		if err := b.add(a, key); err != nil {
			return fail(err)
		}
		b.sync, b.async = true, false
	}

	if b.lines == 0 {
		l.sampler.unwritten(b.skipped, dropped)
		return nil
	}
	if l.w.lowSpace && l.w.lowSpaceUsed+int64(len(b.buf)) > l.w.reserve.size {
		return fail(fmt.Errorf("%w: the reserve of %d bytes is used up", ErrDiskFull, l.w.reserve.size))
	}
	// Requests that wait only for the write are answered between the
	// write and the fsync (RecordWritten).
	afterWrite := func() {
		for _, r := range events {
			if r.written {
				r.answered = true
				if r.wantReceipt {
					l.signReqs <- r // answered by the receipt signer
				} else {
					r.done <- nil
				}
			}
		}
	}
	if anyPending(events) {
		l.w.linkChecked = time.Time{} // a store waits on this line: check its file as a durable batch does
	}
	if err := l.w.writeBatch(&b, l.opts.MaxFileBytes, afterWrite); err != nil {
		return fail(err)
	}
	switch {
	case b.sync && b.async:
		if anyPending(events) {
			l.w.durable.urgent.Store(true)
		}
		select {
		case l.syncKick <- struct{}{}:
		default: // an fsync is already asked for; it will cover this batch
		}
	case b.sync:
		l.fsyncs.Add(1)
	}
	l.sampler.unwritten(nil, dropped)
	l.sampler.wrote(len(sampled))
	l.lines.Add(uint64(b.lines))
	l.anchors.Add(uint64(b.anchors))
	if anchor {
		// The anchor is the batch's last line and durable: record it
		// outside the log, in the background.
		l.offerHead()
	}
	l.batches.Add(1)
	if l.w.lowSpace {
		l.w.lowSpaceUsed += int64(len(b.buf))
	}
	return nil
}

// maxScratchBytes bounds the batch buffer the writer keeps between batches.
const maxScratchBytes = 256 << 10

// writeBatch appends b to the current file (rotating first if it would
// grow past maxBytes) and fsyncs if b.sync. On success it moves the chain
// state forward; on failure it cuts the file back to its last good size or,
// if that fails, drops the file so the next batch starts a new one.
func (w *writer) writeBatch(b *batch, maxBytes int64, afterWrite func()) error {
	if w.f != nil && w.size > 0 && w.size+int64(len(b.buf)) > maxBytes {
		if err := w.closeFile(); err != nil {
			return err
		}
	}
	if w.f == nil {
		if err := w.newFile(); err != nil {
			return err
		}
	}
	// A deleted file is noticed within linkCheckEvery (and on every
	// durable batch): an fstat per written-only batch would cost a
	// syscall per release under load.
	if !b.async || time.Since(w.linkChecked) >= linkCheckEvery {
		w.linkChecked = time.Now()
		if err := w.checkLinked(); err != nil {
			w.dropFile(err)
			return err
		}
	}
	if _, err := w.f.Write(b.buf); err != nil {
		w.cutBack()
		return fmt.Errorf("audit: writing %s: %w", w.fileName(), err)
	}
	if b.sync && b.async {
		// Written-only batch: its callers are answered now; the syncer
		// fsyncs in the background. (Any other batch answers after its
		// own fsync, so a failed fsync that cuts the file back never
		// leaves an answered line behind.)
		if afterWrite != nil {
			afterWrite()
		}
		// The syncer fsyncs in the background; a later durable batch, a
		// rotation or Close also covers these bytes.
		w.unsynced = true
		w.size += int64(len(b.buf))
		w.seq, w.head, w.sinceAnchor = b.seq, b.head, b.sinceAnchor
		w.durable.wrote(w.seq)
		return nil
	}
	if b.sync {
		if err := w.f.Sync(); err != nil {
			// After a failed fsync the state of unsynced pages is unknown:
			// cut back and never write to this file again.
			err = fmt.Errorf("audit: fsync %s: %w", w.fileName(), err)
			w.cutBack()
			w.dropFile(err)
			return err
		}
	}
	w.unsynced = !b.sync
	w.size += int64(len(b.buf))
	w.seq, w.head, w.sinceAnchor = b.seq, b.head, b.sinceAnchor
	w.durable.wrote(w.seq)
	if b.sync {
		w.durable.synced(w.seq)
	}
	return nil
}

// cutBack truncates the file to its last good size; if it cannot, the file
// is dropped.
func (w *writer) cutBack() {
	if w.f == nil {
		return
	}
	if err := w.f.Truncate(w.size); err != nil {
		w.dropFile(err)
	}
}

// dropFile closes the current file without further writes; its lines not
// yet fsynced are lost (why).
func (w *writer) dropFile(why error) {
	w.fmu.Lock()
	defer w.fmu.Unlock()
	if w.f != nil {
		w.durable.failed(fmt.Errorf("audit: %s dropped before its fsync: %w", w.fileName(), why))
		_ = w.f.Close()
		w.f = nil
	}
}

// closeFile syncs (if needed) and closes the current file before rotation.
func (w *writer) closeFile() error {
	w.fmu.Lock()
	defer w.fmu.Unlock()
	if w.unsynced {
		if err := w.f.Sync(); err != nil {
			_ = w.f.Close()
			w.f = nil
			err = fmt.Errorf("audit: fsync %s: %w", w.fileName(), err)
			w.durable.failed(err)
			return err
		}
		w.unsynced = false
		w.durable.synced(w.seq)
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("audit: closing %s: %w", w.fileName(), err)
	}
	return nil
}

// newFile creates the next audit file and makes its name durable.
func (w *writer) newFile() error {
	next := w.index + 1
	files, err := listFiles(w.dir)
	if err != nil {
		return fmt.Errorf("audit: new file: %w", err)
	}
	if len(files) > 0 {
		next = max(next, files[len(files)-1].index+1)
	}
	f, err := os.OpenFile(filepath.Join(w.dir, fileName(next)), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: new file: %w", err)
	}
	if err := syncDir(w.dir); err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: new file: %w", err)
	}
	w.fmu.Lock()
	w.f, w.index, w.size, w.unsynced = f, next, 0, false
	w.fmu.Unlock()
	return nil
}

// checkLinked fails when the current file was deleted: lines written to it
// would be lost.
func (w *writer) checkLinked() error {
	fi, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("audit: %s: %w", w.fileName(), err)
	}
	if n, ok := linkCount(fi); ok && n == 0 {
		return fmt.Errorf("%w: %s", ErrFileRemoved, w.fileName())
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncer makes RecordWritten lines durable in the background: one fsync
// per kick, each covering every batch written before it started, so the
// writer never waits for the disk on their account.
func (l *Log) syncer() {
	defer close(l.syncDone)
	for range l.syncKick {
		urgent := l.w.durable.urgent.Swap(false)
		if d := l.opts.WrittenSyncDelay; d > 0 && !urgent {
			time.Sleep(d) // let more batches join this fsync
		}
		l.w.fmu.Lock()
		f := l.w.f
		var err error
		if f != nil {
			through := l.w.durable.writtenSeq() // written before this fsync starts
			if err = f.Sync(); err == nil {
				l.fsyncs.Add(1)
				l.w.durable.synced(through)
			} else {
				err = fmt.Errorf("audit: background fsync: %w", err)
				l.w.durable.failed(err)
			}
		}
		l.w.fmu.Unlock()
		if err != nil {
			l.syncErr.Store(&err)
			l.setErr(err)
		}
	}
}

func allWritten(reqs []*request) bool {
	for _, r := range reqs {
		if !r.written {
			return false
		}
	}
	return true
}

// receiptSigner answers the written lines that want a receipt: it takes
// every one waiting, Merkle-hashes their statements and signs the root
// once (group commit of signatures). It runs beside the writer, so signing
// never delays a write; a release waits for its line and then for its
// batch's signature.
//
// Under load it waits for more lines before it signs, so that one
// signature serves many releases: within ReceiptSignEvery of the last
// signature it lets the goroutines that can run do so (runtime.Gosched)
// and takes the lines they had written, for as long as each round brings
// new ones, and while lines wait for the writer it blocks for them (up to
// that deadline). A line written after a quiet spell is signed at once,
// and so is one when a round brings nothing and nothing waits for the
// writer: waiting then would only leave the processor idle.
func (l *Log) receiptSigner() {
	defer close(l.signDone)
	var (
		q     = signQueue{in: l.signReqs}
		salts []byte
		last  time.Time
		b     receipt.Builder
	)
	for open := true; open; {
		r, ok := <-l.signReqs
		if !ok {
			return
		}
		q.reqs = append(q.reqs[:0], r)
		open = q.gather(last.Add(l.opts.ReceiptSignEvery), runtime.Gosched, l.linesComing)
		reqs := q.reqs
		last = time.Now()
		// One read of randomness for the batch's owner-hash salts.
		salts = slices.Grow(salts[:0], receipt.SaltSize*len(reqs))[:receipt.SaltSize*len(reqs)]
		_, _ = rand.Read(salts) // crypto/rand does not fail
		b = receipt.Builder{}
		b.Grow(len(reqs))
		first, lastSeq := reqs[0].lineSeq, reqs[0].lineSeq
		for i, r := range reqs {
			b.AddEntry(l.entry(r.ev, r.lineSeq, r.lineHash, [receipt.SaltSize]byte(salts[i*receipt.SaltSize:])))
			first, lastSeq = min(first, r.lineSeq), max(lastSeq, r.lineSeq)
		}
		signed := b.Sign(l.opts.Signer, first, lastSeq, l.opts.Clock())
		l.receipts.Add(uint64(len(reqs)))
		l.receiptBatches.Add(1)
		for i, r := range reqs {
			r.batch, r.leaf = signed, i
			r.done <- nil
		}
		clear(reqs)
	}
}

// linesComing reports whether lines wait for the writer (not counting
// a batch being written or synced): the signer waits for them rather than
// sign without them.
func (l *Log) linesComing() bool { return len(l.reqs) > 0 }

// maxSignBatch bounds the lines one receipt signature covers.
const maxSignBatch = 4096

// signQueue is the receipt signer's batch in the making.
type signQueue struct {
	in    <-chan *request
	reqs  []*request
	timer *time.Timer // wait's, reused
}

// take adds the lines waiting, without blocking; false once the writer
// has closed the queue.
func (q *signQueue) take() bool {
	for len(q.reqs) < maxSignBatch {
		select {
		case r, ok := <-q.in:
			if !ok {
				return false
			}
			q.reqs = append(q.reqs, r)
		default:
			return true
		}
	}
	return true
}

// gather takes the lines waiting and, until the deadline, lets what can
// run do so (yield) and takes what it wrote, for as long as each round
// brings new lines. It reports whether the queue is still open.
func (q *signQueue) gather(until time.Time, yield func(), coming func() bool) bool {
	open := q.take()
	for open && len(q.reqs) < maxSignBatch {
		left := time.Until(until)
		if left <= 0 {
			break
		}
		n := len(q.reqs)
		yield()
		if open = q.take(); len(q.reqs) > n {
			continue
		}
		if !coming() {
			break // nothing more is coming now
		}
		// Lines wait for the writer: block for the next (no spinning),
		// at most until the deadline.
		open = q.wait(left)
	}
	return open
}

// wait blocks until a line arrives or d has passed; false once the writer
// has closed the queue.
func (q *signQueue) wait(d time.Duration) bool {
	if q.timer == nil {
		q.timer = time.NewTimer(d)
	} else {
		q.timer.Reset(d)
	}
	defer q.timer.Stop()
	select {
	case r, ok := <-q.in:
		if !ok {
			return false
		}
		q.reqs = append(q.reqs, r)
	case <-q.timer.C:
	}
	return true
}

// entry is what a receipt states about the event written at seq with
// hash head, its owner hashed under salt.
func (l *Log) entry(ev Event, seq uint64, head [sha256.Size]byte, salt [receipt.SaltSize]byte) receipt.Entry {
	// As the line's JSON has them: invalid UTF-8 replaced.
	e := receipt.Entry{
		Node: validUTF8(l.opts.Node), Seq: seq, Line: head, Time: formatTime(ev.Time),
		Action: validUTF8(ev.Action), Outcome: validUTF8(ev.Outcome), Method: validUTF8(ev.Method),
		KeyVersion: validUTF8(ev.Fields[receipt.FieldKeyVersion]), RequestID: validUTF8(ev.RequestID),
	}
	e.SetOwner(validUTF8(ev.Owner), salt)
	return e
}

// validUTF8 is s as its audit line has it: each byte of invalid UTF-8
// replaced by U+FFFD (as the line's JSON encoding does, byte by byte).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
