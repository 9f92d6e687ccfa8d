package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/keywarden/keywarden/receipt"
)

const (
	typeEvent  = "event"
	typeAnchor = "anchor"

	anchorDomain = "keywarden-audit-anchor-v1\x00"
	// hmacPrefix starts the last member of an anchor line; the line ends
	// with hmacPrefix, 64 hex digits and `"}`.
	hmacPrefix = `,"hmac":"`
	hmacSuffix = len(hmacPrefix) + 2*sha256.Size + len(`"}`)

	// anchorVersionSigned is the v of an anchor signed by the batch key.
	anchorVersionSigned = 2
	// sigPrefix starts the last member of a signed anchor, after its hmac.
	sigPrefix = `,"sig":"`
)

// sigB64Len is the length of a base64url (unpadded) anchor signature.
var sigB64Len = base64.RawURLEncoding.EncodedLen(receipt.AnchorSigSize)

// cutSig splits a signed anchor line into the line without its sig member
// and the signature; ok is false when the line ends with no sig member.
func cutSig(line []byte) (body, sig []byte, ok bool) {
	n := len(sigPrefix) + sigB64Len + len(`"}`)
	if len(line) < n+2 || !bytes.HasSuffix(line, []byte(`"}`)) {
		return nil, nil, false
	}
	cut := len(line) - n
	if !bytes.Equal(line[cut:cut+len(sigPrefix)], []byte(sigPrefix)) {
		return nil, nil, false
	}
	// Strict: a changed padding bit in the last character is refused.
	sig, err := base64.RawURLEncoding.Strict().DecodeString(string(line[cut+len(sigPrefix) : len(line)-2]))
	if err != nil {
		return nil, nil, false
	}
	return append(bytes.Clone(line[:cut]), '}'), sig, true
}

// appendSig turns a (hmac'd) anchor line {…} into {…,"sig":"…"}.
func appendSig(line []byte, k *receipt.BatchKey) []byte {
	sig := k.SignAnchor(line)
	out := make([]byte, 0, len(line)+len(sigPrefix)+sigB64Len+1)
	out = append(out, line[:len(line)-1]...)
	out = append(out, sigPrefix...)
	out = base64.RawURLEncoding.AppendEncode(out, sig)
	return append(out, `"}`...)
}

// zeroHash is the prev of the first line ever.
var zeroHash = strings.Repeat("0", 2*sha256.Size)

// wireLine is a line as written. Field order is the order on disk: the
// chain fields first, the hmac last (anchors rely on it).
type wireLine struct {
	Seq             uint64            `json:"seq"`
	Time            string            `json:"time"`
	Prev            string            `json:"prev"`
	Type            string            `json:"type"`
	V               int               `json:"v,omitempty"` // 2: a signed anchor (node, cert, sig)
	Action          string            `json:"action,omitempty"`
	Outcome         string            `json:"outcome,omitempty"`
	Actor           string            `json:"actor,omitempty"`
	Owner           string            `json:"owner,omitempty"`
	Method          string            `json:"method,omitempty"`
	Reason          string            `json:"reason,omitempty"`
	RequestID       string            `json:"request_id,omitempty"`
	Remote          string            `json:"remote,omitempty"`
	Fields          map[string]string `json:"fields,omitempty"`
	RefusalsSkipped map[string]uint64 `json:"refusals_skipped,omitempty"`
	Node            string            `json:"node,omitempty"` // signed anchors: the cluster node's name
	Cert            string            `json:"cert,omitempty"` // signed anchors: base64url JSON of the batch key's receipt.KeyCert
	HMAC            string            `json:"hmac,omitempty"`
	// A signed anchor (v 2) ends with ,"sig":"<base64url Ed25519>"}
	// after its hmac: the batch key's signature over the line before it.
}

func eventLine(ev Event) wireLine {
	return wireLine{
		Type:      typeEvent,
		Time:      formatTime(ev.Time),
		Action:    ev.Action,
		Outcome:   ev.Outcome,
		Actor:     ev.Actor,
		Owner:     ev.Owner,
		Method:    ev.Method,
		Reason:    ev.Reason,
		RequestID: ev.RequestID,
		Remote:    ev.Remote,
		Fields:    ev.Fields,
	}
}

// checkEvent rejects an event without an action or whose line would be
// longer than MaxEventBytes.
func checkEvent(ev Event) error {
	if ev.Action == "" {
		return fmt.Errorf("%w: Action is required", ErrInvalidEvent)
	}
	if maxEventLineBytes(ev) <= MaxEventBytes {
		return nil // cannot be too long: no need to encode it (every release checks one)
	}
	w := eventLine(ev)
	w.Seq, w.Prev = math.MaxUint64, zeroHash
	if b := appendWireLine(nil, &w, nil); len(b) > MaxEventBytes {
		return fmt.Errorf("%w: line of %d bytes exceeds %d", ErrInvalidEvent, len(b), MaxEventBytes)
	}
	return nil
}

// lineOverhead bounds what an event line holds besides its strings: every
// member name, quotes and separators, seq (20 digits), prev (64 hex
// digits), time (RFC 3339 with nanoseconds, any year Go can format)
// and type.
const lineOverhead = 512

// maxEventLineBytes bounds the length of ev's line from above: JSON escapes
// a byte into at most 6 (\u00XX), plus the quotes of each string.
func maxEventLineBytes(ev Event) int {
	n := lineOverhead
	for _, s := range [...]string{ev.Action, ev.Outcome, ev.Actor, ev.Owner, ev.Method, ev.Reason, ev.RequestID, ev.Remote} {
		n += 6*len(s) + 2
	}
	for k, v := range ev.Fields {
		n += 6*(len(k)+len(v)) + 6
	}
	return n
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// batch builds the lines of one write, continuing the chain from seq and
// head without touching the writer's state until the write succeeded.
type batch struct {
	buf         []byte
	seq         uint64
	head        [sha256.Size]byte
	lines       int
	anchors     int
	sinceAnchor int // lines since the last anchor, after this batch
	sync        bool
	async       bool              // sync in the background: only RecordWritten lines need it
	skipped     map[string]uint64 // carried by the first line
	signer      *receipt.BatchKey // signs anchors; nil: HMAC only
}

// add appends one line. On error (the line would be too long) the batch is
// unchanged.
func (b *batch) add(w wireLine, key []byte) error {
	w.Seq = b.seq + 1
	if b.lines == 0 && len(b.skipped) > 0 {
		w.RefusalsSkipped = b.skipped
	}
	start := len(b.buf)
	b.buf = appendWireLine(b.buf, &w, &b.head) // prev: the chain head's hex
	line := b.buf[start:]
	if w.Type == typeAnchor {
		body := bytes.Clone(line)
		line = appendHMAC(body, key)
		if w.V == anchorVersionSigned && b.signer != nil {
			line = appendSig(line, b.signer)
		}
		b.buf = append(b.buf[:start], line...)
		line = b.buf[start:]
	}
	if len(line)+1 > MaxLineBytes {
		b.buf = b.buf[:start]
		return fmt.Errorf("%w: line of %d bytes exceeds %d", ErrInvalidEvent, len(line)+1, MaxLineBytes)
	}
	b.head = sha256.Sum256(line)
	b.buf = append(b.buf, '\n')
	b.seq++
	b.lines++
	if w.Type == typeAnchor {
		b.anchors++
		b.sinceAnchor = 0
	} else {
		b.sinceAnchor++
	}
	return nil
}

// appendHMAC turns the marshalled anchor body {…} into {…,"hmac":"…"}.
func appendHMAC(body, key []byte) []byte {
	mac := anchorMAC(body, key)
	out := make([]byte, 0, len(body)+hmacSuffix-1)
	out = append(out, body[:len(body)-1]...)
	out = append(out, hmacPrefix...)
	out = hex.AppendEncode(out, mac)
	return append(out, `"}`...)
}

func anchorMAC(body, key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(anchorDomain))
	m.Write(body)
	return m.Sum(nil)
}

// checkAnchorMAC verifies an anchor line's hmac, which must be its last
// member, or the last before the sig of a signed anchor.
func checkAnchorMAC(line, key []byte) bool {
	if body, _, ok := cutSig(line); ok {
		line = body
	}
	if len(line) < hmacSuffix+2 || !bytes.HasSuffix(line, []byte(`"}`)) {
		return false
	}
	cut := len(line) - hmacSuffix
	if !bytes.Equal(line[cut:cut+len(hmacPrefix)], []byte(hmacPrefix)) {
		return false
	}
	got := make([]byte, sha256.Size)
	if _, err := hex.Decode(got, line[cut+len(hmacPrefix):len(line)-2]); err != nil {
		return false
	}
	body := append(bytes.Clone(line[:cut]), '}')
	return hmac.Equal(got, anchorMAC(body, key))
}
