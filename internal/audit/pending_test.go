package audit

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRecordPendingWaitsForFsync: RecordPending returns once the line is
// written, before its fsync; wait returns only after an fsync covering it
// (counted in Stats.Fsyncs). The syncer is held off by holding the lock it
// takes around its fsync.
func TestRecordPendingWaitsForFsync(t *testing.T) {
	l := openLog(t, Options{WrittenSyncDelay: 100 * time.Millisecond})
	mustRecord(t, l, Event{Action: ActionStart}) // the file exists: no write below needs the lock

	l.w.fmu.Lock()
	held := true
	defer func() {
		if held {
			l.w.fmu.Unlock()
		}
	}()
	before := l.Stats().Fsyncs
	wait, err := l.RecordPending(context.Background(), Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: "user:1"})
	if err != nil {
		t.Fatalf("RecordPending: %v", err)
	}
	if got := l.Stats().Fsyncs; got != before {
		t.Fatalf("fsyncs %d → %d while the syncer is held", before, got)
	}
	// Not durable yet: wait gives up with the context, not nil.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err = wait(ctx)
	cancel()
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait before the fsync = %v, want ErrUnavailable and the context's deadline", err)
	}
	held = false
	l.w.fmu.Unlock()
	if err := wait(context.Background()); err != nil {
		t.Fatalf("wait: %v", err)
	}
	if got := l.Stats().Fsyncs; got <= before {
		t.Fatalf("wait returned with fsyncs %d → %d: the line was not fsynced", before, got)
	}
	if !l.Healthy() {
		t.Fatal(l.LastError())
	}
	mustClose(t, l)
	if _, err := Verify(l.opts.Dir, testKey()); err != nil {
		t.Fatal(err)
	}
}

// TestRecordPendingFsyncFailureFailsWaiters: the lines are written to a
// file whose fsync fails for real (a pipe: fsync answers EINVAL). Every
// waiter whose line the failed fsync covered gets an error, the log turns
// unhealthy, and the next Record starts a new file with the incident.
func TestRecordPendingFsyncFailureFailsWaiters(t *testing.T) {
	l := openLog(t, Options{})
	mustRecord(t, l, Event{Action: ActionStart})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	onWriter(l, func() { l.w.f.Close(); l.w.f = pw })

	// Both lines are written before the syncer may fsync (it needs the
	// lock), so one failed fsync covers both.
	l.w.fmu.Lock()
	var waits []func(context.Context) error
	var errs []error
	for _, owner := range []string{"user:1", "user:2"} {
		wait, err := l.RecordPending(context.Background(), Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: owner})
		waits, errs = append(waits, wait), append(errs, err)
	}
	l.w.fmu.Unlock()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("RecordPending: %v", err)
	}
	for i, wait := range waits {
		if err := wait(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "fsync") {
			t.Fatalf("wait %d after a failed fsync = %v, want ErrUnavailable naming the fsync", i, err)
		}
	}
	if l.Healthy() {
		t.Fatal("healthy after a failed fsync")
	}
	mustRecord(t, l, Event{Action: ActionStore, Owner: "user:3"})
	if !l.Healthy() {
		t.Fatal(l.LastError())
	}
	// A line recorded now is durable as usual.
	wait, err := l.RecordPending(context.Background(), Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: "user:4"})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(context.Background()); err != nil {
		t.Fatalf("wait after recovery: %v", err)
	}
}

// TestRecordPendingWriteFailureRefuses: a line that cannot be written is
// refused by RecordPending itself (no wait to call): its file was deleted,
// which a pending line's batch checks every time.
func TestRecordPendingWriteFailureRefuses(t *testing.T) {
	l := openLog(t, Options{})
	mustRecord(t, l, Event{Action: ActionStart})
	if err := os.Remove(l.opts.Dir + "/" + l.w.fileName()); err != nil {
		t.Fatal(err)
	}
	wait, err := l.RecordPending(context.Background(), Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: "user:1"})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrFileRemoved) || wait != nil {
		t.Fatalf("RecordPending into a deleted file = %v, want ErrUnavailable and ErrFileRemoved", err)
	}
}
