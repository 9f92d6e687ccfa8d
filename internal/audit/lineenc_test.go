package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// tricky are strings encoding/json escapes: quotes, backslashes, every
// control character, HTML, U+2028/9, invalid and truncated UTF-8, and
// multi-byte runes at the end.
var tricky = []string{
	"", "plain", `a"b\c`, "\x00\x01\x1f\x7f", "\b\f\n\r\t", "<script>&amp;</script>",
	"\u2028\u2029", "x\u2028y", "\xff", "\xe2\x80", "caf\xc3", "é中😀", "\xed\xa0\x80",
	"user:firebase:proj-a::uid-1", "192.0.2.7", "2001:db8::1",
}

func randString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return tricky[r.IntN(len(tricky))]
	}
	b := make([]byte, r.IntN(24))
	for i := range b {
		switch r.IntN(4) {
		case 0:
			b[i] = byte(r.IntN(256))
		case 1:
			b[i] = byte(r.IntN(0x20))
		default:
			b[i] = byte('a' + r.IntN(26))
		}
	}
	return string(b)
}

func randWireLine(r *rand.Rand) wireLine {
	s := func() string {
		if r.IntN(3) == 0 {
			return ""
		}
		return randString(r)
	}
	w := wireLine{
		Seq: r.Uint64() >> r.IntN(64), Time: s(), Prev: s(), Type: s(), Action: s(), Outcome: s(),
		Actor: s(), Owner: s(), Method: s(), Reason: s(), RequestID: s(), Remote: s(),
		Node: s(), Cert: s(), HMAC: s(),
	}
	switch r.IntN(4) {
	case 0:
		w.V = r.IntN(5)
	case 1:
		w.V = -r.IntN(1 << 30)
	case 2:
		w.V = math.MaxInt
	}
	if n := r.IntN(4); n > 0 {
		w.Fields = map[string]string{}
		for range n {
			w.Fields[randString(r)] = randString(r)
		}
	} else if r.IntN(2) == 0 {
		w.Fields = map[string]string{} // empty: omitted like nil
	}
	if n := r.IntN(3); n > 0 {
		w.RefusalsSkipped = map[string]uint64{}
		for range n {
			w.RefusalsSkipped[randString(r)] = r.Uint64() >> r.IntN(64)
		}
	}
	return w
}

// TestAppendWireLineMatchesJSON: the hand-written encoder writes exactly
// what json.Marshal writes for the same line (the chain hashes these
// bytes, and lines written before it must still verify), on real event
// and anchor lines and on 20,000 random ones full of strings that need
// escaping.
func TestAppendWireLineMatchesJSON(t *testing.T) {
	check := func(w wireLine) {
		t.Helper()
		want, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendWireLine(nil, &w, nil); !bytes.Equal(got, want) {
			t.Fatalf("line %+v:\n got %s\nwant %s", w, got, want)
		}
		// With prev given as the chain head.
		var head [sha256.Size]byte
		copy(head[:], "0123456789abcdef0123456789abcdef")
		w.Prev = "3031323334353637383961626364656630313233343536373839616263646566"
		want, _ = json.Marshal(w)
		if got := appendWireLine([]byte("x"), &w, &head); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Fatalf("line %+v with head:\n got %s\nwant %s", w, got, want)
		}
	}
	ev := eventLine(Event{Action: ActionRelease, Outcome: "ok", Actor: "firebase:uid", Owner: "firebase:proj-a::uid",
		Method: "default", RequestID: "abc-1", Remote: "192.0.2.7", Time: time.Date(2026, 12, 3, 1, 2, 3, 4, time.UTC),
		Fields: map[string]string{"z": "1", "a": "<&>", "m": "\u2028"}})
	ev.Seq, ev.Prev = 7, zeroHash
	check(ev)
	check(wireLine{Seq: 1, Time: formatTime(time.Unix(0, 0)), Prev: zeroHash, Type: typeAnchor, V: anchorVersionSigned,
		Node: "node-1", Cert: "eyJ4IjoxfQ", RefusalsSkipped: map[string]uint64{"origin_mismatch": 3, "bad": math.MaxUint64}})
	check(wireLine{})
	r := rand.New(rand.NewPCG(19, 2026))
	for range 20000 {
		check(randWireLine(r))
	}
}

// FuzzAppendWireLine compares the encoder with json.Marshal on arbitrary
// strings in every member.
func FuzzAppendWireLine(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, s, uint64(len(s)), 1)
	}
	f.Fuzz(func(t *testing.T, a, b string, seq uint64, v int) {
		w := wireLine{Seq: seq, Time: a, Prev: b, Type: a, V: v, Action: b, Owner: a + b, RequestID: b + a,
			Fields: map[string]string{a: b, b: a}, RefusalsSkipped: map[string]uint64{a: seq}, Cert: a, HMAC: b}
		want, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendWireLine(nil, &w, nil); !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}

// TestBatchAddAllocations: a release's line is encoded into the batch's
// buffer without reflection and without intermediate strings (the writer
// goroutine encodes every line of the log).
func TestBatchAddAllocations(t *testing.T) {
	w := eventLine(Event{Action: ActionRelease, Outcome: "ok", Actor: "firebase:uid", Owner: "firebase:proj-a::uid",
		Method: "default", RequestID: "abc-1", Remote: "192.0.2.7", Time: time.Now()})
	b := &batch{buf: make([]byte, 0, 1<<20)}
	n := testing.AllocsPerRun(200, func() {
		if b.buf = b.buf[:0]; b.add(w, nil) != nil {
			t.Fatal("add failed")
		}
	})
	if n > 0 {
		t.Errorf("adding a release line costs %.0f allocations, want 0", n)
	}
}

// BenchmarkBatchAdd is the writer goroutine's cost of one release line
// (encoding and chain hash).
func BenchmarkBatchAdd(b *testing.B) {
	w := eventLine(Event{Action: ActionRelease, Outcome: "ok", Actor: "firebase:uid", Owner: "firebase:proj-a::uid",
		Method: "default", RequestID: "abc-1", Remote: "192.0.2.7", Time: time.Now()})
	bt := &batch{buf: make([]byte, 0, 1<<20)}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if bt.buf = bt.buf[:0]; bt.add(w, nil) != nil {
			b.Fatal("add failed")
		}
	}
}
