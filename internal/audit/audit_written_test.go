package audit

import (
	"context"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/internal/secret"
)

// TestRecordWritten: lines recorded with RecordWritten (or an action in
// WrittenActions) are in the chain and durable after Close, verify, and
// share fsyncs with durable lines.
func TestRecordWritten(t *testing.T) {
	dir := t.TempDir()
	key := secret.CopyBytes(make([]byte, 32))
	l, err := Open(context.Background(), Options{Dir: dir, AnchorKey: key, ReserveBytes: -1, WrittenActions: []string{ActionRelease}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			action := ActionRelease
			if i%4 == 0 {
				action = ActionStore
			}
			if err := l.Record(context.Background(), Event{Action: action, Outcome: OutcomeSuccess, Owner: "user:x"}); err != nil {
				t.Error(err)
			}
			if err := l.RecordWritten(context.Background(), Event{Action: ActionDelete, Outcome: OutcomeSuccess}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Lines < 129 || st.Fsyncs >= 64 {
		t.Fatalf("lines %d fsyncs %d: want all lines, fewer fsyncs than writers", st.Lines, st.Fsyncs)
	}
	rep, err := Verify(dir, key)
	if err != nil || rep.Lines < 129 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if err := l.RecordWritten(context.Background(), Event{Action: ActionRelease, Outcome: OutcomeSuccess}); err == nil {
		t.Fatal("RecordWritten after Close succeeded")
	}
}
