package audit

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
)

// A frozen audit log (testdata/chain-v1): lines, the hash chain and HMAC
// anchors written by an earlier build. Logs outlive the process that wrote
// them, and customers keep copies: a change of the line format, the chain
// or the anchor MAC that makes this log fail to verify breaks every log in
// the field. Such a change must be deliberate (a new format version that
// the verifier still reads the old one beside); only then is a new vector
// added, with
//
//	go test ./internal/audit -run TestFrozenChain -update-chain
var updateChain = flag.Bool("update-chain", false, "write internal/audit/testdata/chain-v1 again (a deliberate format change)")

// vectorAnchorKey is the anchor key of the frozen log: test data only.
func vectorAnchorKey() secret.Bytes {
	return secret.NewBytes([]byte("keywarden audit vector anchor key, test data only"))
}

const chainDir = "testdata/chain-v1"

func TestFrozenChain(t *testing.T) {
	if *updateChain {
		writeFrozenChain(t)
	}
	files, err := filepath.Glob(filepath.Join(chainDir, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no frozen log in %s (%v)", chainDir, err)
	}
	rep, err := Verify(chainDir, vectorAnchorKey())
	if err != nil {
		t.Fatalf("the frozen audit log no longer verifies: %v (%+v)", err, rep.Broken)
	}
	if rep.LastSeq != 6 {
		t.Fatalf("frozen log: last seq %d, want 6", rep.LastSeq)
	}
	// Any flipped byte in a copy is found.
	orig, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{10, len(orig) / 3, len(orig) / 2, len(orig) - 20} {
		dir := t.TempDir()
		b := bytes.Clone(orig)
		b[i] ^= 0x01
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(files[0])), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(dir, vectorAnchorKey()); err == nil {
			t.Errorf("a byte flipped at %d of the frozen log went unnoticed", i)
		}
	}
	if _, err := Verify(chainDir, secret.NewBytes(bytes.Repeat([]byte{7}, 48))); err == nil {
		t.Error("the frozen log verified under another anchor key")
	}
}

// writeFrozenChain writes the vector with today's writer (-update-chain).
func writeFrozenChain(t *testing.T) {
	if err := os.RemoveAll(chainDir); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	l, err := Open(context.Background(), Options{Dir: chainDir, AnchorKey: vectorAnchorKey(), ReserveBytes: -1, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, ev := range []Event{
		{Action: ActionStore, Outcome: OutcomeSuccess, Actor: "user:alice", Owner: "user:alice", Method: "PASSKEY", RequestID: "req-1", Remote: "192.0.2.1"},
		{Action: ActionRelease, Outcome: OutcomeSuccess, Actor: "user:alice", Owner: "user:alice", Method: "PASSKEY", RequestID: "req-2", Remote: "192.0.2.1"},
		{Action: ActionRelease, Outcome: OutcomeRefused, Owner: "firebase:proj-a//uid-1", Method: "FIREBASE", Reason: "client_mismatch", RequestID: "req-3", Remote: "2001:db8::1"},
		{Action: "admin_restore_version", Outcome: OutcomeSuccess, Actor: "admin:0a1b2c3d", Owner: "portal:client-1", Method: "PASSWORD", Fields: map[string]string{"version": "01796000000000000000"}},
	} {
		if err := l.Record(ctx, ev); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if i == 1 {
			if err := l.Anchor(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", chainDir)
}
