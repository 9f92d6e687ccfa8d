package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerifyLines feeds arbitrary file contents to the chain checker that
// Verify and Open use: it must never panic, and whatever it accepts must be
// a chain that ends with a valid anchor.
func FuzzVerifyLines(f *testing.F) {
	dir := f.TempDir()
	l := openLog(f, Options{Dir: dir})
	for _, a := range []string{ActionStart, ActionStore, ActionRelease} {
		mustRecord(f, l, Event{Action: a, Owner: "user:1", Fields: map[string]string{"k": "v"}})
	}
	l.Refusal(context.Background(), Event{Reason: "origin_mismatch"})
	mustClose(f, l)
	files, _ := listFiles(dir)
	good, err := os.ReadFile(filepath.Join(dir, files[0].name))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(bytes.Replace(good, []byte(`"seq":2`), []byte(`"seq":3`), 1))
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"seq":1,"time":"2026-01-01T00:00:00Z","prev":"` + zeroHash + `","type":"anchor","hmac":"00"}` + "\n"))
	f.Add([]byte("\n\n"))

	key := testKey().Reveal()
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep Report
		c := newChain(key, &rep)
		good, brk, err := c.file("audit-000001.jsonl", bytes.NewReader(data))
		if err != nil {
			t.Fatalf("reading from memory failed: %v", err)
		}
		if good < 0 || good > int64(len(data)) {
			t.Fatalf("good offset %d outside 0..%d", good, len(data))
		}
		if brk == nil {
			brk = c.finish(true)
		}
		c.fill()
		if brk == nil {
			if rep.Lines == 0 || rep.Unanchored != 0 || rep.LastAnchor == nil {
				t.Fatalf("accepted a log that does not end with an anchor: %+v", rep)
			}
			if !bytes.HasSuffix(data, []byte("\n")) {
				t.Fatal("accepted an incomplete last line")
			}
		} else if brk.Kind == "" || brk.Reason == "" {
			t.Fatalf("break without kind or reason: %+v", brk)
		}
		_ = checkAnchorMAC(data, key)
	})
}
