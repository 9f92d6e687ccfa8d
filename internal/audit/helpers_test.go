package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
)

func testKey() secret.Bytes { return secret.NewBytes(bytes.Repeat([]byte{0x5a}, 32)) }

// fixedClock is a settable clock.
type fixedClock struct{ t time.Time }

func (c *fixedClock) now() time.Time { return c.t }

// openLog opens a log in a fresh directory unless opts.Dir is set; the
// test closes it at the end unless it did so itself.
func openLog(t testing.TB, opts Options) *Log {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.AnchorKey.Len() == 0 {
		opts.AnchorKey = testKey()
	}
	if opts.ReserveBytes == 0 {
		opts.ReserveBytes = 64 << 10
	}
	l, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

func mustRecord(t testing.TB, l *Log, ev Event) {
	t.Helper()
	if err := l.Record(context.Background(), ev); err != nil {
		t.Fatalf("Record(%s): %v", ev.Action, err)
	}
}

func mustClose(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// onWriter runs fn on the writer goroutine, between batches.
func onWriter(l *Log, fn func()) {
	done := make(chan struct{})
	l.inject <- func() { fn(); close(done) }
	<-done
}

// lineRef is one line of the log on disk.
type lineRef struct {
	File string
	Line int
	Text string
}

func (r lineRef) seq(t testing.TB) uint64 {
	t.Helper()
	var v struct{ Seq uint64 }
	if err := json.Unmarshal([]byte(r.Text), &v); err != nil {
		t.Fatalf("%s:%d: %v", r.File, r.Line, err)
	}
	return v.Seq
}

func (r lineRef) isAnchor() bool { return strings.Contains(r.Text, `"type":"anchor"`) }

// readLines returns every line of every audit file, in order.
func readLines(t testing.TB, dir string) []lineRef {
	t.Helper()
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []lineRef
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if s != "" {
				out = append(out, lineRef{File: f.name, Line: i + 1, Text: s})
			}
		}
	}
	return out
}

// writeLines rewrites the audit files from lines (each line to its File,
// in order) and returns them with their new line numbers. Files that end
// up without lines are left empty.
func writeLines(t testing.TB, dir string, lines []lineRef) []lineRef {
	t.Helper()
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	content := map[string]*strings.Builder{}
	for _, f := range files {
		content[f.name] = &strings.Builder{}
	}
	count := map[string]int{}
	out := make([]lineRef, len(lines))
	for i, l := range lines {
		content[l.File].WriteString(l.Text + "\n")
		count[l.File]++
		out[i] = lineRef{File: l.File, Line: count[l.File], Text: l.Text}
	}
	for name, b := range content {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

var (
	seqRE  = regexp.MustCompile(`^\{"seq":[0-9]+,`)
	prevRE = regexp.MustCompile(`"prev":"[0-9a-f]{64}"`)
)

// recompute renumbers seq and recomputes prev for lines[from:], as someone
// without the anchor key would after altering or removing lines. Anchors
// keep their (now wrong) hmac.
func recompute(t testing.TB, lines []lineRef, from int) {
	t.Helper()
	for i := max(from, 1); i < len(lines); i++ {
		h := sha256.Sum256([]byte(lines[i-1].Text))
		s := seqRE.ReplaceAllString(lines[i].Text, fmt.Sprintf(`{"seq":%d,`, lines[i-1].seq(t)+1))
		lines[i].Text = prevRE.ReplaceAllString(s, `"prev":"`+hex.EncodeToString(h[:])+`"`)
	}
}

// wireOf decodes a line.
func wireOf(t testing.TB, r lineRef) wireLine {
	t.Helper()
	var w wireLine
	if err := json.Unmarshal([]byte(r.Text), &w); err != nil {
		t.Fatalf("%s:%d: %v", r.File, r.Line, err)
	}
	return w
}
