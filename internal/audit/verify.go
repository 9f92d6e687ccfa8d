package audit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
)

// Kinds of [Break].
const (
	KindBadLine      = "bad_line"        // not JSON, a missing or malformed field, or longer than MaxLineBytes
	KindIncomplete   = "incomplete_line" // a last line without its newline (a write in progress or interrupted)
	KindSeqGap       = "seq_gap"         // a line removed, added or moved
	KindPrevMismatch = "prev_mismatch"   // a line altered
	KindBadAnchor    = "bad_anchor"      // an anchor whose HMAC does not verify
	KindBadGenesis   = "bad_genesis"     // seq 1 with a prev that is not zero
	KindUnanchored   = "unanchored_tail" // lines after the last anchor
	KindEmpty        = "empty"           // no line at all
	KindTruncated    = "truncated"       // the log ends before (or rewrote) the head recorded outside it
	KindBadHead      = "bad_head"        // the head recorded outside the log does not verify
)

// Position names a line of the log.
type Position struct {
	File string // file name within the audit directory
	Line int    // 1-based line number within File
	Seq  uint64 // the line's seq, 0 when it could not be read
}

func (p Position) String() string {
	if p.Seq == 0 {
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d (seq %d)", p.File, p.Line, p.Seq)
}

// Break is the first entry at which the log fails verification.
type Break struct {
	Position
	Kind   string // one of the Kind constants
	Reason string // for people
}

func (b *Break) String() string {
	if b.File == "" {
		return fmt.Sprintf("%s: %s", b.Kind, b.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", b.Position, b.Kind, b.Reason)
}

// Incident is a line the log wrote about itself (an "audit_…" action): a
// repaired or unanchored tail found at start, a full disk, space restored.
type Incident struct {
	Position
	Action string
	Reason string
	Fields map[string]string
}

// Report is what [Verify] found.
type Report struct {
	Files      []string  // audit files checked, in order
	Lines      int       // lines that verified
	Anchors    int       // anchors that verified
	FirstSeq   uint64    // seq of the first line
	LastSeq    uint64    // seq of the last line that verified
	Head       string    // hex SHA-256 of that line
	Genesis    bool      // the log starts at seq 1: no earlier file was removed
	LastAnchor *Position // the last anchor that verified; nil if none
	Unanchored int       // lines after the last anchor
	Incidents  []Incident
	Broken     *Break      // the first broken entry; nil when the log verifies
	Recorded   *Checkpoint // the recorded head checked by VerifyHead; nil if none
}

// Verify checks the audit log in dir with the anchor key and reports the
// first broken entry. It reads the files in order of their number and checks
// every line:
//
//   - it is complete (ends with a newline), at most MaxLineBytes, and a JSON
//     object with seq, time (RFC 3339), prev (64 hex digits) and type
//     ("event", with an action, or "anchor", with an hmac as its last
//     member) — else [KindBadLine] or [KindIncomplete];
//   - its seq is one more than the line before — else [KindSeqGap] at the
//     line after the gap (a line was removed, inserted or moved);
//   - its prev is the SHA-256 of the line before, across files — else
//     [KindPrevMismatch], reported at the altered line: the earlier line when
//     the later one is intact (its own hash matches the prev of the line after
//     it, or it is a valid anchor), else the later line;
//   - an anchor's HMAC verifies under anchorKey — else [KindBadAnchor]: lines
//     since the previous anchor were recomputed, or the key is wrong;
//   - the first line has seq 1 and a zero prev ([KindBadGenesis] if seq 1
//     has another prev); a first line with a higher seq is accepted with
//     Genesis false (older files were removed, for retention or otherwise).
//
// At the end, the last line must be an anchor: otherwise the lines after the
// last anchor are reported as [KindUnanchored] at the first of them. Those
// lines are hash-chained but not authenticated: whoever can write the disk
// could have cut or rewritten them. A log closed with [Log.Close] ends with
// an anchor; a live log usually has an unanchored tail (call [Log.Anchor]
// first), and so does one whose process crashed (its next Open records an
// [ActionTailUnanchored] incident, listed in Incidents).
//
// The error wraps [ErrUnanchored] for an unanchored tail or an incomplete
// final line, [ErrBroken] for any other break (including an empty log), and
// is an I/O error when the files cannot be read. Cutting the log back to an
// earlier anchor leaves a log that verifies: compare Report.LastSeq and Head
// with a value kept elsewhere ([Log.Head]).
func Verify(dir string, anchorKey secret.Bytes) (Report, error) {
	return verify(dir, anchorKey, nil, false)
}

// VerifyHead is [Verify] that also compares the log with the head recorded
// outside it ([Options.Heads]; recorded as [HeadStore.LoadHead] returns it,
// nil when none is recorded). On top of Verify's checks it fails, with an
// error wrapping [ErrTruncated] and Report.Broken of [KindTruncated]:
//
//   - when the log ends before the recorded head: the reason names the
//     missing range, "log truncated: lines 51–100 are missing (recorded
//     head at …)" — across rotated files, and when every file is gone;
//   - when the line at the recorded head's seq is another line (the log was
//     cut back and written again from there);
//   - when no head is recorded although an anchor of the log says its
//     writer recorded heads (the recorded head was removed).
//
// A log longer than the recorded head (a store restored from an earlier
// backup) verifies, as does one whose files up to the recorded head were
// removed for retention. A recorded head whose MAC does not verify fails
// with [ErrBadHead] ([KindBadHead]). Lines written after the last recorded
// head are covered only by the anchors: cutting them (and their anchors)
// away is not detected; the window is one anchor interval.
func VerifyHead(dir string, anchorKey secret.Bytes, recorded []byte) (Report, error) {
	if recorded == nil {
		return verify(dir, anchorKey, nil, true)
	}
	if anchorKey.Len() < MinAnchorKeyBytes {
		return Report{}, fmt.Errorf("audit: verify: anchor key must be at least %d bytes", MinAnchorKeyBytes)
	}
	cp, herr := OpenCheckpoint(recorded, anchorKey)
	if herr != nil {
		rep, err := verify(dir, anchorKey, nil, false)
		if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrUnanchored) {
			return rep, err
		}
		rep.Broken = &Break{Kind: KindBadHead, Reason: herr.Error()}
		return rep, herr
	}
	return verify(dir, anchorKey, &cp, true)
}

func verify(dir string, anchorKey secret.Bytes, want *Checkpoint, withHead bool) (Report, error) {
	var rep Report
	if anchorKey.Len() < MinAnchorKeyBytes {
		return rep, fmt.Errorf("audit: verify: anchor key must be at least %d bytes", MinAnchorKeyBytes)
	}
	files, err := listFiles(dir)
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	c := newChain(anchorKey.Reveal(), &rep)
	c.want = want
	rep.Recorded = want
	var brk *Break
	endIncomplete := false // an incomplete last line, with nothing after it
	for i, f := range files {
		rep.Files = append(rep.Files, f.name)
		fh, err := os.Open(filepath.Join(dir, f.name))
		if err != nil {
			return rep, fmt.Errorf("audit: verify: %w", err)
		}
		_, brk, err = c.file(f.name, fh)
		fh.Close()
		if err != nil {
			return rep, fmt.Errorf("audit: verify: reading %s: %w", f.name, err)
		}
		if brk != nil {
			endIncomplete = brk.Kind == KindIncomplete && restEmpty(dir, files[i+1:])
			break
		}
	}
	if brk == nil {
		brk = c.finish(true)
	}
	c.fill()
	// At the end of the log, a missing recorded range outranks an
	// unanchored tail or an empty log.
	atEnd := brk == nil || brk.Kind == KindUnanchored || brk.Kind == KindEmpty || endIncomplete
	if want != nil && atEnd {
		if reason, fields := headCheck(*want, c.seq, c.wantFound, c.wantHash); reason != "" {
			pos := c.last
			if reason == "recorded_head_replaced" {
				pos = c.wantPos
			}
			brk = &Break{pos, KindTruncated, truncationText(reason, fields)}
		}
	}
	if withHead && want == nil && atEnd && c.marked {
		brk = &Break{Kind: KindTruncated, Reason: truncationText("recorded_head_missing", nil)}
	}
	if brk == nil || (atEnd && brk.Kind != KindTruncated) {
		// A cut found by the writer at Open, recorded in the log; it comes
		// before an unanchored tail.
		for _, in := range rep.Incidents {
			if in.Action == ActionTruncated {
				brk = &Break{in.Position, KindTruncated, "the log's writer found it truncated when it opened it: " + truncationText(in.Reason, in.Fields)}
				break
			}
		}
	}
	if brk != nil {
		rep.Broken = brk
		switch {
		case brk.Kind == KindUnanchored, endIncomplete && brk.Kind == KindIncomplete:
			return rep, fmt.Errorf("%w: %s", ErrUnanchored, brk)
		case brk.Kind == KindTruncated:
			return rep, fmt.Errorf("%w: %s", ErrTruncated, brk)
		}
		return rep, fmt.Errorf("%w: %s", ErrBroken, brk)
	}
	return rep, nil
}

// restEmpty reports whether all files are empty.
func restEmpty(dir string, files []auditFile) bool {
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, f.name))
		if err != nil || fi.Size() > 0 {
			return false
		}
	}
	return true
}

// chain checks lines in order. Open uses it on the last file, Verify on
// all of them.
type chain struct {
	key     []byte
	rep     *Report // nil: no report (Open)
	started bool
	lines   int
	seq     uint64
	head    [sha256.Size]byte
	last    Position // of the previous line

	// A prev mismatch is blamed once the next line is seen.
	pending *pendingMismatch

	sinceAnchor     int
	lastAnchor      *Position
	firstUnanchored Position

	// want is a recorded head to look for: the hash and position of the
	// line with its seq, when the log holds it.
	want      *Checkpoint
	wantFound bool
	wantHash  [sha256.Size]byte
	wantPos   Position
	// marked: an anchor said its writer records heads ([Options.Heads]).
	marked bool

	// pub, when set, checks anchors by their signatures instead of the
	// HMAC key ([VerifySigned]).
	pub            *pubCheck
	firstTime      string // time of the first line
	lastAnchorTime string // time of the last anchor that verified
}

// anchorOK checks an anchor line. counts is false for an anchor that
// verifies nothing here (an HMAC-only anchor under [VerifySigned]): it is
// then an ordinary chained line.
func (c *chain) anchorOK(raw []byte, v *verifyLine) (ok, counts bool, why string) {
	if c.pub != nil {
		return c.pub.check(raw, v)
	}
	return checkAnchorMAC(raw, c.key), true, ""
}

type pendingMismatch struct {
	here, earlier Break
	hash          [sha256.Size]byte // of the line with the mismatching prev
}

func newChain(key []byte, rep *Report) *chain { return &chain{key: key, rep: rep} }

// verifyLine is the part of a line that verification reads.
type verifyLine struct {
	Seq    *uint64           `json:"seq"`
	Time   string            `json:"time"`
	Prev   string            `json:"prev"`
	Type   string            `json:"type"`
	Action string            `json:"action"`
	Reason string            `json:"reason"`
	Fields map[string]string `json:"fields"`
	HMAC   string            `json:"hmac"`
	V      int               `json:"v"`
	Node   string            `json:"node"`
	Cert   string            `json:"cert"`
}

// file checks the lines read from r. It returns the offset just past the
// last complete line, and the first break (nil when the lines so far are
// good; a pending mismatch is resolved by the next line or by finish).
func (c *chain) file(name string, r io.Reader) (good int64, brk *Break, err error) {
	br := bufio.NewReaderSize(r, MaxLineBytes)
	for n := 1; ; n++ {
		raw, err := br.ReadSlice('\n')
		pos := Position{File: name, Line: n}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return good, c.stop(&Break{pos, KindBadLine, fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}), nil
		case errors.Is(err, io.EOF):
			if len(raw) == 0 {
				return good, nil, nil
			}
			return good, c.stop(&Break{pos, KindIncomplete, "last line has no newline: a write in progress or interrupted"}), nil
		case err != nil:
			return good, nil, err
		}
		if b := c.line(pos, raw[:len(raw)-1]); b != nil {
			return good, b, nil
		}
		good += int64(len(raw))
	}
}

// stop returns b, unless a pending mismatch comes first.
func (c *chain) stop(b *Break) *Break {
	if p := c.pending; p != nil {
		c.pending = nil
		return &p.here
	}
	return b
}

// line checks one line (without its newline).
func (c *chain) line(pos Position, raw []byte) *Break {
	if p := c.pending; p != nil {
		c.pending = nil
		var next struct {
			Prev string `json:"prev"`
		}
		if json.Unmarshal(raw, &next) == nil && next.Prev == hex.EncodeToString(p.hash[:]) {
			return &p.earlier
		}
		return &p.here
	}
	bad := func(why string) *Break { return &Break{pos, KindBadLine, why} }
	var v verifyLine
	if err := json.Unmarshal(raw, &v); err != nil {
		return bad("not a JSON object: " + err.Error())
	}
	if v.Seq == nil || *v.Seq == 0 {
		return bad("no seq (or seq 0)")
	}
	pos.Seq = *v.Seq
	var prev [sha256.Size]byte
	if len(v.Prev) != 2*sha256.Size {
		return &Break{pos, KindBadLine, "prev is not 64 hex digits"}
	}
	if _, err := hex.Decode(prev[:], []byte(v.Prev)); err != nil {
		return &Break{pos, KindBadLine, "prev is not 64 hex digits"}
	}
	if _, err := time.Parse(time.RFC3339Nano, v.Time); err != nil {
		return &Break{pos, KindBadLine, "time is not RFC 3339"}
	}
	switch {
	case v.Type == typeEvent && v.Action == "":
		return &Break{pos, KindBadLine, "event without an action"}
	case v.Type != typeEvent && v.Type != typeAnchor:
		return &Break{pos, KindBadLine, fmt.Sprintf("unknown type %q", v.Type)}
	}
	anchor := v.Type == typeAnchor
	sum := sha256.Sum256(raw)
	if c.want != nil && *v.Seq == c.want.Seq {
		c.wantFound, c.wantHash, c.wantPos = true, sum, pos
	}
	if c.started {
		if *v.Seq != c.seq+1 {
			why := fmt.Sprintf("seq %d follows seq %d at %s: ", *v.Seq, c.seq, c.last)
			if *v.Seq > c.seq+1 {
				why += fmt.Sprintf("%d line(s) missing before this one", *v.Seq-c.seq-1)
			} else {
				why += "a line repeated, inserted or moved"
			}
			return &Break{pos, KindSeqGap, why}
		}
		if prev != c.head {
			here := Break{pos, KindPrevMismatch, fmt.Sprintf("prev does not match the hash of the line before (%s): this line was altered", c.last)}
			earlier := Break{c.last, KindPrevMismatch, fmt.Sprintf("altered: its hash does not match the prev recorded by the next line (%s)", pos)}
			if anchor {
				if ok, counts, _ := c.anchorOK(raw, &v); ok && counts {
					return &earlier // the anchor is authentic, so its prev is
				}
				return &here
			}
			c.pending = &pendingMismatch{here: here, earlier: earlier, hash: sum}
			c.last = pos
			return nil
		}
	} else {
		if *v.Seq == 1 && v.Prev != zeroHash {
			return &Break{pos, KindBadGenesis, "the first line (seq 1) must have a zero prev"}
		}
		if c.rep != nil {
			c.rep.FirstSeq, c.rep.Genesis = *v.Seq, *v.Seq == 1
		}
		c.firstTime = v.Time
	}
	counts := true
	if anchor {
		var ok bool
		var why string
		ok, counts, why = c.anchorOK(raw, &v)
		if !ok {
			since := "the start"
			if c.lastAnchor != nil {
				since = "the anchor at " + c.lastAnchor.String()
			}
			if why == "" {
				why = "HMAC does not verify"
			}
			return &Break{pos, KindBadAnchor, why + ": the lines since " + since +
				" were altered and the chain recomputed, or the key is wrong"}
		}
	}
	if anchor && counts {
		c.lastAnchor = &pos
		c.lastAnchorTime = v.Time
		c.sinceAnchor = 0
		if v.Fields[headField] == headRecorded {
			c.marked = true
		}
		if c.rep != nil {
			c.rep.Anchors++
		}
	} else {
		if c.sinceAnchor == 0 {
			c.firstUnanchored = pos
		}
		c.sinceAnchor++
		if c.rep != nil && strings.HasPrefix(v.Action, incidentActionPrefix) {
			c.rep.Incidents = append(c.rep.Incidents, Incident{Position: pos, Action: v.Action, Reason: v.Reason, Fields: v.Fields})
		}
	}
	c.started, c.seq, c.head, c.last = true, *v.Seq, sum, pos
	c.lines++
	return nil
}

// finish resolves a pending mismatch at the end of the input and, if
// requireAnchor, checks that the log is not empty and ends with an anchor.
func (c *chain) finish(requireAnchor bool) *Break {
	if p := c.pending; p != nil {
		c.pending = nil
		b := p.here
		b.Reason += " (or the line before it; it is the last line)"
		return &b
	}
	if !requireAnchor {
		return nil
	}
	if c.lines == 0 {
		return &Break{Kind: KindEmpty, Reason: "no audit lines"}
	}
	if c.sinceAnchor > 0 {
		after := "no anchor at all"
		if c.lastAnchor != nil {
			after = "the last anchor at " + c.lastAnchor.String()
		}
		return &Break{c.firstUnanchored, KindUnanchored, fmt.Sprintf(
			"%d line(s) after %s are not authenticated: a live log (anchor it first), a crash, or lines cut after the final anchor",
			c.sinceAnchor, after)}
	}
	return nil
}

// fill copies the chain's state into the report.
func (c *chain) fill() {
	r := c.rep
	r.Lines, r.LastSeq, r.Unanchored = c.lines, c.seq, c.sinceAnchor
	if c.started {
		r.Head = hex.EncodeToString(c.head[:])
	}
	if c.lastAnchor != nil {
		p := *c.lastAnchor
		r.LastAnchor = &p
	}
}
