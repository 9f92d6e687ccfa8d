package audit

import (
	"context"
	"os"
)

// HoldSyncer keeps the background fsync of written lines from running
// (it takes the lock the syncer holds around its fsync) until release.
// The log's file must exist: HoldSyncer records a line first.
func HoldSyncer(l *Log) (release func(), err error) {
	if err := l.Record(context.Background(), Event{Action: ActionStart, Outcome: OutcomeSuccess}); err != nil {
		return nil, err
	}
	l.w.fmu.Lock()
	return l.w.fmu.Unlock, nil
}

// BreakSync makes the log's next fsync fail for real: its current file is
// swapped for a pipe (lines are written to it; fsync answers EINVAL). The
// log then starts a new file, as after any failed fsync. stop closes the
// pipe's reading end.
func BreakSync(l *Log) (stop func(), err error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	l.inject <- func() {
		if l.w.f != nil {
			_ = l.w.f.Close()
		}
		l.w.f = pw
		close(done)
	}
	<-done
	return func() { _ = pr.Close() }, nil
}
