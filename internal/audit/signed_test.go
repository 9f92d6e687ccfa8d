package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/receipt"
)

// applianceKey stands for the TPM signing key (attest.SigningKey is tested
// against the simulator in package attest): any crypto.Signer of P-256.
func applianceKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signedLog(t testing.TB, key *ecdsa.PrivateKey, node string, opts Options) *Log {
	t.Helper()
	bk, err := receipt.NewBatchKey(node, time.Now(), key)
	if err != nil {
		t.Fatal(err)
	}
	opts.Signer, opts.Node = bk, node
	return openLog(t, opts)
}

// writeSigned writes a small closed log with releases, stores and a
// rotation, and returns its directory.
func writeSigned(t *testing.T, key *ecdsa.PrivateKey) string {
	dir := t.TempDir()
	l := signedLog(t, key, "node-1", Options{Dir: dir, MaxFileBytes: 4 << 10})
	for i := 0; i < 12; i++ {
		mustRecord(t, l, Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: fmt.Sprint("user:", i), Method: "PASSKEY", RequestID: fmt.Sprint("s", i)})
		mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: fmt.Sprint("user:", i), Method: "PASSKEY", RequestID: fmt.Sprint("r", i)})
		if i%5 == 4 {
			if err := l.Anchor(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustClose(t, l)
	return dir
}

func TestVerifySignedWithPublicKeyOnly(t *testing.T) {
	key := applianceKey(t)
	dir := writeSigned(t, key)
	rep, err := VerifySigned([]string{dir}, []*ecdsa.PublicKey{&key.PublicKey}, SignedOptions{Complete: true})
	if err != nil {
		t.Fatalf("VerifySigned: %v", err)
	}
	if len(rep.Files) < 2 || rep.Anchors < 3 || rep.Unsigned != 0 || rep.FirstTime == "" || rep.SignedThrough == "" || len(rep.Nodes) != 1 || rep.Nodes[0] != "node-1" {
		t.Fatalf("report: %+v", rep)
	}
	// The stopped-node HMAC check still passes on the same log.
	if _, err := Verify(dir, testKey()); err != nil {
		t.Fatalf("Verify (HMAC): %v", err)
	}
}

// A copy of the log with any one byte changed fails with the public key
// only, and the report names where.
func TestVerifySignedFindsEveryFlippedByte(t *testing.T) {
	key := applianceKey(t)
	dir := writeSigned(t, key)
	files, _ := listFiles(dir)
	trusted := []*ecdsa.PublicKey{&key.PublicKey}
	for _, f := range files {
		orig, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		for i := range orig {
			cp := t.TempDir()
			for _, g := range files {
				b, _ := os.ReadFile(filepath.Join(dir, g.name))
				if g.name == f.name {
					b = bytes.Clone(orig)
					b[i] ^= 0x01
				}
				if err := os.WriteFile(filepath.Join(cp, g.name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := VerifySigned([]string{cp}, trusted, SignedOptions{Complete: true})
			if err == nil {
				t.Fatalf("%s byte %d (%q) flipped: verifies", f.name, i, orig[max(0, i-20):min(len(orig), i+20)])
			}
			if rep.Broken == nil && !errors.Is(err, ErrNotSigned) {
				t.Fatalf("%s byte %d: no broken entry named: %v", f.name, i, err)
			}
		}
	}
}

func TestVerifySignedRefusesAnotherAppliancesKey(t *testing.T) {
	mine, theirs := applianceKey(t), applianceKey(t)
	dir := writeSigned(t, theirs)
	_, err := VerifySigned([]string{dir}, []*ecdsa.PublicKey{&mine.PublicKey}, SignedOptions{})
	if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "not certified by a trusted appliance key") {
		t.Fatalf("log signed by another appliance key: %v", err)
	}
	// Lines of ours followed by an anchor of theirs (a recomputed tail).
	if _, err := VerifySigned([]string{dir}, []*ecdsa.PublicKey{&theirs.PublicKey}, SignedOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Anchors of a log without a Signer (and the frozen v1 vector) verify
// nothing publicly, but are not breaks.
func TestVerifySignedHMACOnlyLog(t *testing.T) {
	key := applianceKey(t)
	_, err := VerifySigned([]string{filepath.Join("testdata", "chain-v1")}, []*ecdsa.PublicKey{&key.PublicKey}, SignedOptions{})
	if !errors.Is(err, ErrNotSigned) {
		t.Fatalf("v1 log: %v, want ErrNotSigned", err)
	}
}

// A live log: a partial last line and an unsigned tail are reported, not
// errors, unless Complete.
func TestVerifySignedLiveLog(t *testing.T) {
	key := applianceKey(t)
	dir := t.TempDir()
	l := signedLog(t, key, "", Options{Dir: dir})
	mustRecord(t, l, Event{Action: ActionStore, Owner: "u"})
	if err := l.Anchor(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustRecord(t, l, Event{Action: ActionStore, Owner: "u"})
	files, _ := listFiles(dir)
	last := filepath.Join(dir, files[len(files)-1].name)
	fi, _ := os.Stat(last)
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":4,"time":"20`) // a write in progress
	f.Close()
	trusted := []*ecdsa.PublicKey{&key.PublicKey}
	rep, err := VerifySigned([]string{dir}, trusted, SignedOptions{})
	if err != nil || !rep.Partial || rep.Unsigned != 1 {
		t.Fatalf("live log: %+v, %v", rep, err)
	}
	if _, err := VerifySigned([]string{dir}, trusted, SignedOptions{Complete: true}); !errors.Is(err, ErrUnanchored) {
		t.Fatalf("Complete on a live log: %v", err)
	}
	_ = os.Truncate(last, fi.Size()) // the partial line away before the log closes
}

// A release recorded with a receipt slot gets a receipt that verifies with
// the public key and matches its audit line; one recorded without gets none.
func TestReleaseReceipts(t *testing.T) {
	key := applianceKey(t)
	dir := t.TempDir()
	l := signedLog(t, key, "node-1", Options{Dir: dir, WrittenActions: []string{ActionRelease}})
	var got []*receipt.Receipt
	for i := 0; i < 5; i++ {
		ctx, slot := WithReceiptSlot(WithRequestID(context.Background(), fmt.Sprint("req-", i)))
		ev := Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: fmt.Sprint("firebase:p//u", i), Method: "FIREBASE",
			Fields: map[string]string{receipt.FieldKeyVersion: "3"}}
		if err := l.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if slot.Receipt() == nil {
			t.Fatal("no receipt")
		}
		got = append(got, slot.Receipt())
	}
	ctx, slot := WithReceiptSlot(context.Background())
	mustRecord(t, l, Event{Action: ActionStore, Owner: "x"})
	if err := l.Record(ctx, Event{Action: ActionStore, Owner: "x"}); err != nil || slot.Receipt() != nil {
		t.Fatalf("a store got a receipt: %v", err)
	}
	mustClose(t, l)
	lines := readLines(t, dir)
	for i, r := range got {
		r, err := receipt.Parse(r.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if err := receipt.Verify(r, &key.PublicKey); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		s := r.Statement
		if s.Action != ActionRelease || s.RequestID != fmt.Sprint("req-", i) || s.KeyVersion != "3" || s.Node != "node-1" || !s.IsOwner(fmt.Sprint("firebase:p//u", i)) {
			t.Fatalf("statement %d: %+v", i, s)
		}
		if err := receipt.MatchLine(r, []byte(lines[s.Seq-1].Text)); err != nil {
			t.Fatalf("receipt %d does not match audit line %d: %v", i, s.Seq, err)
		}
		if err := receipt.MatchLine(r, []byte(lines[s.Seq].Text)); err == nil {
			t.Fatalf("receipt %d matches another line", i)
		}
	}
}

// With AnchorLines, an anchor (signed) follows every N lines without
// waiting for the interval: under load the unsigned tail of a live log
// stays short.
func TestAnchorEveryNLines(t *testing.T) {
	key := applianceKey(t)
	dir := t.TempDir()
	l := signedLog(t, key, "", Options{Dir: dir, AnchorLines: 5, AnchorInterval: time.Hour})
	for i := 0; i < 12; i++ {
		mustRecord(t, l, Event{Action: ActionStore, Owner: "u"})
	}
	rep, err := VerifySigned([]string{dir}, []*ecdsa.PublicKey{&key.PublicKey}, SignedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Anchors != 2 || rep.Unsigned != 2 {
		t.Fatalf("%d anchors, %d unsigned lines; want 2 anchors (after 5 and 10 lines) and 2 unsigned", rep.Anchors, rep.Unsigned)
	}
}

// A batch key taken from a running appliance must not sign anchors dated
// before the key was certified: the public verification refuses an anchor
// whose time is earlier than its batch key's Issued. (Here the log's clock
// runs an hour behind the batch key's certificate, which is what such a
// backdated log looks like to the verifier.)
func TestVerifySignedRefusesBackdatedAnchor(t *testing.T) {
	key := applianceKey(t)
	issued := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	bk, err := receipt.NewBatchKey("node-1", issued, key)
	if err != nil {
		t.Fatal(err)
	}
	trusted := []*ecdsa.PublicKey{&key.PublicKey}
	write := func(at time.Time) string {
		dir := t.TempDir()
		l := openLog(t, Options{Dir: dir, Signer: bk, Node: "node-1", Clock: func() time.Time { return at }})
		mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: "user:1", Method: "PASSKEY", RequestID: "r1"})
		if err := l.Anchor(context.Background()); err != nil {
			t.Fatal(err)
		}
		mustClose(t, l)
		return dir
	}
	if _, err := VerifySigned([]string{write(issued.Add(time.Minute))}, trusted, SignedOptions{Complete: true}); err != nil {
		t.Fatalf("anchors dated after the batch key's issue time: %v", err)
	}
	_, err = VerifySigned([]string{write(issued.Add(-time.Hour))}, trusted, SignedOptions{})
	if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "before its batch key was issued") {
		t.Fatalf("anchors dated before the batch key's issue time: %v", err)
	}
}

// A copy of a rotated log whose first file was deleted (a truncated head)
// still verifies from its first line, but the report says it does not
// start at genesis, and with FromStart the missing start is an error.
func TestVerifySignedMissingStart(t *testing.T) {
	key := applianceKey(t)
	dir := writeSigned(t, key)
	trusted := []*ecdsa.PublicKey{&key.PublicKey}
	rep, err := VerifySigned([]string{dir}, trusted, SignedOptions{FromStart: true})
	if err != nil || !rep.Genesis || rep.FirstSeq != 1 {
		t.Fatalf("whole log: %v, genesis %v, first seq %d", err, rep.Genesis, rep.FirstSeq)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if len(files) < 2 {
		t.Fatalf("want a rotated log, got %v", files)
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	rep, err = VerifySigned([]string{dir}, trusted, SignedOptions{})
	if err != nil || rep.Genesis || rep.FirstSeq <= 1 {
		t.Fatalf("without its first file: %v, genesis %v, first seq %d", err, rep.Genesis, rep.FirstSeq)
	}
	rep, err = VerifySigned([]string{dir}, trusted, SignedOptions{FromStart: true})
	if !errors.Is(err, ErrMissingStart) || rep.Broken == nil || rep.Broken.Kind != KindMissingStart {
		t.Fatalf("FromStart without the first file: %v, %+v", err, rep.Broken)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("seq %d", rep.FirstSeq)) {
		t.Fatalf("the error does not name the first seq: %v", err)
	}
}

// Releases recorded at once each get a receipt that verifies and matches
// its own line, whichever batch signature they shared.
func TestConcurrentReleaseReceipts(t *testing.T) {
	key := applianceKey(t)
	dir := t.TempDir()
	l := signedLog(t, key, "node-1", Options{Dir: dir, WrittenActions: []string{ActionRelease}})
	const n = 64
	got := make([]*receipt.Receipt, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, slot := WithReceiptSlot(WithRequestID(context.Background(), fmt.Sprint("req-", i)))
			if err := l.Record(ctx, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: fmt.Sprint("firebase:p//u", i)}); err != nil {
				t.Error(err)
			}
			got[i] = slot.Receipt()
		})
	}
	wg.Wait()
	if s := l.Stats(); s.Receipts != n || s.ReceiptBatches < 1 || s.ReceiptBatches > n {
		t.Fatalf("%d receipts in %d signatures", s.Receipts, s.ReceiptBatches)
	}
	mustClose(t, l)
	lines := readLines(t, dir)
	salts := map[string]bool{}
	for i, r := range got {
		if r == nil {
			t.Fatalf("release %d: no receipt", i)
		}
		if salts[r.Statement.Salt] {
			t.Fatalf("receipt %d shares its owner-hash salt with another: owner hashes would link", i)
		}
		salts[r.Statement.Salt] = true
		if err := receipt.Verify(r, &key.PublicKey); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if r.Statement.RequestID != fmt.Sprint("req-", i) || !r.Statement.IsOwner(fmt.Sprint("firebase:p//u", i)) {
			t.Fatalf("receipt %d states another release: %+v", i, r.Statement)
		}
		if err := receipt.MatchLine(r, []byte(lines[r.Statement.Seq-1].Text)); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
	}
}

// The receipt signer waits for more lines only while letting others run
// brings new ones, and only until its deadline.
func TestSignQueueGathers(t *testing.T) {
	in := make(chan *request, 16)
	q := signQueue{in: in}
	q.reqs = []*request{{}}
	in <- &request{}
	rounds := 0
	yield := func() { // each of the first three rounds writes a line
		if rounds++; rounds <= 3 {
			in <- &request{}
		}
	}
	if !q.gather(time.Now().Add(time.Hour), yield, func() bool { return false }) || len(q.reqs) != 5 || rounds != 4 {
		t.Fatalf("gathered %d lines in %d rounds, want 5 in 4 (the last brought none)", len(q.reqs), rounds)
	}
	// Lines wait for the writer but none arrives: it blocks (no spinning)
	// and gives up at the deadline.
	q.reqs, rounds = q.reqs[:1], 0
	t0 := time.Now()
	if !q.gather(t0.Add(30*time.Millisecond), func() { rounds++ }, func() bool { return true }) || len(q.reqs) != 1 {
		t.Fatalf("waiting for lines that never came: %d lines", len(q.reqs))
	}
	if el := time.Since(t0); el < 30*time.Millisecond || rounds > 3 {
		t.Fatalf("waited %v in %d rounds: it must block until the deadline, not spin", el, rounds)
	}
	// ... and a line that arrives while it blocks is taken.
	q.reqs, rounds = q.reqs[:1], 0
	go func() { time.Sleep(5 * time.Millisecond); in <- &request{} }()
	arrived := false
	if !q.gather(time.Now().Add(time.Hour), func() { rounds++ }, func() bool { c := !arrived; arrived = true; return c }) || len(q.reqs) != 2 {
		t.Fatalf("a line arriving during the wait: %d lines", len(q.reqs))
	}
	// Past the deadline: what is waiting is taken, no one is waited for.
	q.reqs, rounds = q.reqs[:1], 0
	in <- &request{}
	if !q.gather(time.Now().Add(-time.Millisecond), yield, func() bool { return true }) || len(q.reqs) != 2 || rounds != 0 {
		t.Fatalf("past the deadline: %d lines, %d rounds", len(q.reqs), rounds)
	}
	// The writer closed the queue: what was in it is taken, and gather says so.
	q.reqs = q.reqs[:1]
	in <- &request{}
	close(in)
	if q.gather(time.Now().Add(time.Hour), yield, func() bool { return false }) || len(q.reqs) != 2 {
		t.Fatalf("closed queue: %d lines", len(q.reqs))
	}
	// A batch stops growing at maxSignBatch.
	in2 := make(chan *request, maxSignBatch+10)
	for range maxSignBatch + 10 {
		in2 <- &request{}
	}
	q = signQueue{in: in2}
	if !q.gather(time.Now().Add(time.Hour), func() {}, func() bool { return true }) || len(q.reqs) != maxSignBatch {
		t.Fatalf("%d lines in one batch, at most %d", len(q.reqs), maxSignBatch)
	}
}

// A release whose request id and owner hold invalid UTF-8 gets a receipt
// that states them as its audit line has them (each bad byte U+FFFD), so
// the receipt matches the line.
func TestReceiptOfInvalidUTF8MatchesLine(t *testing.T) {
	key := applianceKey(t)
	dir := t.TempDir()
	l := signedLog(t, key, "node-1", Options{Dir: dir, WrittenActions: []string{ActionRelease}})
	ctx, slot := WithReceiptSlot(WithRequestID(context.Background(), "req-\xff\xfe"))
	if err := l.Record(ctx, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: "firebase:p//u\xff\xfe", Method: "FIREBASE"}); err != nil {
		t.Fatal(err)
	}
	r := slot.Receipt()
	mustClose(t, l)
	if r == nil {
		t.Fatal("no receipt")
	}
	if err := receipt.Verify(r, &key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if r.Statement.RequestID != "req-\uFFFD\uFFFD" {
		t.Fatalf("request id %q, want each bad byte replaced", r.Statement.RequestID)
	}
	if err := receipt.MatchLine(r, []byte(readLines(t, dir)[r.Statement.Seq-1].Text)); err != nil {
		t.Fatalf("the receipt does not match its line: %v", err)
	}
}
