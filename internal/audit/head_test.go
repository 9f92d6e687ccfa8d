package audit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/store"
)

// openStore opens a real store in a fresh directory, closed at the end.
func openStore(t *testing.T, path string) *store.DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "keywarden.db")
	}
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func loadHead(t *testing.T, db *store.DB) []byte {
	t.Helper()
	b, err := StoreHeads(db).LoadHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// headBase writes 60 events through a log that records its head in db, in
// files of 4 KiB (so it rotates), with anchors after events 20 and 40 and
// at Close, and returns its lines.
func headBase(t *testing.T, dir string, db *store.DB) []lineRef {
	t.Helper()
	l := openLog(t, Options{Dir: dir, MaxFileBytes: 4096, Heads: StoreHeads(db)})
	for i := range 60 {
		mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: fmt.Sprintf("user:%02d", i), Method: "passkey"})
		if i == 19 || i == 39 {
			if err := l.Anchor(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustClose(t, l)
	return readLines(t, dir)
}

// anchorsOf returns the indexes of the anchor lines.
func anchorsOf(lines []lineRef) []int {
	var out []int
	for i, l := range lines {
		if l.isAnchor() {
			out = append(out, i)
		}
	}
	return out
}

// wantTruncated checks that VerifyHead fails with ErrTruncated naming the
// range first–last.
func wantTruncated(t *testing.T, dir string, db *store.DB, first, last uint64) {
	t.Helper()
	rep, err := VerifyHead(dir, testKey(), loadHead(t, db))
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("VerifyHead = %v, want ErrTruncated", err)
	}
	want := fmt.Sprintf("lines %d–%d are missing", first, last)
	if rep.Broken == nil || rep.Broken.Kind != KindTruncated || !strings.Contains(rep.Broken.Reason, want) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Broken = %v, err = %v; want %s naming %q", rep.Broken, err, KindTruncated, want)
	}
}

// TestHeadCutBackToAnchor: the log is cut back to an earlier anchor (the
// recent lines and the last anchor deleted), as someone who can write the
// disk but not the store would. Verify alone cannot tell; VerifyHead names
// the missing lines, across rotated files.
func TestHeadCutBackToAnchor(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, "")
	lines := headBase(t, dir, db)
	last := lines[len(lines)-1].seq(t)

	rep, err := VerifyHead(dir, testKey(), loadHead(t, db))
	if err != nil {
		t.Fatalf("untouched log: %v", err)
	}
	if rep.Recorded == nil || rep.Recorded.Seq != last || rep.Recorded.File != lines[len(lines)-1].File {
		t.Fatalf("recorded head %+v, want seq %d in %s", rep.Recorded, last, lines[len(lines)-1].File)
	}
	if len(rep.Files) < 3 {
		t.Fatalf("files %v: the test wants rotation", rep.Files)
	}

	anchors := anchorsOf(lines)
	if len(anchors) != 3 {
		t.Fatalf("anchors at %v, want 3", anchors)
	}
	for _, cut := range anchors[:2] {
		t.Run(fmt.Sprintf("to anchor seq %d", lines[cut].seq(t)), func(t *testing.T) {
			writeLines(t, dir, lines[:cut+1])
			// The cut log is a valid, anchored log on its own: this is
			// what `audit verify` accepted before heads were recorded.
			if _, err := Verify(dir, testKey()); err != nil {
				t.Fatalf("Verify of the cut log = %v; the cut log itself verifies", err)
			}
			wantTruncated(t, dir, db, lines[cut].seq(t)+1, last)
		})
	}
	t.Run("every file removed", func(t *testing.T) {
		files, _ := listFiles(dir)
		for _, f := range files {
			os.Remove(filepath.Join(dir, f.name))
		}
		wantTruncated(t, dir, db, 1, last)
	})
}

// TestHeadCutMidFile: the log is cut in the middle of a file, between
// anchors or in the middle of a line.
func TestHeadCutMidFile(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, "")
	lines := headBase(t, dir, db)
	last := lines[len(lines)-1].seq(t)
	anchors := anchorsOf(lines)
	mid := (anchors[0] + anchors[1]) / 2 // an event between two anchors

	writeLines(t, dir, lines[:mid+1])
	wantTruncated(t, dir, db, lines[mid].seq(t)+1, last)

	// Cut inside a line: the incomplete line is not counted.
	writeLines(t, dir, lines[:mid+1])
	path := filepath.Join(dir, lines[mid].File)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()-10); err != nil {
		t.Fatal(err)
	}
	wantTruncated(t, dir, db, lines[mid].seq(t), last)
}

// TestHeadBadMAC: a recorded head altered in the store (here lowered to
// match a cut log, as an attacker would) fails clearly.
func TestHeadBadMAC(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, "")
	lines := headBase(t, dir, db)
	anchors := anchorsOf(lines)
	cut := anchors[1]
	writeLines(t, dir, lines[:cut+1])

	var cp Checkpoint
	if err := json.Unmarshal(loadHead(t, db), &cp); err != nil {
		t.Fatal(err)
	}
	cp.Seq = lines[cut].seq(t)
	cp.Hash = hashOf(lines[cut])
	forged, _ := json.Marshal(cp) // the old MAC
	if err := StoreHeads(db).SaveHead(context.Background(), forged); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyHead(dir, testKey(), loadHead(t, db))
	if !errors.Is(err, ErrBadHead) || rep.Broken == nil || rep.Broken.Kind != KindBadHead || !strings.Contains(err.Error(), "MAC does not verify") {
		t.Fatalf("VerifyHead = %v (Broken %v), want ErrBadHead saying the MAC does not verify", err, rep.Broken)
	}
	// Garbage is refused the same way.
	if _, err := VerifyHead(dir, testKey(), []byte("{")); !errors.Is(err, ErrBadHead) {
		t.Fatalf("garbage head: %v", err)
	}
	// The writer records the bad head as an incident; verification keeps
	// failing after its next head is recorded.
	l := openLog(t, Options{Dir: dir, Heads: StoreHeads(db)})
	mustRecord(t, l, Event{Action: ActionStart})
	mustClose(t, l)
	if _, err := VerifyHead(dir, testKey(), loadHead(t, db)); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "did not verify") {
		t.Fatalf("after reopening: %v, want ErrTruncated about the head that did not verify", err)
	}
}

func hashOf(r lineRef) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(r.Text))) }

// TestHeadOlderStore: a store restored from before (an older recorded head)
// with the longer log passes, and the writer goes on without an incident.
func TestHeadOlderStore(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(t.TempDir(), "keywarden.db")
	db := openStore(t, dbPath)
	headBase(t, dir, db)
	old := loadHead(t, db)
	l := openLog(t, Options{Dir: dir, Heads: StoreHeads(db)})
	for i := range 5 {
		mustRecord(t, l, Event{Action: ActionStore, Owner: fmt.Sprint(i)})
	}
	mustClose(t, l)
	if string(loadHead(t, db)) == string(old) {
		t.Fatal("the head did not move")
	}
	// Restore the older head.
	if err := StoreHeads(db).SaveHead(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyHead(dir, testKey(), old); err != nil {
		t.Fatalf("log longer than the recorded head: %v", err)
	}
	l = openLog(t, Options{Dir: dir, Heads: StoreHeads(db)})
	mustClose(t, l)
	rep, err := VerifyHead(dir, testKey(), loadHead(t, db))
	if err != nil || len(rep.Incidents) != 0 {
		t.Fatalf("after reopening: %v, incidents %v", err, rep.Incidents)
	}
}

// TestHeadCutAndRestart: the log is cut back and the service restarted,
// which records a new, lower head at its next anchor. The writer notices
// the cut at Open and says so in the log; verification keeps failing and
// names the range.
func TestHeadCutAndRestart(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, "")
	lines := headBase(t, dir, db)
	last := lines[len(lines)-1].seq(t)
	cut := anchorsOf(lines)[1]
	writeLines(t, dir, lines[:cut+1])

	l := openLog(t, Options{Dir: dir, MaxFileBytes: 4096, Heads: StoreHeads(db)})
	mustRecord(t, l, Event{Action: ActionStart})
	if err := l.Anchor(context.Background()); err != nil { // records a lower head
		t.Fatal(err)
	}
	mustRecord(t, l, Event{Action: ActionStore})
	// Live (an unanchored tail): the cut the writer found outranks the tail.
	if _, err := VerifyHead(dir, testKey(), loadHead(t, db)); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "found it truncated") {
		t.Fatalf("live log after the cut: %v, want ErrTruncated from the incident", err)
	}
	mustClose(t, l)
	if got := loadHeadSeq(t, db); got > lines[cut].seq(t)+5 {
		t.Fatalf("recorded head %d, want the restarted log's", got)
	}
	rep, err := VerifyHead(dir, testKey(), loadHead(t, db))
	want := fmt.Sprintf("lines %d–%d are missing", lines[cut].seq(t)+1, last)
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), want) {
		t.Fatalf("VerifyHead = %v, want ErrTruncated naming %q", err, want)
	}
	if len(rep.Incidents) != 1 || rep.Incidents[0].Action != ActionTruncated {
		t.Fatalf("incidents %+v", rep.Incidents)
	}
	// Cutting the incident away is a cut before the recorded head again.
	cutAgain := readLines(t, dir)
	writeLines(t, dir, cutAgain[:cut+1])
	wantTruncated(t, dir, db, lines[cut].seq(t)+1, loadHeadSeq(t, db))
}

func loadHeadSeq(t *testing.T, db *store.DB) uint64 {
	t.Helper()
	cp, err := OpenCheckpoint(loadHead(t, db), testKey())
	if err != nil {
		t.Fatal(err)
	}
	return cp.Seq
}

// TestHeadRewritten: the log is cut back and written again past the
// recorded head by a writer that does not record heads: the line at the
// recorded seq is another line.
func TestHeadRewritten(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, "")
	lines := headBase(t, dir, db)
	cut := anchorsOf(lines)[1]
	writeLines(t, dir, lines[:cut+1])
	l := openLog(t, Options{Dir: dir, MaxFileBytes: 4096})
	for i := range 40 {
		mustRecord(t, l, Event{Action: ActionStore, Owner: fmt.Sprint(i)})
	}
	mustClose(t, l)
	if _, err := VerifyHead(dir, testKey(), loadHead(t, db)); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "is not the recorded head") {
		t.Fatalf("VerifyHead = %v, want ErrTruncated: the line at the recorded seq is another", err)
	}
}

// TestHeadRemoved: deleting the recorded head from the store does not
// switch the check off: the log's anchors say a head was recorded.
func TestHeadRemoved(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, "")
	headBase(t, dir, db)
	if err := db.Update(context.Background(), func(tx *store.Tx) error {
		return tx.DeleteMeta(store.MetaAuditHead)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyHead(dir, testKey(), loadHead(t, db)); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "no head is recorded") {
		t.Fatalf("VerifyHead = %v, want ErrTruncated: no head recorded", err)
	}
	// A log whose writer never recorded heads verifies without one.
	plain := t.TempDir()
	tamperBase(t, plain)
	if _, err := VerifyHead(plain, testKey(), nil); err != nil {
		t.Fatalf("log without heads: %v", err)
	}
}

// TestHeadNotOnRecordPath: lines cost no store write; an anchor costs one,
// recorded by the time Anchor returns.
func TestHeadNotOnRecordPath(t *testing.T) {
	db := openStore(t, "")
	l := openLog(t, Options{Heads: StoreHeads(db), WrittenActions: []string{ActionRelease}})
	before := db.Stats().Commits
	for i := range 100 {
		mustRecord(t, l, Event{Action: ActionRelease, Owner: fmt.Sprint(i)})
		mustRecord(t, l, Event{Action: ActionStore, Owner: fmt.Sprint(i)})
	}
	if got := db.Stats().Commits; got != before {
		t.Fatalf("%d store commits for 200 lines, want none", got-before)
	}
	if err := l.Anchor(context.Background()); err != nil {
		t.Fatal(err)
	}
	seq, hash := l.Head()
	cp, err := OpenCheckpoint(loadHead(t, db), testKey())
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != seq || cp.Hash != hash || cp.File != l.Stats().File {
		t.Fatalf("recorded %+v, want seq %d hash %s", cp, seq, hash)
	}
	if got := db.Stats().Commits; got != before+1 {
		t.Fatalf("%d store commits for one anchor, want 1", got-before)
	}
	if s := l.Stats(); s.HeadSeq != seq || s.HeadsRecorded != 1 || s.HeadErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
	// Close finds the head anchored and recorded: no further write.
	mustClose(t, l)
	if got := db.Stats().Commits; got != before+1 {
		t.Fatalf("%d store commits after Close, want 1", got-before)
	}
}

// TestNodeStoreHeadsAreSeparate: two nodes' logs recording their heads in
// one shared store (the embedded cluster) keep one head each; a node
// opening its log after the other recorded a head sees no truncation.
func TestNodeStoreHeadsAreSeparate(t *testing.T) {
	db := openStore(t, "")
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openLog(t, Options{Dir: dirA, Heads: NodeStoreHeads(db, "n1")})
	for range 5 {
		mustRecord(t, a, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: "user:a", Method: "passkey"})
	}
	mustClose(t, a)
	ha, err := NodeStoreHeads(db, "n1").LoadHead(context.Background())
	if err != nil || ha == nil {
		t.Fatalf("n1's head: %v", err)
	}
	if hb, err := NodeStoreHeads(db, "n2").LoadHead(context.Background()); err != nil || hb != nil {
		t.Fatalf("n2 sees a head before it recorded one: %s %v", hb, err)
	}
	if shared := loadHead(t, db); shared != nil {
		t.Fatalf("a node head went to the shared key: %s", shared)
	}
	b := openLog(t, Options{Dir: dirB, Heads: NodeStoreHeads(db, "n2")})
	mustRecord(t, b, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: "user:b", Method: "passkey"})
	mustClose(t, b)
	for _, l := range readLines(t, dirB) {
		if strings.Contains(l.Text, ActionTruncated) {
			t.Fatalf("n2's log took n1's head for its own: %s", l.Text)
		}
	}
}
