package main

import (
	"strings"
	"testing"
)

// TestUID: user ids are Firebase-shaped (28 characters, URL-safe), stable
// (the release tokens of a later run name the users an earlier run
// imported) and not in the order of i (a sequential fill would pack the
// B+tree's pages fuller than production's random uids do).
func TestUID(t *testing.T) {
	if a, b := uid(7), uid(7); a != b || a == uid(8) {
		t.Fatal("uid is not a stable function of i")
	}
	if len(uid(0)) != 28 || strings.ContainsAny(uid(0), "+/=") {
		t.Fatalf("uid %q", uid(0))
	}
	ascending := 0
	for i := 0; i < 1000; i++ {
		if uid(i) < uid(i+1) {
			ascending++
		}
	}
	if ascending < 400 || ascending > 600 {
		t.Fatalf("%d of 1000 consecutive uids ascend: not random order", ascending)
	}
}
