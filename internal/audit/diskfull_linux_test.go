package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDiskFullTmpfs fills a real, small filesystem. It needs the right to
// mount (root with CAP_SYS_ADMIN) and is skipped without it.
func TestDiskFullTmpfs(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=512k"); err != nil {
		t.Skip("cannot mount a tmpfs:", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	dir := filepath.Join(mnt, "audit")
	l := openLog(t, Options{Dir: dir, ReserveBytes: 64 << 10})
	mustRecord(t, l, Event{Action: ActionStart})

	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := filler.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	filler.Close()

	var failed error
	for i := 0; failed == nil; i++ { // the last partial block may still take a line or two
		failed = l.Record(context.Background(), Event{Action: ActionStore, Owner: fmt.Sprintf("user:%d", i)})
		if i > 100 {
			t.Fatal("Records keep succeeding on a full disk")
		}
	}
	if !errors.Is(failed, ErrDiskFull) || l.Healthy() {
		t.Fatalf("Record on a full disk = %v (healthy %v), want ErrDiskFull", failed, l.Healthy())
	}
	if err := l.Record(context.Background(), Event{Action: ActionRelease}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Record in low space = %v, want ErrDiskFull", err)
	}
	for range 5 {
		l.Refusal(context.Background(), Event{Reason: "audit_unavailable"})
	}
	if err := l.Anchor(context.Background()); err != nil {
		t.Fatalf("anchor in low space: %v", err)
	}

	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	mustRecord(t, l, Event{Action: ActionStore, Owner: "user:after"})
	if !l.Healthy() {
		t.Fatal(l.LastError())
	}
	mustClose(t, l)
	rep, err := Verify(dir, testKey())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range rep.Incidents {
		got = append(got, in.Action)
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{ActionDiskFull, ActionSpaceRestored}) {
		t.Fatalf("incidents %v", got)
	}
	refusals := 0
	for _, line := range readLines(t, dir) {
		if strings.Contains(line.Text, `"action":"refusal"`) {
			refusals++
		}
	}
	if refusals == 0 {
		t.Fatal("no refusal line was written in low space")
	}
}
