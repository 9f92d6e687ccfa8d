package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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

// TestRequestIDFromContext: an event without a RequestID takes the one
// the context carries; an explicit one wins.
func TestRequestIDFromContext(t *testing.T) {
	dir := t.TempDir()
	key := secret.CopyBytes(make([]byte, 32))
	l, err := Open(context.Background(), Options{Dir: dir, AnchorKey: key, ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := WithRequestID(context.Background(), "trace-123")
	if err := l.Record(ctx, Event{Action: ActionRelease, Outcome: OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, Event{Action: ActionStore, Outcome: OutcomeSuccess, RequestID: "explicit-9"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "audit-000001.jsonl"))
	if !bytes.Contains(b, []byte(`"trace-123"`)) || !bytes.Contains(b, []byte(`"explicit-9"`)) || bytes.Count(b, []byte("trace-123")) != 1 {
		t.Fatalf("request ids in the log:\n%s", b)
	}
}
