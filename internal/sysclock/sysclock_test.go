package sysclock

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadMatchesKernel: Read reports what adjtimex(2) reports (this
// machine's clock may or may not be synchronized; the answer must agree
// with the kernel's own).
func TestReadMatchesKernel(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("adjtimex is Linux only")
	}
	got := Read()
	var tx unix.Timex
	st, err := unix.Adjtimex(&tx)
	if err != nil {
		t.Fatal(err)
	}
	want := st != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
	if !got.Known || got.Synchronized != want {
		t.Fatalf("Read() = %+v, kernel state %d status %#x (synchronized %v)", got, st, tx.Status, want)
	}
}
