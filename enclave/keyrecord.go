package enclave

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// A key record is stored in one of two forms (decisions/54):
//
//   - binary, written by this build for every new or rewritten record:
//
//     0x01                      version
//     flags                     1 byte: bit 0 = ClaimBy present; other bits 0
//     created, updated          int64 big-endian, Unix nanoseconds (UTC)
//     [claimBy]                 int64 big-endian, only with flag bit 0
//     format, clientID, sealed  each a uvarint length (minimal) and its bytes
//
//   - JSON, {"f":…,"c":…,"u":…[,"cid":…][,"cb":…],"s":…}, written by earlier
//     builds and still read; it converts when the record is next written.
//
// JSON never starts with a control character other than its whitespace
// (tab, line feed, carriage return), so every other control byte is kept
// for a binary version (0x01 is the only one today; the others are refused
// as unknown): the first byte tells the two forms apart.
const keyRecordV1 = 0x01

const (
	recFlagClaimBy = 1 << 0
	recFlagsKnown  = recFlagClaimBy
)

// ErrMalformedRecord means a stored key record does not decode, in either
// form (a damaged record: the server answers 500 record_damaged). The
// binary decoder's messages name what is wrong, never the record's bytes.
var ErrMalformedRecord = errors.New("enclave: malformed key record")

// isBinaryRecord reports whether b's first byte is a binary form's version
// (one JSON cannot start with).
func isBinaryRecord(b []byte) bool {
	return len(b) > 0 && b[0] < 0x20 && b[0] != '\t' && b[0] != '\n' && b[0] != '\r'
}

// encodeKeyRecord is the binary form of rec. Times must lie in the range
// of int64 Unix nanoseconds (years 1678 to 2262) and strings must be valid
// UTF-8 (as the JSON form held them); anything else is refused, not
// changed.
func encodeKeyRecord(rec keyRecord) ([]byte, error) {
	n := 2 + 16 + 3*binary.MaxVarintLen64 + len(rec.Format) + len(rec.ClientID) + len(rec.Sealed)
	flags := byte(0)
	if rec.ClaimBy != nil {
		flags |= recFlagClaimBy
		n += 8
	}
	b := make([]byte, 0, n)
	b = append(b, keyRecordV1, flags)
	var err error
	if b, err = appendRecordTime(b, rec.Created, "created"); err != nil {
		return nil, err
	}
	if b, err = appendRecordTime(b, rec.Updated, "updated"); err != nil {
		return nil, err
	}
	if rec.ClaimBy != nil {
		if b, err = appendRecordTime(b, *rec.ClaimBy, "claim deadline"); err != nil {
			return nil, err
		}
	}
	if !utf8.ValidString(rec.Format) || !utf8.ValidString(rec.ClientID) {
		return nil, fmt.Errorf("%w: format or client id is not valid UTF-8", ErrMalformedRecord)
	}
	b = binary.AppendUvarint(b, uint64(len(rec.Format)))
	b = append(b, rec.Format...)
	b = binary.AppendUvarint(b, uint64(len(rec.ClientID)))
	b = append(b, rec.ClientID...)
	b = binary.AppendUvarint(b, uint64(len(rec.Sealed)))
	return append(b, rec.Sealed...), nil
}

func appendRecordTime(b []byte, t time.Time, what string) ([]byte, error) {
	ns := t.UnixNano()
	if !time.Unix(0, ns).Equal(t) {
		return nil, fmt.Errorf("%w: the %s time is outside the years 1678 to 2262", ErrMalformedRecord, what)
	}
	return binary.BigEndian.AppendUint64(b, uint64(ns)), nil
}

// decodeKeyRecord decodes a stored key record, binary or JSON. The JSON
// layout json.Marshal writes, with strings that need no unescaping, is read
// directly; anything else (escapes, other member order or spelling, null,
// extra members) goes to encoding/json, whose result is the definition
// (TestDecodeKeyRecordMatchesJSON).
func decodeKeyRecord(b []byte) (keyRecord, error) {
	if isBinaryRecord(b) {
		return decodeBinaryRecord(b)
	}
	if rec, ok := decodeKeyRecordFast(b); ok {
		return rec, nil
	}
	var rec keyRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	return rec, nil
}

// decodeBinaryRecord reads the binary form strictly: an unknown version or
// flag, a truncated field, a length past the end, a non-minimal length,
// invalid UTF-8 or trailing bytes are refused, so each record has exactly
// one encoding. Times come back in UTC, as the JSON form's "Z" times did.
func decodeBinaryRecord(b []byte) (rec keyRecord, err error) {
	if b[0] != keyRecordV1 {
		return rec, fmt.Errorf("%w: unknown version %#02x", ErrMalformedRecord, b[0])
	}
	d := binScanner{b: b, pos: 1}
	flags, ok := d.byte()
	if !ok {
		return rec, d.truncated("flags")
	}
	if flags&^recFlagsKnown != 0 {
		return rec, fmt.Errorf("%w: unknown flags %#02x", ErrMalformedRecord, flags)
	}
	if rec.Created, ok = d.time(); !ok {
		return rec, d.truncated("created time")
	}
	if rec.Updated, ok = d.time(); !ok {
		return rec, d.truncated("updated time")
	}
	if flags&recFlagClaimBy != 0 {
		cb, ok := d.time()
		if !ok {
			return rec, d.truncated("claim deadline")
		}
		rec.ClaimBy = &cb
	}
	f, err := d.field("format")
	if err != nil {
		return rec, err
	}
	cid, err := d.field("client id")
	if err != nil {
		return rec, err
	}
	s, err := d.field("sealed value")
	if err != nil {
		return rec, err
	}
	if d.pos != len(b) {
		return rec, fmt.Errorf("%w: %d trailing bytes", ErrMalformedRecord, len(b)-d.pos)
	}
	if !utf8.Valid(f) || !utf8.Valid(cid) {
		return rec, fmt.Errorf("%w: format or client id is not valid UTF-8", ErrMalformedRecord)
	}
	// The two formats PutKey writes take no allocation (the compiler
	// compares without converting).
	switch string(f) {
	case FormatBytes:
		rec.Format = FormatBytes
	case FormatText:
		rec.Format = FormatText
	default:
		rec.Format = string(f)
	}
	if len(cid) > 0 {
		rec.ClientID = string(cid)
	}
	if len(s) > 0 {
		// A copy: b belongs to the store's transaction.
		rec.Sealed = bytes.Clone(s)
	}
	return rec, nil
}

// binScanner reads the fields of the binary form.
type binScanner struct {
	b   []byte
	pos int
}

func (d *binScanner) byte() (byte, bool) {
	if d.pos >= len(d.b) {
		return 0, false
	}
	d.pos++
	return d.b[d.pos-1], true
}

func (d *binScanner) time() (time.Time, bool) {
	if len(d.b)-d.pos < 8 {
		return time.Time{}, false
	}
	ns := int64(binary.BigEndian.Uint64(d.b[d.pos:]))
	d.pos += 8
	return time.Unix(0, ns).UTC(), true
}

// field reads a uvarint length and that many bytes.
func (d *binScanner) field(what string) ([]byte, error) {
	n, k := binary.Uvarint(d.b[d.pos:])
	switch {
	case k == 0:
		return nil, d.truncated(what + " length")
	case k < 0:
		return nil, fmt.Errorf("%w: the %s length overflows", ErrMalformedRecord, what)
	case k != uvarintLen(n):
		return nil, fmt.Errorf("%w: the %s length is not minimally encoded", ErrMalformedRecord, what)
	}
	d.pos += k
	if n > uint64(len(d.b)-d.pos) {
		return nil, fmt.Errorf("%w: the %s length %d exceeds the %d bytes left", ErrMalformedRecord, what, n, len(d.b)-d.pos)
	}
	f := d.b[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return f, nil
}

func (d *binScanner) truncated(what string) error {
	return fmt.Errorf("%w: truncated in the %s", ErrMalformedRecord, what)
}

// uvarintLen is the length of n's minimal uvarint encoding.
func uvarintLen(n uint64) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

func decodeKeyRecordFast(b []byte) (rec keyRecord, ok bool) {
	d := recordScanner{b: b}
	if !d.lit(`{"f":`) {
		return rec, false
	}
	f, ok := d.str()
	if !ok || !d.lit(`,"c":`) {
		return rec, false
	}
	if rec.Created, ok = d.time(); !ok || !d.lit(`,"u":`) {
		return rec, false
	}
	if rec.Updated, ok = d.time(); !ok {
		return rec, false
	}
	rec.Format = string(f)
	if d.lit(`,"cid":`) {
		cid, ok := d.str()
		if !ok {
			return rec, false
		}
		rec.ClientID = string(cid)
	}
	if d.lit(`,"cb":`) {
		cb, ok := d.time()
		if !ok {
			return rec, false
		}
		rec.ClaimBy = &cb
	}
	if !d.lit(`,"s":`) {
		return rec, false
	}
	s, ok := d.str()
	if !ok || !d.lit(`}`) || d.pos != len(b) {
		return rec, false
	}
	if len(s) > 0 {
		rec.Sealed = make([]byte, base64.StdEncoding.DecodedLen(len(s)))
		n, err := base64.StdEncoding.Decode(rec.Sealed, s)
		if err != nil {
			return rec, false
		}
		rec.Sealed = rec.Sealed[:n]
	} else {
		rec.Sealed = []byte{}
	}
	return rec, true
}

// recordScanner reads the fixed layout of decodeKeyRecordFast.
type recordScanner struct {
	b   []byte
	pos int
}

func (d *recordScanner) lit(s string) bool {
	if !bytes.HasPrefix(d.b[d.pos:], []byte(s)) {
		return false
	}
	d.pos += len(s)
	return true
}

// str reads a string without escapes or control characters (those go to
// encoding/json) and returns its bytes, valid UTF-8 or not ok.
func (d *recordScanner) str() ([]byte, bool) {
	if d.pos >= len(d.b) || d.b[d.pos] != '"' {
		return nil, false
	}
	for i := d.pos + 1; i < len(d.b); i++ {
		switch c := d.b[i]; {
		case c == '"':
			s := d.b[d.pos+1 : i]
			d.pos = i + 1
			return s, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

func (d *recordScanner) time() (time.Time, bool) {
	start := d.pos
	if _, ok := d.str(); !ok {
		return time.Time{}, false
	}
	var t time.Time
	if t.UnmarshalJSON(d.b[start:d.pos]) != nil {
		return time.Time{}, false
	}
	return t, true
}
