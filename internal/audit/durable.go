package audit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// durability tracks which written lines are durable, for RecordPending's
// wait. The writer reports what it wrote and its own fsyncs; the syncer
// reports its background fsyncs; a failed fsync, or a file dropped with
// unsynced lines, marks those lines lost. Every seq up to settled is
// either durable or in lost.
type durability struct {
	mu      sync.Mutex
	written uint64 // last seq written to a file
	settled uint64
	lost    []lostRange
	wake    chan struct{} // closed and replaced whenever settled moves

	// urgent: a batch holding a RecordPending line asked for the
	// background fsync, which then skips Options.WrittenSyncDelay (a
	// caller is waiting for it).
	urgent atomic.Bool
}

type lostRange struct {
	from, to uint64
	err      error
}

// init starts the bookkeeping at seq (the lines found on disk at Open).
func (d *durability) init(seq uint64) {
	d.mu.Lock()
	d.written, d.settled, d.wake = seq, seq, make(chan struct{})
	d.mu.Unlock()
}

// wrote records that every line up to seq is written to the current file.
func (d *durability) wrote(seq uint64) {
	d.mu.Lock()
	d.written = max(d.written, seq)
	d.mu.Unlock()
}

// writtenSeq is the last seq written; an fsync started after reading it
// covers every line up to it that is still in the current file.
func (d *durability) writtenSeq() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.written
}

// synced records that every line up to seq is durable.
func (d *durability) synced(seq uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if seq > d.settled {
		d.settled = seq
		d.wakeAll()
	}
}

// failed marks every line written but not yet durable as lost: the fsync
// that was to cover them failed, or their file was dropped.
func (d *durability) failed(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.written > d.settled {
		d.lost = append(d.lost, lostRange{from: d.settled + 1, to: d.written, err: err})
		d.settled = d.written
		d.wakeAll()
	}
}

func (d *durability) wakeAll() {
	close(d.wake)
	d.wake = make(chan struct{})
}

// state answers whether seq is settled and, if it is, the error of its
// loss (nil: durable); otherwise the channel closed at the next change.
func (d *durability) state(seq uint64) (wake <-chan struct{}, settled bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if seq > d.settled {
		return d.wake, false, nil
	}
	for i := len(d.lost) - 1; i >= 0; i-- {
		if r := d.lost[i]; seq >= r.from && seq <= r.to {
			return nil, true, r.err
		}
	}
	return nil, true, nil
}

func anyPending(reqs []*request) bool {
	for _, r := range reqs {
		if r.pending {
			return true
		}
	}
	return false
}

// RecordPending writes ev as one line, like [Log.RecordWritten], and
// returns once the line is written to the file in chain order; the fsync
// that makes it durable has been asked for and runs in the background,
// without Options.WrittenSyncDelay. wait returns nil once that fsync (or a
// later one covering the line) has succeeded; it returns an error wrapping
// [ErrUnavailable] if the fsync failed (the log is then unhealthy, as
// after any failed fsync), if the wait exceeds [Options.WriteTimeout] or
// ctx, or if the log closed first. An error from RecordPending itself
// means the line was not written: refuse the action. An error from wait
// means the line may be lost: do not acknowledge the action.
//
// It lets a caller overlap its own durable commit with the audit line's
// fsync while keeping the line first in order: write the line, commit,
// then wait (keys.Service.Store does so).
func (l *Log) RecordPending(ctx context.Context, ev Event) (wait func(context.Context) error, err error) {
	if ev.RequestID == "" {
		ev.RequestID = RequestIDFrom(ctx)
	}
	if ev.Time.IsZero() {
		ev.Time = l.opts.Clock()
	}
	if strings.HasPrefix(ev.Action, incidentActionPrefix) {
		return nil, fmt.Errorf("%w: actions starting with %q are reserved", ErrInvalidEvent, incidentActionPrefix)
	}
	if err := checkEvent(ev); err != nil {
		return nil, err
	}
	r := &request{ev: ev, written: true, pending: true, done: make(chan error, 1)}
	if err := l.submitEvent(ctx, r); err != nil {
		return nil, err
	}
	seq := r.lineSeq
	return func(ctx context.Context) error { return l.waitDurable(ctx, seq) }, nil
}

// waitDurable waits until line seq is durable or lost, at most
// Options.WriteTimeout.
func (l *Log) waitDurable(ctx context.Context, seq uint64) error {
	var timer *time.Timer
	for {
		wake, settled, err := l.w.durable.state(seq)
		if settled {
			if err != nil {
				return unavailable(err)
			}
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(l.opts.WriteTimeout)
			defer timer.Stop()
		}
		select {
		case <-wake:
		case <-timer.C:
			l.timeouts.Add(1)
			l.setErr(fmt.Errorf("%w (%s): fsync of an audit line", ErrTimeout, l.opts.WriteTimeout))
			return unavailable(ErrTimeout)
		case <-ctx.Done():
			return unavailable(ctx.Err())
		case <-l.done:
			// Close fsyncs what was written; look once more.
			if _, settled, err := l.w.durable.state(seq); settled {
				if err != nil {
					return unavailable(err)
				}
				return nil
			}
			return unavailable(ErrClosed)
		}
	}
}
