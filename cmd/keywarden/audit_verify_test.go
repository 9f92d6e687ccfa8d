package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/audit"
)

// auditVerifyOutput runs `keywarden audit verify` and returns what it
// printed and its error.
func auditVerifyOutput(t *testing.T, cfgFile string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	errc := make(chan error, 1)
	go func() {
		errc <- run(context.Background(), []string{"audit", "verify", "-hmac", "-config", cfgFile})
		w.Close()
	}()
	b, _ := io.ReadAll(r)
	os.Stdout = old
	return string(b), <-errc
}

// TestAuditVerifyTruncatedLog: the appliance writes its audit log (with
// anchors) and stops; the log is cut back to an earlier anchor, deleting
// the recent release lines and the last anchor. `audit verify` used to print
// "chain and anchors verify"; it must fail and name the missing lines.
func TestAuditVerifyTruncatedLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfgFile, cfg := devConfig(t, dir, oldSeed)
	t.Setenv("KEYWARDEN_DEV", "1")

	a, err := openAppliance(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := a.audit.Record(ctx, audit.Event{Action: audit.ActionRelease, Outcome: audit.OutcomeSuccess, Owner: fmt.Sprintf("user:%d", i)}); err != nil {
			t.Fatal(err)
		}
		if i == 9 || i == 19 {
			if err := a.audit.Anchor(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.Close() // final anchor; the head is recorded in the store

	out, err := auditVerifyOutput(t, cfgFile)
	if err != nil || !strings.Contains(out, "chain, anchors and recorded head verify") {
		t.Fatalf("untouched log: err %v\n%s", err, out)
	}

	// One file (no rotation at this size): cut it back to the anchor
	// written after event 19.
	path := filepath.Join(cfg.Audit.Dir, "audit-000001.jsonl")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	var anchors []int
	for i, l := range lines {
		if strings.Contains(l, `"type":"anchor"`) {
			anchors = append(anchors, i)
		}
	}
	if len(anchors) != 3 {
		t.Fatalf("anchors at lines %v, want 3", anchors)
	}
	cut := anchors[1]
	total := len(lines) - 1 // the last element is the empty rest after the final newline
	if err := os.WriteFile(path, []byte(strings.Join(lines[:cut+1], "")), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err = auditVerifyOutput(t, cfgFile)
	want := fmt.Sprintf("log truncated: lines %d–%d are missing (recorded head at ", cut+2, total)
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("cut log: err %v, want it to fail naming %q\n%s", err, want, out)
	}
	if strings.Contains(out, "verify\n") {
		t.Fatalf("a cut log reported as verifying:\n%s", out)
	}
}
