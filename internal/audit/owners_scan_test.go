package audit

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// evictedIndex writes lines of 60 owners (3 each) under limits that drop
// most of them: the index has evicted, so an owner not in memory is looked
// for in the files.
func evictedIndex(t *testing.T) (*Log, *OwnerIndex) {
	t.Helper()
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, MaxFileBytes: 16 << 10})
	for i := 0; i < 3; i++ {
		for o := 0; o < 60; o++ {
			mustRecord(t, l, Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: fmt.Sprint("user:o", o), Method: "PASSKEY", RequestID: fmt.Sprint("r", i)})
		}
	}
	x := NewOwnerIndexLimits(dir, OwnerIndexLimits{MaxRefs: 40, PerOwner: 10})
	if got, err := x.Events("user:o59", 100, 0); err != nil || len(got) != 3 {
		t.Fatalf("o59: %d events, %v", len(got), err)
	}
	x.mu.Lock()
	dropped := x.dropped
	x.mu.Unlock()
	if !dropped {
		t.Fatal("the index should have dropped owners")
	}
	return l, x
}

// An attacker (a self-signed-up user with no lines) asking for their
// events again and again after the index has evicted costs one read of
// the files, not one per query: "no lines" is remembered. A line written
// for them later is still listed.
func TestOwnerIndexRemembersNoLines(t *testing.T) {
	l, x := evictedIndex(t)
	base := x.scanCount()
	for i := 0; i < 50; i++ {
		if got, err := x.Events("user:attacker", 100, 0); err != nil || len(got) != 0 {
			t.Fatalf("query %d: %d events, %v", i, len(got), err)
		}
	}
	if n := x.scanCount() - base; n != 1 {
		t.Fatalf("50 queries of an owner with no lines read the files %d times, want 1", n)
	}
	mustRecord(t, l, Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: "user:attacker", Method: "FIREBASE"})
	got, err := x.Events("user:attacker", 100, 0)
	if err != nil || len(got) != 1 || got[0].Action != ActionStore {
		t.Fatalf("after a store: %+v, %v", got, err)
	}
	if n := x.scanCount() - base; n != 1 {
		t.Fatalf("the later line cost another read of the files (%d)", n)
	}
	// Many owners with no lines stay within the bound too.
	for i := 0; i < 100; i++ {
		if _, err := x.Events(fmt.Sprint("user:nobody", i), 10, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n, owners := x.size(); n > 40 || owners > 40 {
		t.Fatalf("index holds %d references of %d owners, bound 40", n, owners)
	}
}

// Concurrent queries for the same owner not in memory read the files once
// (the others wait for that read), and the read does not hold the index:
// another owner's query is answered meanwhile.
func TestOwnerIndexSingleFlight(t *testing.T) {
	_, x := evictedIndex(t)
	base := x.scanCount()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	x.scanHook = func(owner string) {
		if owner == "user:o0" {
			once.Do(func() { close(started); <-release })
		}
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	query := func() {
		defer wg.Done()
		got, err := x.Events("user:o0", 100, 0)
		if err == nil && len(got) != 3 {
			err = fmt.Errorf("%d events, want 3", len(got))
		}
		errs <- err
	}
	wg.Add(1)
	go query()
	<-started
	other := make(chan error, 1)
	go func() {
		got, err := x.Events("user:o59", 100, 0)
		if err == nil && len(got) != 3 {
			err = fmt.Errorf("o59: %d events", len(got))
		}
		other <- err
	}()
	select {
	case err := <-other:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(30 * time.Second): // a guard against a hang, not a timing check
		t.Error("another owner's query waited for the scan")
	}
	wg.Add(n - 1)
	for i := 1; i < n; i++ {
		go query()
	}
	for i := 0; i < 3000 && x.waiting() < n-1; i++ { // let them reach the wait (not an assertion)
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := x.scanCount() - base; got != 1 {
		t.Fatalf("%d concurrent queries of one owner read the files %d times, want 1", n, got)
	}
}

// Lines appended while an owner's scan runs are not lost, even when the
// index drops the owner's partial entry meanwhile: the scan reads up to
// where the index had read, and what the index reads after that is kept.
func TestOwnerIndexAppendDuringScan(t *testing.T) {
	l, x := evictedIndex(t)
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	x.scanHook = func(owner string) {
		if owner == "user:o1" {
			once.Do(func() { close(started); <-release })
		}
	}
	res := make(chan []OwnerEvent, 1)
	go func() {
		got, err := x.Events("user:o1", 100, 0)
		if err != nil {
			t.Error(err)
		}
		res <- got
	}()
	<-started
	for i := 0; i < 4; i++ {
		mustRecord(t, l, Event{Action: ActionDelete, Outcome: OutcomeSuccess, Owner: "user:o1", Method: "PASSKEY", RequestID: fmt.Sprint("d", i)})
	}
	// Many other owners' lines, read by another query: o1's partial entry is evicted.
	for o := 100; o < 150; o++ {
		mustRecord(t, l, Event{Action: ActionStore, Outcome: OutcomeSuccess, Owner: fmt.Sprint("user:o", o), Method: "PASSKEY"})
	}
	other := make(chan error, 1)
	go func() {
		_, err := x.Events("user:o149", 10, 0)
		other <- err
	}()
	select {
	case err := <-other:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(30 * time.Second): // a guard against a hang, not a timing check
		t.Error("another owner's query waited for the scan")
	}
	close(release)
	got := <-res
	check := func(got []OwnerEvent) {
		t.Helper()
		if len(got) != 7 || got[0].RequestID != "d3" || got[3].RequestID != "d0" || got[4].RequestID != "r2" {
			t.Fatalf("o1 after appends during its scan: %d events %+v, want 4 deletes then 3 releases", len(got), got)
		}
	}
	check(got)
	got, err := x.Events("user:o1", 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	check(got)
}

// The number of concurrent scans is bounded: with every slot taken, a
// query that needs a scan waits briefly, then is refused with
// ErrOwnerIndexBusy; owners in memory are still answered.
func TestOwnerIndexScanBound(t *testing.T) {
	_, x := evictedIndex(t)
	x.scanWait = time.Millisecond
	for i := 0; i < cap(x.slots); i++ {
		x.slots <- struct{}{}
	}
	if _, err := x.Events("user:o3", 100, 0); !errors.Is(err, ErrOwnerIndexBusy) {
		t.Fatalf("with every scan slot taken: %v, want ErrOwnerIndexBusy", err)
	}
	if got, err := x.Events("user:o59", 100, 0); err != nil || len(got) != 3 {
		t.Fatalf("an owner in memory: %d events, %v", len(got), err)
	}
	<-x.slots
	if got, err := x.Events("user:o3", 100, 0); err != nil || len(got) != 3 {
		t.Fatalf("with a slot free: %d events, %v", len(got), err)
	}
}
