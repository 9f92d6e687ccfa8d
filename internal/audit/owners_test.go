package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// The index's memory is bounded: however many owners and lines the log
// holds, it keeps at most MaxRefs line references (least recently written
// owners dropped first) and at most PerOwner per owner (the newest). An
// owner dropped from memory is found again by reading the files (each
// query still sees all of that owner's events, up to PerOwner).
func TestOwnerIndexBounded(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, MaxFileBytes: 16 << 10})
	const owners, each = 60, 3
	for i := 0; i < each; i++ {
		for o := 0; o < owners; o++ {
			mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: fmt.Sprint("user:o", o), Method: "PASSKEY", RequestID: fmt.Sprint("r", i)})
		}
	}
	for i := 0; i < 25; i++ {
		mustRecord(t, l, Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: "user:busy", Method: "PASSKEY", RequestID: fmt.Sprint("b", i)})
	}
	x := NewOwnerIndexLimits(dir, OwnerIndexLimits{MaxRefs: 40, PerOwner: 10})
	check := func() {
		t.Helper()
		if n, owners := x.size(); n > 40 || owners > 40 {
			t.Fatalf("index holds %d references of %d owners, bound 40", n, owners)
		}
	}
	// The busy owner: the 10 newest, newest first.
	got, err := x.Events("user:busy", 100, 0)
	if err != nil || len(got) != 10 || got[0].RequestID != "b24" || got[9].RequestID != "b15" {
		t.Fatalf("busy owner: %d events (%v), %+v", len(got), err, got)
	}
	check()
	// Every owner, the first ones long evicted by the later ones: all 3
	// events, and only theirs.
	for o := 0; o < owners; o++ {
		owner := fmt.Sprint("user:o", o)
		got, err := x.Events(owner, 100, 0)
		if err != nil || len(got) != each {
			t.Fatalf("%s: %d events, %v", owner, len(got), err)
		}
		for _, e := range got {
			line, err := FindLine([]string{dir}, e.Seq)
			if err != nil || !strings.Contains(string(line), `"owner":"`+owner+`"`) {
				t.Fatalf("%s sees line %d: %s", owner, e.Seq, line)
			}
		}
		check()
	}
	if got, _ := x.Events("user:nobody", 100, 0); len(got) != 0 {
		t.Fatalf("an unknown owner sees %d events", len(got))
	}
	// Lines appended after an owner was dropped are found with the older ones.
	mustRecord(t, l, Event{Action: ActionDelete, Outcome: OutcomeSuccess, Owner: "user:o0", Method: "PASSKEY"})
	got, err = x.Events("user:o0", 100, 0)
	if err != nil || len(got) != each+1 || got[0].Action != ActionDelete {
		t.Fatalf("after a later line: %d events, %v", len(got), err)
	}
	check()
}
