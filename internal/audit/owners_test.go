package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// An owner's events come from the log itself: only theirs, newest first,
// each with its seq and line hash as in the file; a new index (a restart)
// finds the same; lines appended later are found; a file removed for
// retention takes its lines with it.
func TestOwnerIndex(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, MaxFileBytes: 4 << 10})
	for i := 0; i < 20; i++ {
		owner := []string{"firebase:p//alice", "firebase:p//bob"}[i%2]
		mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: owner, Method: "FIREBASE", RequestID: fmt.Sprint("r", i),
			Remote: "192.0.2.7", Actor: "admin:k1", Fields: map[string]string{"key_version": "1"}})
	}
	x := NewOwnerIndex(dir)
	alice, err := x.Events("firebase:p//alice", 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(alice) != 10 {
		t.Fatalf("alice: %d events, want 10", len(alice))
	}
	lines := readLines(t, dir)
	for i, e := range alice {
		if i > 0 && e.Seq >= alice[i-1].Seq {
			t.Fatal("not newest first")
		}
		sum := sha256.Sum256([]byte(lines[e.Seq-1].Text))
		if e.Line != hex.EncodeToString(sum[:]) || e.Action != ActionRelease || e.KeyVersion != "1" {
			t.Fatalf("event %+v does not match line %q", e, lines[e.Seq-1].Text)
		}
	}
	if got, _ := x.Events("firebase:p//alice", 3, alice[2].Seq); len(got) != 3 || got[0].Seq != alice[3].Seq {
		t.Fatalf("page before seq %d: %+v", alice[2].Seq, got)
	}
	if got, _ := x.Events("firebase:p//carol", 100, 0); len(got) != 0 {
		t.Fatalf("an unknown owner sees %d events", len(got))
	}
	// Appended later, and found by a fresh index (a restart) as well.
	mustRecord(t, l, Event{Action: ActionDelete, Outcome: OutcomeSuccess, Owner: "firebase:p//alice", Method: "FIREBASE"})
	for _, ix := range []*OwnerIndex{x, NewOwnerIndex(dir)} {
		got, err := ix.Events("firebase:p//alice", 100, 0)
		if err != nil || len(got) != 11 || got[0].Action != ActionDelete {
			t.Fatalf("after a delete: %d events, %v", len(got), err)
		}
	}
	// The first file removed (retention): its lines are gone from the list.
	files, _ := listFiles(dir)
	if len(files) < 2 {
		t.Fatalf("want rotation, have %d files", len(files))
	}
	if err := os.Remove(filepath.Join(dir, files[0].name)); err != nil {
		t.Fatal(err)
	}
	got, err := x.Events("firebase:p//alice", 100, 0)
	if err != nil || len(got) >= 11 || len(got) == 0 {
		t.Fatalf("after removing %s: %d events, %v", files[0].name, len(got), err)
	}
}
