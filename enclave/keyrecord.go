package enclave

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"
)

// decodeKeyRecord decodes a stored key record. Every release reads one, so
// the layout json.Marshal writes, {"f":…,"c":…,"u":…[,"cid":…][,"cb":…],"s":…}
// with strings that need no unescaping, is read directly; anything else
// (escapes, other member order or spelling, null, extra members) goes to
// encoding/json, whose result is the definition (TestDecodeKeyRecordMatchesJSON).
func decodeKeyRecord(b []byte) (keyRecord, error) {
	if rec, ok := decodeKeyRecordFast(b); ok {
		return rec, nil
	}
	var rec keyRecord
	err := json.Unmarshal(b, &rec)
	return rec, err
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
