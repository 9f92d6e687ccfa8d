package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
)

func TestOptionsValidate(t *testing.T) {
	good := Options{Dir: "/x", AnchorKey: testKey()}
	tests := []struct {
		name  string
		edit  func(*Options)
		field string // "" = valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"all set", func(o *Options) {
			o.MaxFileBytes, o.ReserveBytes, o.WriteTimeout = 1<<20, -1, time.Second
			o.AnchorInterval, o.RefusalRate, o.Clock = time.Second, 5, time.Now
		}, ""},
		{"no dir", func(o *Options) { o.Dir = "" }, "Dir"},
		{"tiny files", func(o *Options) { o.MaxFileBytes = 100 }, "MaxFileBytes"},
		{"negative files", func(o *Options) { o.MaxFileBytes = -1 }, "MaxFileBytes"},
		{"negative timeout", func(o *Options) { o.WriteTimeout = -1 }, "WriteTimeout"},
		{"no key", func(o *Options) { o.AnchorKey = secret.Bytes{} }, "AnchorKey"},
		{"short key", func(o *Options) { o.AnchorKey = secret.NewBytes(make([]byte, 16)) }, "AnchorKey"},
		{"negative interval", func(o *Options) { o.AnchorInterval = -time.Second }, "AnchorInterval"},
		{"negative rate", func(o *Options) { o.RefusalRate = -1 }, "RefusalRate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.edit(&o)
			before := fmt.Sprintf("%+v", o)
			err := o.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
			} else if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.field)
			}
			if after := fmt.Sprintf("%+v", o); after != before {
				t.Fatalf("Validate changed the options: %s → %s", before, after)
			}
		})
	}
}

func TestRecordRejectsBadEvents(t *testing.T) {
	l := openLog(t, Options{})
	tests := []struct {
		name string
		ev   Event
	}{
		{"no action", Event{Owner: "user:1"}},
		{"reserved action", Event{Action: ActionDiskFull}},
		{"too long", Event{Action: ActionStore, Fields: map[string]string{"x": strings.Repeat("a", MaxEventBytes)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := l.Record(context.Background(), tt.ev); !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("Record = %v, want ErrInvalidEvent", err)
			}
		})
	}
	if !l.Healthy() {
		t.Fatalf("a bad event made the log unhealthy: %v", l.LastError())
	}
}

func TestChainVerifiesAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, MaxFileBytes: 4096})
	for i := range 120 {
		mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: fmt.Sprintf("user:%d", i),
			Method: "passkey", RequestID: fmt.Sprintf("req-%d", i), Fields: map[string]string{"n": fmt.Sprint(i)}})
		if i%40 == 39 {
			if err := l.Anchor(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustClose(t, l)

	rep, err := Verify(dir, testKey())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(rep.Files) < 4 {
		t.Fatalf("files = %v, want rotation into several", rep.Files)
	}
	// Anchors after events 40, 80 and 120; Close finds the head anchored.
	if rep.Lines != 120+3 || rep.Anchors != 3 || rep.FirstSeq != 1 || rep.LastSeq != 123 || !rep.Genesis || rep.Unanchored != 0 {
		t.Fatalf("report = %+v", rep)
	}
	// Files stay near the limit, and each file's first line carries the
	// hash of the previous file's last line.
	lines := readLines(t, dir)
	for i := 1; i < len(lines); i++ {
		if lines[i].File != lines[i-1].File {
			h := sha256.Sum256([]byte(lines[i-1].Text))
			if got := wireOf(t, lines[i]).Prev; got != hex.EncodeToString(h[:]) {
				t.Fatalf("%s:1 prev = %s, want the hash of %s's last line", lines[i].File, got, lines[i-1].File)
			}
		}
	}
	for _, f := range rep.Files {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 4096+MaxLineBytes {
			t.Fatalf("%s is %d bytes", f, fi.Size())
		}
	}
	if seq, head := lastHead(t, lines); rep.Head != head || rep.LastSeq != seq {
		t.Fatalf("report head %d/%s, want %d/%s", rep.LastSeq, rep.Head, seq, head)
	}
}

func lastHead(t *testing.T, lines []lineRef) (uint64, string) {
	last := lines[len(lines)-1]
	h := sha256.Sum256([]byte(last.Text))
	return last.seq(t), hex.EncodeToString(h[:])
}

// tamperBase writes a log of 60 events in files of 4 KiB with anchors after
// events 20 and 40 and at Close, and returns its lines.
func tamperBase(t *testing.T, dir string) []lineRef {
	t.Helper()
	l := openLog(t, Options{Dir: dir, MaxFileBytes: 4096})
	for i := range 60 {
		mustRecord(t, l, Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: fmt.Sprintf("user:%02d", i), Method: "passkey"})
		if i == 19 || i == 39 {
			if err := l.Anchor(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustClose(t, l)
	if _, err := Verify(dir, testKey()); err != nil {
		t.Fatalf("untouched log: %v", err)
	}
	return readLines(t, dir)
}

// indexOf finds the line of the event for user:NN.
func indexOf(t *testing.T, lines []lineRef, owner string) int {
	t.Helper()
	for i, l := range lines {
		if strings.Contains(l.Text, `"owner":"`+owner+`"`) {
			return i
		}
	}
	t.Fatalf("no line for %s", owner)
	return -1
}

func TestVerifyFindsTampering(t *testing.T) {
	other := secret.NewBytes([]byte(strings.Repeat("k", 32)))
	tests := []struct {
		name string
		// tamper changes lines and returns the index (in the rewritten
		// lines) of the line Verify must report.
		tamper  func(t *testing.T, lines []lineRef) ([]lineRef, int)
		key     secret.Bytes
		kind    string
		wantErr error
	}{
		{"edited line", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:10")
			lines[i].Text = strings.Replace(lines[i].Text, `"store"`, `"delete"`, 1)
			return lines, i
		}, secret.Bytes{}, KindPrevMismatch, ErrBroken},
		{"edited last line of a file", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := 0
			for lines[i+1].File == lines[i].File || lines[i].isAnchor() {
				i++
			}
			lines[i].Text = strings.Replace(lines[i].Text, `"success"`, `"failure"`, 1)
			return lines, i
		}, secret.Bytes{}, KindPrevMismatch, ErrBroken},
		{"edited prev", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:30")
			lines[i].Text = prevRE.ReplaceAllString(lines[i].Text, `"prev":"`+zeroHash+`"`)
			return lines, i
		}, secret.Bytes{}, KindPrevMismatch, ErrBroken},
		{"edited seq", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:33")
			lines[i].Text = seqRE.ReplaceAllString(lines[i].Text, `{"seq":9999,`)
			return lines, i
		}, secret.Bytes{}, KindSeqGap, ErrBroken},
		{"deleted line", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:25")
			return append(lines[:i], lines[i+1:]...), i
		}, secret.Bytes{}, KindSeqGap, ErrBroken},
		{"duplicated line", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:25")
			return slices.Insert(lines, i+1, lines[i]), i + 1
		}, secret.Bytes{}, KindSeqGap, ErrBroken},
		{"garbage line", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:05")
			lines[i].Text = `{"seq":` // not JSON
			return lines, i
		}, secret.Bytes{}, KindBadLine, ErrBroken},
		{"truncated after last anchor", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			// Drop the final anchor and the last two events: the tail
			// after the anchor written after event 40 is unanchored.
			lines = lines[:len(lines)-3]
			return lines, indexOf(t, lines, "user:40")
		}, secret.Bytes{}, KindUnanchored, ErrUnanchored},
		{"recomputed chain without the key", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:10")
			lines[i].Text = strings.Replace(lines[i].Text, `"user:10"`, `"user:99"`, 1)
			recompute(t, lines, i+1)
			for j := i; ; j++ { // the anchor after event 20
				if lines[j].isAnchor() {
					return lines, j
				}
			}
		}, secret.Bytes{}, KindBadAnchor, ErrBroken},
		{"recomputed chain with anchors removed", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := indexOf(t, lines, "user:30")
			lines[i].Text = strings.Replace(lines[i].Text, `"store"`, `"delete"`, 1)
			var kept []lineRef
			for j, l := range lines {
				if j < i || !l.isAnchor() {
					kept = append(kept, l)
				}
			}
			recompute(t, kept, i)
			// Everything after the anchor following event 20 is now
			// unauthenticated.
			return kept, indexOf(t, kept, "user:20")
		}, secret.Bytes{}, KindUnanchored, ErrUnanchored},
		{"final anchor altered", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			i := len(lines) - 1
			lines[i].Text = strings.Replace(lines[i].Text, `"time":"2`, `"time":"1`, 1)
			return lines, i
		}, secret.Bytes{}, KindBadAnchor, ErrBroken},
		{"wrong key", func(t *testing.T, lines []lineRef) ([]lineRef, int) {
			for j := range lines {
				if lines[j].isAnchor() {
					return lines, j
				}
			}
			return lines, -1
		}, other, KindBadAnchor, ErrBroken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			lines, want := tt.tamper(t, tamperBase(t, dir))
			lines = writeLines(t, dir, lines)
			key := tt.key
			if key.Len() == 0 {
				key = testKey()
			}
			rep, err := Verify(dir, key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
			b := rep.Broken
			if b == nil || b.Kind != tt.kind || b.File != lines[want].File || b.Line != lines[want].Line {
				t.Fatalf("Broken = %v, want %s at %s:%d", b, tt.kind, lines[want].File, lines[want].Line)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%s:%d", b.File, b.Line)) {
				t.Fatalf("error %q does not name the line", err)
			}
		})
	}
}

func TestVerifyRetentionAndEmpty(t *testing.T) {
	dir := t.TempDir()
	lines := tamperBase(t, dir)
	if err := os.Remove(filepath.Join(dir, lines[0].File)); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir, testKey())
	if err != nil {
		t.Fatalf("log without its first file: %v", err)
	}
	if rep.Genesis || rep.FirstSeq <= 1 {
		t.Fatalf("Genesis = %v, FirstSeq = %d: the removed file must show", rep.Genesis, rep.FirstSeq)
	}

	empty := t.TempDir()
	if _, err := Verify(empty, testKey()); !errors.Is(err, ErrBroken) {
		t.Fatalf("empty log: %v, want ErrBroken", err)
	}
	if _, err := Verify(filepath.Join(empty, "missing"), testKey()); err == nil || errors.Is(err, ErrBroken) {
		t.Fatalf("missing dir: %v, want an I/O error", err)
	}
	if _, err := Verify(dir, secret.NewBytes([]byte("short"))); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestRestartContinuesChain(t *testing.T) {
	dir := t.TempDir()
	for run := range 3 {
		l := openLog(t, Options{Dir: dir})
		if run > 0 {
			if seq, _ := l.Head(); seq != uint64(run*6) {
				t.Fatalf("run %d: head seq %d, want %d", run, seq, run*6)
			}
		}
		for i := range 5 {
			mustRecord(t, l, Event{Action: ActionStart, Fields: map[string]string{"run": fmt.Sprint(run), "i": fmt.Sprint(i)}})
		}
		mustClose(t, l)
	}
	rep, err := Verify(dir, testKey())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 18 || rep.Anchors != 3 || len(rep.Files) != 1 || len(rep.Incidents) != 0 {
		t.Fatalf("report = %+v", rep)
	}
}

func TestOpenAfterCrash(t *testing.T) {
	// A crash leaves the durable lines without a final anchor; copy them
	// out of a live log, as the disk would hold them.
	live := openLog(t, Options{})
	for i := range 4 {
		mustRecord(t, live, Event{Action: ActionRelease, Owner: fmt.Sprintf("user:%d", i)})
	}
	crashed := func(t *testing.T) (string, string) {
		dir := t.TempDir()
		files, _ := listFiles(live.opts.Dir)
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(live.opts.Dir, f.name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f.name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir, filepath.Join(dir, files[len(files)-1].name)
	}

	tests := []struct {
		name      string
		damage    func(t *testing.T, file string)
		incidents []string
		openErr   string // substring; "" = Open succeeds
	}{
		{"unanchored tail", func(*testing.T, string) {}, []string{ActionTailUnanchored}, ""},
		{"incomplete last line", func(t *testing.T, file string) {
			f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(`{"seq":5,"time":"2026-`)
			f.Close()
		}, []string{ActionTailRepaired, ActionTailUnanchored}, ""},
		{"edited line", func(t *testing.T, file string) {
			b, _ := os.ReadFile(file)
			os.WriteFile(file, []byte(strings.Replace(string(b), "user:1", "user:7", 1)), 0o600)
		}, nil, "audit-000001.jsonl:2 (seq 2): prev_mismatch"},
		{"garbage line", func(t *testing.T, file string) {
			f, _ := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
			f.WriteString("not json\n")
			f.Close()
		}, nil, "audit-000001.jsonl:5: bad_line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, file := crashed(t)
			tt.damage(t, file)
			l, err := Open(context.Background(), Options{Dir: dir, AnchorKey: testKey(), ReserveBytes: -1})
			if tt.openErr != "" {
				if err == nil || !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), tt.openErr) {
					t.Fatalf("Open = %v, want ErrBroken naming %q", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if seq, _ := l.Head(); seq != 4+uint64(len(tt.incidents)) {
				t.Fatalf("head seq %d", seq)
			}
			mustRecord(t, l, Event{Action: ActionStart})
			mustClose(t, l)
			rep, err := Verify(dir, testKey())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, in := range rep.Incidents {
				got = append(got, in.Action)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.incidents) {
				t.Fatalf("incidents %v, want %v", got, tt.incidents)
			}
		})
	}
}

func TestRecordFailsClosed(t *testing.T) {
	tests := []struct {
		name string
		// breakIt makes the next write fail, for real, as root too.
		breakIt func(t *testing.T, l *Log)
		wantErr error
		// mend undoes it; nil when the log mends itself.
		mend func(t *testing.T, l *Log)
		// genesis: whether Verify still sees the log from seq 1.
		genesis   bool
		incidents []string
	}{
		{
			name: "audit dir replaced by a regular file",
			breakIt: func(t *testing.T, l *Log) {
				if err := os.RemoveAll(l.opts.Dir); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(l.opts.Dir, []byte("not a directory"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrFileRemoved,
			mend: func(t *testing.T, l *Log) {
				// Records keep failing while the directory is gone.
				if err := l.Record(context.Background(), Event{Action: ActionStore}); !errors.Is(err, syscall.ENOTDIR) {
					t.Fatalf("second Record = %v, want ENOTDIR", err)
				}
				if err := os.Remove(l.opts.Dir); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(l.opts.Dir, 0o700); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "descriptor closed under the log",
			breakIt: func(t *testing.T, l *Log) {
				onWriter(l, func() { l.w.f.Close() })
			},
			wantErr: os.ErrClosed,
			genesis: true,
		},
		{
			name: "disk full (/dev/full)",
			breakIt: func(t *testing.T, l *Log) {
				full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
				if err != nil {
					t.Skip("no /dev/full:", err)
				}
				onWriter(l, func() { l.w.f.Close(); l.w.f = full })
			},
			wantErr: ErrDiskFull,
			mend: func(t *testing.T, l *Log) {
				if _, err := os.Stat(reservePath(l.opts.Dir)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("reserve not released: %v", err)
				}
				if !l.Stats().LowSpace {
					t.Fatal("not in low-space mode")
				}
				// The real disk has space: the next batch allocates the
				// reserve again (TestDiskFullTmpfs fills a real disk).
			},
			genesis:   true,
			incidents: []string{ActionDiskFull, ActionSpaceRestored},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, Options{Dir: filepath.Join(dir, "audit")})
			mustRecord(t, l, Event{Action: ActionStart})
			mustRecord(t, l, Event{Action: ActionStore, Owner: "user:1"})
			tt.breakIt(t, l)

			err := l.Record(context.Background(), Event{Action: ActionRelease, Owner: "user:1"})
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Record = %v, want ErrUnavailable and %v", err, tt.wantErr)
			}
			if l.Healthy() || l.LastError() == nil || l.Stats().WriteErrors == 0 {
				t.Fatalf("healthy after a failed write: %+v", l.Stats())
			}
			if tt.mend != nil {
				tt.mend(t, l)
			}
			mustRecord(t, l, Event{Action: ActionStore, Owner: "user:2"})
			if !l.Healthy() {
				t.Fatalf("still unhealthy after a good write: %v", l.LastError())
			}
			mustClose(t, l)

			rep, err := Verify(l.opts.Dir, testKey())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if rep.Genesis != tt.genesis {
				t.Fatalf("Genesis = %v, want %v", rep.Genesis, tt.genesis)
			}
			var got []string
			for _, in := range rep.Incidents {
				got = append(got, in.Action)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.incidents) {
				t.Fatalf("incidents %v, want %v", got, tt.incidents)
			}
			for _, line := range readLines(t, l.opts.Dir) {
				if strings.Contains(line.Text, `"action":"release"`) {
					t.Fatalf("the refused release is in the log: %s", line.Text)
				}
			}
		})
	}
}

func TestRecordTimesOut(t *testing.T) {
	l := openLog(t, Options{WriteTimeout: 50 * time.Millisecond})
	release := make(chan struct{})
	stuck := make(chan struct{})
	go onWriter(l, func() { close(stuck); <-release }) // a hung disk
	<-stuck

	err := l.Record(context.Background(), Event{Action: ActionRelease, Owner: "user:late"})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("Record = %v, want ErrTimeout", err)
	}
	if l.Healthy() {
		t.Fatal("healthy after a timeout")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Record(ctx, Event{Action: ActionRelease, Owner: "user:cancelled"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Record with a cancelled context = %v", err)
	}
	close(release)

	// A later write succeeds (retried: on a loaded machine an fsync may
	// itself take longer than this short timeout).
	for i := 0; ; i++ {
		err := l.Record(context.Background(), Event{Action: ActionStore})
		if err == nil {
			break
		}
		if !errors.Is(err, ErrTimeout) || i == 100 {
			t.Fatalf("Record after the disk came back: %v", err)
		}
	}
	if !l.Healthy() {
		t.Fatalf("unhealthy after a good write: %v", l.LastError())
	}
	mustClose(t, l)
	for _, line := range readLines(t, l.opts.Dir) {
		if strings.Contains(line.Text, "user:late") || strings.Contains(line.Text, "user:cancelled") {
			t.Fatalf("an abandoned line was written: %s", line.Text)
		}
	}
	if _, err := Verify(l.opts.Dir, testKey()); err != nil {
		t.Fatal(err)
	}
}

func TestGroupCommit(t *testing.T) {
	l := openLog(t, Options{})
	const writers, each = 64, 8
	start := make(chan struct{})
	errs := make(chan error, writers*each)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			<-start
			for i := range each {
				errs <- l.Record(context.Background(), Event{Action: ActionRelease, Owner: fmt.Sprintf("user:%d", g), Fields: map[string]string{"i": fmt.Sprint(i)}})
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := l.Stats()
	if s.Lines != writers*each || s.Fsyncs >= s.Lines || s.Batches != s.Fsyncs {
		t.Fatalf("lines %d, batches %d, fsyncs %d: want fewer fsyncs than lines", s.Lines, s.Batches, s.Fsyncs)
	}
	t.Logf("%d lines in %d fsyncs", s.Lines, s.Fsyncs)
	mustClose(t, l)
	if rep, err := Verify(l.opts.Dir, testKey()); err != nil || rep.Lines != writers*each+1 {
		t.Fatalf("Verify: %v, %+v", err, rep)
	}
}

func TestRefusalFlood(t *testing.T) {
	clock := &fixedClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	l := openLog(t, Options{RefusalRate: 10, Clock: clock.now})
	const n = 100_000
	reasons := []string{"origin_mismatch", "token_expired", "wrong_audience", "counter_backwards"}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range n / 4 {
				l.Refusal(context.Background(), Event{Reason: reasons[g], Remote: "203.0.113.7", Fields: map[string]string{"i": fmt.Sprint(i)}})
			}
		})
	}
	wg.Wait()
	// Refusals under attacker-chosen reasons stay bounded in memory.
	for i := range 200 {
		l.Refusal(context.Background(), Event{Reason: fmt.Sprintf("junk-%d", i)})
	}
	mustClose(t, l)

	s := l.Stats()
	if s.Refusals != n+200 || s.RefusalsSampled+s.RefusalsDropped != s.Refusals {
		t.Fatalf("stats %+v", s)
	}
	if s.RefusalsSampled > 10 || s.RefusalsSampled == 0 {
		t.Fatalf("%d refusal lines sampled, want 1..10 (the clock did not move)", s.RefusalsSampled)
	}
	if len(s.RefusalsByReason) > maxReasons || s.RefusalsByReason[otherReason] == 0 {
		t.Fatalf("%d reasons counted", len(s.RefusalsByReason))
	}
	var lines, skipped uint64
	for _, line := range readLines(t, l.opts.Dir) {
		w := wireOf(t, line)
		if w.Action == ActionRefusal {
			lines++
		}
		for _, v := range w.RefusalsSkipped {
			skipped += v
		}
	}
	if lines != s.RefusalsSampled || lines+skipped != n+200 {
		t.Fatalf("%d refusal lines + %d skipped in the log, want %d (%d sampled)", lines, skipped, n+200, s.RefusalsSampled)
	}
	if _, err := Verify(l.opts.Dir, testKey()); err != nil {
		t.Fatal(err)
	}
}

func TestRefusalRateRefills(t *testing.T) {
	clock := &fixedClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var s sampler
	s.init(10)
	admitted := 0
	for range 100 {
		if s.admit("x", clock.t) {
			admitted++
		}
	}
	if admitted != 10 {
		t.Fatalf("burst admitted %d, want 10", admitted)
	}
	clock.t = clock.t.Add(500 * time.Millisecond)
	admitted = 0
	for range 100 {
		if s.admit("x", clock.t) {
			admitted++
		}
	}
	if admitted != 5 {
		t.Fatalf("after half a second admitted %d, want 5", admitted)
	}
}

func TestPeriodicAnchor(t *testing.T) {
	l := openLog(t, Options{AnchorInterval: 10 * time.Millisecond})
	mustRecord(t, l, Event{Action: ActionStart})
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Anchors == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no anchor written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The live log's tail is anchored now: it verifies without Close.
	if _, err := Verify(l.opts.Dir, testKey()); err != nil {
		t.Fatal(err)
	}
	// An idle log writes no more anchors.
	before := l.Stats().Lines
	time.Sleep(50 * time.Millisecond)
	if after := l.Stats().Lines; after != before {
		t.Fatalf("idle log wrote %d lines", after-before)
	}
}

func TestClose(t *testing.T) {
	l := openLog(t, Options{})
	mustRecord(t, l, Event{Action: ActionStart})
	mustClose(t, l)
	if err := l.Record(context.Background(), Event{Action: ActionStop}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close = %v", err)
	}
	if err := l.Close(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	l.Refusal(context.Background(), Event{Reason: "x"}) // must not block or panic
	// An empty log closed at once still verifies: it holds an anchor.
	e := openLog(t, Options{})
	mustClose(t, e)
	if _, err := Verify(e.opts.Dir, testKey()); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsRedacted(t *testing.T) {
	const v = "hunter2-super-secret-key-material"
	key := secret.CopyBytes([]byte(v))
	tok := secret.NewString(v)
	l := openLog(t, Options{})
	mustRecord(t, l, Event{Action: ActionStore, Owner: "user:1", Fields: map[string]string{
		"v": fmt.Sprint(key), "s": fmt.Sprintf("%s", key), "x": fmt.Sprintf("%x", key), "q": fmt.Sprintf("%q", key),
		"plus": fmt.Sprintf("%+v", struct{ K secret.Bytes }{key}), "token": fmt.Sprint(tok),
	}})
	l.Refusal(context.Background(), Event{Reason: "bad_token", Fields: map[string]string{"token": fmt.Sprintf("%v", tok)}})
	mustClose(t, l)
	files, _ := listFiles(l.opts.Dir)
	var all strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(filepath.Join(l.opts.Dir, f.name))
		all.Write(b)
	}
	out := all.String()
	for _, leak := range []string{v, hex.EncodeToString([]byte(v)), fmt.Sprintf("%q", v)} {
		if strings.Contains(out, leak) {
			t.Fatalf("secret in the audit log: %s", out)
		}
	}
	if strings.Count(out, "[redacted]") < 7 {
		t.Fatalf("redaction markers missing: %s", out)
	}
}

func TestOpenFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"invalid options", Options{Dir: t.TempDir()}, ErrInvalidOptions},
		{"dir under a regular file", Options{Dir: filepath.Join(file, "audit"), AnchorKey: testKey()}, syscall.ENOTDIR},
		{"reserve larger than the disk", Options{Dir: t.TempDir(), AnchorKey: testKey(), ReserveBytes: 1 << 60}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(context.Background(), tt.opts)
			if err == nil {
				l.Close(context.Background())
				t.Fatal("Open succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
			if _, serr := os.Stat(reservePath(tt.opts.Dir)); serr == nil {
				t.Fatal("a failed reserve left its file behind")
			}
		})
	}
}

// TestCheckEventAllocations: the size check of an ordinary event (every
// release makes one) encodes nothing; an event near the limit is still
// measured exactly, and one past it refused.
func TestCheckEventAllocations(t *testing.T) {
	ev := Event{Action: ActionRelease, Outcome: OutcomeSuccess, Actor: "firebase:proj//uid-0001",
		Owner: "firebase:proj//uid-0001", Method: "FIREBASE", RequestID: "0123456789abcdef", Remote: "127.0.0.1",
		Fields: map[string]string{"credential": "abc", "rp": "example.com"}}
	if n := testing.AllocsPerRun(20, func() {
		if err := checkEvent(ev); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("checkEvent of an ordinary event makes %.0f allocations, want 0", n)
	}
	big := ev
	big.Fields = map[string]string{"x": strings.Repeat("a", MaxEventBytes-600)}
	if err := checkEvent(big); err != nil {
		t.Errorf("an event under the limit is refused: %v", err)
	}
	big.Fields = map[string]string{"x": strings.Repeat("a", MaxEventBytes)}
	if err := checkEvent(big); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("an event over the limit: %v", err)
	}
	esc := ev
	esc.Fields = map[string]string{"x": strings.Repeat("\x01", MaxEventBytes/6+1)} // 6 bytes each once escaped
	if err := checkEvent(esc); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("an event over the limit once escaped: %v", err)
	}
}
