package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/store"
)

// TestDecodeKeyRecordMatchesJSON: the release path's record decoder gives
// what encoding/json gives, for the records json.Marshal writes and for
// anything else (which it hands to encoding/json).
func TestDecodeKeyRecordMatchesJSON(t *testing.T) {
	cb := time.Date(2027, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	recs := []keyRecord{
		{Format: "raw", Created: time.Unix(1700000000, 5).UTC(), Updated: time.Unix(1700000001, 0).UTC(), Sealed: []byte{1, 2, 3, 250}},
		{Format: "raw", Created: time.Unix(1700000000, 0).In(time.FixedZone("y", -7200)), Updated: time.Unix(1700000001, 123456789).UTC(), ClientID: "client-1", ClaimBy: &cb, Sealed: make([]byte, 91)},
		{Format: "f\"<&>\u2028é", ClientID: "a\\b\x01", Sealed: nil},
		{},
	}
	var inputs [][]byte
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b)
	}
	inputs = append(inputs,
		[]byte(`{"F":"raw","c":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20Z","s":"AQID"}`),
		[]byte(`{"f":"raw","f":"dup","c":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20Z","s":"AQID"}`),
		[]byte(`{"f":"raw","c":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20Z","s":"AQID","extra":1}`),
		[]byte(` {"f":"raw","c":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20Z","s":"AQID"}`),
		[]byte(`{"f":"raw","c":"bad","u":"2023-11-14T22:13:20Z","s":"AQID"}`),
		[]byte(`{"f":"raw","c":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20Z","s":"AQI"}`),
		[]byte(`{"f":"raw","c":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20Z","cb":null,"s":"AQID"}`),
		[]byte(`{"f":"raw","c":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20Z","s":null}`),
		[]byte(`not json`),
	)
	for _, in := range inputs {
		var want keyRecord
		wantErr := json.Unmarshal(in, &want)
		got, err := decodeKeyRecord(in)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%s: error %v, encoding/json %v", in, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %#v\nwant %#v", in, got, want)
		}
	}
}

// TestLookupAsAllocations bounds the allocations of a release's record
// read and open: the record is decoded without encoding/json's reflection.
func TestLookupAsAllocations(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(t), CustodyOptions{})
	o := UserOwner("alice")
	if _, err := c.PutKey(ctx, o, "PASSKEY", make([]byte, 32), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(50, func() {
		k, _, err := c.LookupAs(ctx, o, "PASSKEY", Access{})
		if err != nil {
			t.Fatal(err)
		}
		k.Wipe()
	})
	if n > maxLookupAllocs {
		t.Errorf("LookupAs makes %.0f allocations, want at most %d", n, maxLookupAllocs)
	}
}

// maxLookupAllocs: 46 with encoding/json decoding the record, 23 with the
// direct JSON read, 22 with the binary form.
const maxLookupAllocs = 26

// BenchmarkDecodeKeyRecord: a release's record decoded from the binary
// form, from the JSON form directly, and by encoding/json.
func BenchmarkDecodeKeyRecord(b *testing.B) {
	rec := keyRecord{Format: "raw", Created: time.Now().UTC(), Updated: time.Now().UTC(), ClientID: "client-1", Sealed: make([]byte, 90)}
	in, err := json.Marshal(rec)
	if err != nil {
		b.Fatal(err)
	}
	bin, err := encodeKeyRecord(rec)
	if err != nil {
		b.Fatal(err)
	}
	benchRecordCodec(b, map[string]func() error{
		"binary":        func() error { _, err := decodeKeyRecord(bin); return err },
		"json-direct":   func() error { _, err := decodeKeyRecord(in); return err },
		"encoding-json": func() error { var rec keyRecord; return json.Unmarshal(in, &rec) },
	})
}

// BenchmarkEncodeKeyRecord: a store's record written in the binary form and
// by encoding/json (the form earlier builds wrote).
func BenchmarkEncodeKeyRecord(b *testing.B) {
	rec := keyRecord{Format: FormatBytes, Created: time.Now().UTC(), Updated: time.Now().UTC(), Sealed: make([]byte, 102)}
	benchRecordCodec(b, map[string]func() error{
		"binary":        func() error { _, err := encodeKeyRecord(rec); return err },
		"encoding-json": func() error { _, err := json.Marshal(rec); return err },
	})
}

// benchRecordCodec runs each of fns as a sub-benchmark, in name order.
func benchRecordCodec(b *testing.B, fns map[string]func() error) {
	for _, name := range slices.Sorted(maps.Keys(fns)) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := fns[name](); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// sameRecord compares two records as the API sees them: times by
// time.Time.Equal, a missing and an empty sealed value alike.
func sameRecord(a, b keyRecord) bool {
	cb := (a.ClaimBy == nil) == (b.ClaimBy == nil) && (a.ClaimBy == nil || a.ClaimBy.Equal(*b.ClaimBy))
	return a.Format == b.Format && a.ClientID == b.ClientID && a.Created.Equal(b.Created) &&
		a.Updated.Equal(b.Updated) && cb && bytes.Equal(a.Sealed, b.Sealed)
}

// TestBinaryKeyRecordRoundTrip: a record encodes to the binary form (first
// byte the version) and decodes to the same record, its times in UTC; the
// KeyInfo the API prints is byte for byte the one the JSON form gave for
// the records this and earlier builds write (UTC times).
func TestBinaryKeyRecordRoundTrip(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC)
	cb := now.Add(30 * 24 * time.Hour)
	recs := []keyRecord{
		{Format: FormatBytes, Created: now, Updated: now, Sealed: make([]byte, 102)},
		{Format: FormatText, Created: now.Add(-time.Hour), Updated: now, ClientID: "client-1", ClaimBy: &cb, Sealed: bytes.Repeat([]byte{0xff}, 300)},
		{Format: "é\x00\"", Created: time.Unix(0, math.MinInt64).UTC(), Updated: time.Unix(0, math.MaxInt64).UTC(), ClientID: strings.Repeat("c", 200), Sealed: []byte{0}},
		{Format: "", Created: now, Updated: now},
	}
	for i, rec := range recs {
		b, err := encodeKeyRecord(rec)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if b[0] != keyRecordV1 || !isBinaryRecord(b) {
			t.Fatalf("%d: first byte %#02x", i, b[0])
		}
		got, err := decodeKeyRecord(b)
		if err != nil || !sameRecord(got, rec) {
			t.Fatalf("%d: %v\n got %#v\nwant %#v", i, err, got, rec)
		}
		if got.Created.Location() != time.UTC || got.Updated.Location() != time.UTC || (got.ClaimBy != nil && got.ClaimBy.Location() != time.UTC) {
			t.Fatalf("%d: times not in UTC: %v %v", i, got.Created, got.Updated)
		}
		// The JSON form of the same record, read back, prints the same
		// KeyInfo.
		j, _ := json.Marshal(rec)
		old, err := decodeKeyRecord(j)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(got.info("PASSKEY", 1))
		w, _ := json.Marshal(old.info("PASSKEY", 1))
		if !bytes.Equal(a, w) {
			t.Fatalf("%d: KeyInfo\n binary %s\n   JSON %s", i, a, w)
		}
	}
	// A time in another zone is stored as its instant and read in UTC.
	zoned := keyRecord{Format: FormatBytes, Created: now.In(time.FixedZone("x", 3600)), Updated: now, Sealed: []byte{1}}
	b, _ := encodeKeyRecord(zoned)
	if got, err := decodeKeyRecord(b); err != nil || !got.Created.Equal(now) || got.Created.Location() != time.UTC {
		t.Fatalf("zoned time: %v %v", got.Created, err)
	}
}

// TestBinaryKeyRecordRefusals: the decoder refuses, with ErrMalformedRecord and
// without panicking, every prefix of a record, trailing bytes, unknown
// versions and flags, lengths past the end or not minimal, and strings
// that are not UTF-8; the encoder refuses times it cannot hold.
func TestBinaryKeyRecordRefusals(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good, err := encodeKeyRecord(keyRecord{Format: FormatBytes, Created: now, Updated: now, ClientID: "c", ClaimBy: &now, Sealed: []byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(name string, b []byte) {
		t.Helper()
		if _, err := decodeKeyRecord(b); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s (% x): %v, want a malformed record", name, b, err)
		}
	}
	for n := 1; n < len(good); n++ {
		refuse(fmt.Sprintf("first %d bytes", n), good[:n])
	}
	refuse("a trailing byte", append(bytes.Clone(good), 0))
	for _, v := range []byte{0x00, 0x02, 0x08, 0x1f} {
		b := bytes.Clone(good)
		b[0] = v
		refuse(fmt.Sprintf("version %#02x", v), b)
	}
	b := bytes.Clone(good)
	b[1] |= 0x80
	refuse("unknown flag", b)
	// Header: version, flags, three times; then the format's length.
	const lenAt = 2 + 3*8
	b = bytes.Clone(good)
	b[lenAt] = 0x7f
	refuse("format length past the end", b)
	b = slices.Concat(good[:lenAt], []byte{0x85, 0x00}, good[lenAt+1:])
	refuse("format length not minimal", b)
	b = slices.Concat(good[:lenAt], bytes.Repeat([]byte{0xff}, 10), []byte{0x01}, good[lenAt+1:])
	refuse("format length overflowing", b)
	b = bytes.Clone(good)
	b[lenAt+1] = 0xff
	refuse("format not UTF-8", b)

	for name, rec := range map[string]keyRecord{
		"zero created time":   {Format: FormatBytes, Updated: now},
		"updated in 2300":     {Format: FormatBytes, Created: now, Updated: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)},
		"claim before 1678":   {Format: FormatBytes, Created: now, Updated: now, ClaimBy: &time.Time{}},
		"client id not UTF-8": {Format: FormatBytes, Created: now, Updated: now, ClientID: "\xff"},
	} {
		if _, err := encodeKeyRecord(rec); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("encode %s: %v, want a refusal", name, err)
		}
	}
}

// FuzzDecodeKeyRecord: decodeKeyRecord never panics; a binary record (its
// first byte a version) is never JSON, and one it accepts is exactly what
// encodeKeyRecord writes for the result; any other input decodes as
// encoding/json decodes it; and every record it accepts, either form, comes
// back from encode and decode the same (when its times fit the binary form).
func FuzzDecodeKeyRecord(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC)
	for _, rec := range []keyRecord{
		{Format: FormatBytes, Created: now, Updated: now, Sealed: make([]byte, 102)},
		{Format: FormatText, Created: now, Updated: now, ClientID: "client-1", ClaimBy: &now, Sealed: []byte{1}},
	} {
		b, _ := encodeKeyRecord(rec)
		f.Add(b)
		j, _ := json.Marshal(rec)
		f.Add(j)
	}
	f.Add([]byte(`{"f":"raw","c":"2023-11-14T22:13:20+01:00","u":"2023-11-14T22:13:20Z","s":""}`))
	f.Add([]byte{keyRecordV1})
	f.Fuzz(func(t *testing.T, in []byte) {
		rec, err := decodeKeyRecord(in)
		if isBinaryRecord(in) {
			var v any
			if json.Unmarshal(in, &v) == nil {
				t.Fatalf("% x is both a binary record and JSON", in)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformedRecord) {
					t.Fatalf("binary refusal without ErrMalformedRecord: %v", err)
				}
				return
			}
			if b, err := encodeKeyRecord(rec); err != nil || !bytes.Equal(b, in) {
				t.Fatalf("accepted % x, encodes again as % x (%v)", in, b, err)
			}
		} else {
			var want keyRecord
			wantErr := json.Unmarshal(in, &want)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("%q: error %v, encoding/json %v", in, err, wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformedRecord) {
					t.Fatalf("JSON refusal without ErrMalformedRecord: %v", err)
				}
				return
			}
			if !reflect.DeepEqual(rec, want) {
				t.Fatalf("%q:\n got %#v\nwant %#v", in, rec, want)
			}
		}
		b, err := encodeKeyRecord(rec)
		if err != nil {
			// Only a time outside the binary form's range is refused:
			// JSON strings are valid UTF-8.
			for _, tm := range []*time.Time{&rec.Created, &rec.Updated, rec.ClaimBy} {
				if tm != nil && !time.Unix(0, tm.UnixNano()).Equal(*tm) {
					return
				}
			}
			t.Fatalf("%q: encode: %v", in, err)
		}
		again, err := decodeKeyRecord(b)
		if err != nil || !sameRecord(again, rec) {
			t.Fatalf("%q: round trip %v\n got %#v\nwant %#v", in, err, again, rec)
		}
	})
}

// TestKeyRecordSize logs a typical Firebase key's record in each form (a
// 32-byte key, format bytes, no client id) and holds the binary form to
// its budget (decisions/54; docs/BENCHMARKS.md "Where the bytes go").
func TestKeyRecordSize(t *testing.T) {
	c := NewCustody(openDB(t, filepath.Join(t.TempDir(), "k.db")), testRoot(t), CustodyOptions{})
	o := Owner("firebase:bench-project//uid-000000000000000000000000001")
	if _, err := c.PutKey(context.Background(), o, "FIREBASE", make([]byte, 32), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var bin []byte
	c.db.View(context.Background(), func(tx *store.Tx) (err error) {
		bin, err = tx.Get(store.BucketKeys, store.Key(string(o), "FIREBASE"))
		bin = bytes.Clone(bin)
		return err
	})
	rec, err := decodeKeyRecord(bin)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(rec)
	t.Logf("record of a 32-byte Firebase key: JSON %d bytes, binary %d bytes (sealed value %d bytes)", len(j), len(bin), len(rec.Sealed))
	if len(bin) > 130 || len(bin) != 2+16+3+len(FormatBytes)+len(rec.Sealed) {
		t.Errorf("binary record is %d bytes", len(bin))
	}
}
