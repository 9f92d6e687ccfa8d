package enclave

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"
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

// maxLookupAllocs: 46 with encoding/json decoding the record.
const maxLookupAllocs = 40

// BenchmarkDecodeKeyRecord: a release's record decoded directly and by
// encoding/json.
func BenchmarkDecodeKeyRecord(b *testing.B) {
	in, err := json.Marshal(keyRecord{Format: "raw", Created: time.Now().UTC(), Updated: time.Now().UTC(), ClientID: "client-1", Sealed: make([]byte, 90)})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeKeyRecord(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var rec keyRecord
			if err := json.Unmarshal(in, &rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
