package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/secret"
)

func Example() {
	dir, err := os.MkdirTemp("", "audit-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	key := secret.NewBytes(bytes.Repeat([]byte{1}, 32)) // a root-key subkey in Keywarden
	ctx := context.Background()

	log, err := audit.Open(ctx, audit.Options{Dir: dir, AnchorKey: key, ReserveBytes: 1 << 20})
	if err != nil {
		panic(err)
	}
	// Durable before the key is released; on error, refuse the release.
	err = log.Record(ctx, audit.Event{Action: audit.ActionRelease, Outcome: audit.OutcomeSuccess,
		Owner: "user:42", Method: "passkey", RequestID: "trace-1"})
	fmt.Println("release audited:", err == nil)
	// Refusals are counted and sampled; this never blocks.
	log.Refusal(ctx, audit.Event{Reason: "origin_mismatch", Remote: "203.0.113.7"})
	if err := log.Close(ctx); err != nil { // writes the final anchor
		panic(err)
	}

	rep, err := audit.Verify(dir, key)
	fmt.Println("lines:", rep.Lines, "anchors:", rep.Anchors, "verified:", err == nil)
	// Output:
	// release audited: true
	// lines: 3 anchors: 1 verified: true
}
