package audit

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// TestAppendOffline: an offline command's lines are written, anchored and
// closed; an event without an actor is the operator's.
func TestAppendOffline(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{Dir: dir, AnchorKey: testKey(), ReserveBytes: -1}
	if err := AppendOffline(ctx, opts,
		Event{Action: "admin_reseal", Outcome: OutcomeSuccess},
		Event{Action: "rollback_accepted", Outcome: OutcomeSuccess, Actor: "admin:k1"}); err != nil {
		t.Fatal(err)
	}
	if err := AppendOffline(ctx, opts, Event{Action: "admin_recover", Outcome: OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir, testKey()); err != nil {
		t.Fatalf("Verify after offline appends: %v", err)
	}
	actors := map[string]string{}
	for _, l := range readLines(t, dir) {
		var ev struct{ Action, Actor string }
		if err := json.Unmarshal([]byte(l.Text), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Action != "" {
			actors[ev.Action] = ev.Actor
		}
	}
	if actors["admin_reseal"] != OperatorActor || actors["rollback_accepted"] != "admin:k1" || actors["admin_recover"] != OperatorActor {
		t.Fatalf("actors: %v", actors)
	}
	// An event that cannot be written is an error.
	if err := AppendOffline(ctx, opts, Event{Outcome: OutcomeSuccess}); err == nil {
		t.Fatal("an event without an action was accepted")
	}
	if err := AppendOffline(ctx, Options{Dir: dir}, Event{Action: "admin_reseal"}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("no anchor key: %v", err)
	}
}

// TestForgetForeignHead: a store restored onto a host keeps its recorded
// audit head only where the audit log holds it. Elsewhere the head would
// fail the new host's log forever (VerifyHead: truncated); it is removed
// and returned for the recover line, and the new log then verifies with
// the heads it records itself.
func TestForgetForeignHead(t *testing.T) {
	ctx := context.Background()
	oldDir := t.TempDir()
	dbPath := filepath.Join(t.TempDir(), "keywarden.db")
	db := openStore(t, dbPath)
	headBase(t, oldDir, db) // the old host's log; its head recorded in db
	head := loadHead(t, db)
	if head == nil {
		t.Fatal("no head recorded")
	}
	cp, err := OpenCheckpoint(head, testKey())
	if err != nil {
		t.Fatal(err)
	}

	// Same host (or the audit files copied along): the head stays.
	if got, err := ForgetForeignHead(ctx, db, oldDir, testKey()); err != nil || got != nil {
		t.Fatalf("log holds the head: ForgetForeignHead = %v, %v; want it kept", got, err)
	}
	if string(loadHead(t, db)) != string(head) {
		t.Fatal("the head was changed")
	}
	// The same log, written on after the head: still held.
	l := openLog(t, Options{Dir: oldDir, Heads: readOnlyHeads{db}})
	mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess})
	mustClose(t, l)
	if got, err := ForgetForeignHead(ctx, db, oldDir, testKey()); err != nil || got != nil {
		t.Fatalf("longer log: ForgetForeignHead = %v, %v; want it kept", got, err)
	}

	// A head that does not verify is kept for serve to report.
	bad := openStore(t, "")
	if err := StoreHeads(bad).SaveHead(ctx, head); err != nil {
		t.Fatal(err)
	}
	if got, err := ForgetForeignHead(ctx, bad, t.TempDir(), secret.NewBytes(make([]byte, 32))); err != nil || got != nil {
		t.Fatalf("head under another key: %v, %v; want it kept", got, err)
	}

	// Another log at the head's seq (another host's history): forgotten.
	other := t.TempDir()
	ol := openLog(t, Options{Dir: other})
	for range 80 {
		mustRecord(t, ol, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: "user:other"})
	}
	mustClose(t, ol)
	copyDB := filepath.Join(t.TempDir(), "copy.db")
	db.Close()
	b, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyDB, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cdb := openStore(t, copyDB)
	if got, err := ForgetForeignHead(ctx, cdb, other, testKey()); err != nil || got == nil || got.Seq != cp.Seq {
		t.Fatalf("another log: ForgetForeignHead = %v, %v; want the head %d forgotten", got, err, cp.Seq)
	}

	// A new host with no audit files: before, its first log fails against
	// the old head forever; the head forgotten, it verifies.
	newDir := filepath.Join(t.TempDir(), "audit")
	ndb := openStore(t, dbPath)
	probe := t.TempDir()
	if err := AppendOffline(ctx, Options{Dir: probe, AnchorKey: testKey(), ReserveBytes: -1}, Event{Action: "admin_recover"}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyHead(probe, testKey(), head); !errors.Is(err, ErrTruncated) {
		t.Fatalf("a new log under the old head: %v, want ErrTruncated (the problem this solves)", err)
	}
	got, err := ForgetForeignHead(ctx, ndb, newDir, testKey())
	if err != nil || got == nil || got.Seq != cp.Seq || got.Hash != cp.Hash || got.File != cp.File {
		t.Fatalf("new host: ForgetForeignHead = %v, %v; want %v", got, err, cp)
	}
	if loadHead(t, ndb) != nil {
		t.Fatal("the head is still recorded")
	}
	f := got.Fields("previous_audit_head_")
	if f["previous_audit_head_seq"] == "" || f["previous_audit_head_hash"] != cp.Hash {
		t.Fatalf("fields: %v", f)
	}
	if err := AppendOffline(ctx, Options{Dir: newDir, AnchorKey: testKey(), ReserveBytes: -1}, Event{Action: "admin_recover", Fields: f}); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, Options{Dir: newDir, Heads: StoreHeads(ndb)}) // serve on the new host
	mustRecord(t, l, Event{Action: ActionStart, Outcome: OutcomeSuccess})
	mustClose(t, l)
	if _, err := VerifyHead(newDir, testKey(), loadHead(t, ndb)); err != nil {
		t.Fatalf("the new host's log after recovery: %v", err)
	}
}

// readOnlyHeads is a HeadStore that does not record: the log is written
// on while the test keeps the old head.
type readOnlyHeads struct{ db *store.DB }

func (h readOnlyHeads) LoadHead(ctx context.Context) ([]byte, error) {
	return StoreHeads(h.db).LoadHead(ctx)
}
func (readOnlyHeads) SaveHead(context.Context, []byte) error { return nil }
