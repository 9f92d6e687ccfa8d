package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/store"
)

// EphemeralHarness opens the [store.Ephemeral] under test.
type EphemeralHarness struct {
	// Open returns two handles on one new, empty ephemeral state, as two
	// nodes of a cluster see it (a single-node implementation returns the
	// same handle twice).
	Open func(t *testing.T) (a, b store.Ephemeral)
}

// RunEphemeral runs the conformance cases of [store.Ephemeral]: what one
// node did is seen by the other, a value is taken once in all, counters
// lose no increment, and expiry follows the caller's clock.
func RunEphemeral(t *testing.T, h EphemeralHarness) {
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, a, b store.Ephemeral)
	}{
		{"PutTakeOnce", ephPutTakeOnce},
		{"TakeOnceConcurrent", ephTakeOnceConcurrent},
		{"Expiry", ephExpiry},
		{"Counter", ephCounter},
		{"CounterConcurrent", ephCounterConcurrent},
		{"KindsAndKeys", ephKindsAndKeys},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := h.Open(t)
			c.fn(t, a, b)
		})
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ephPutTakeOnce(t *testing.T, a, b store.Ephemeral) {
	val := []byte("ceremony state")
	ok, err := a.PutIfAbsent(ctx, "c/1", val, t0, time.Minute)
	if err != nil || !ok {
		t.Fatalf("first put: %v %v", ok, err)
	}
	val[0] = 'X' // the store keeps its own copy
	if ok, err := b.PutIfAbsent(ctx, "c/1", []byte("other"), t0, time.Minute); err != nil || ok {
		t.Fatalf("second put of a held key (other node): %v %v", ok, err)
	}
	got, err := b.Take(ctx, "c/1", t0.Add(time.Second))
	if err != nil || string(got) != "ceremony state" {
		t.Fatalf("take on the other node: %q %v", got, err)
	}
	for _, e := range []store.Ephemeral{a, b} {
		if got, err := e.Take(ctx, "c/1", t0.Add(time.Second)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second take: %q %v, want ErrNotFound", got, err)
		}
	}
	if got, err := a.Take(ctx, "never", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("take of an absent key: %q %v", got, err)
	}
	if ok, err := a.PutIfAbsent(ctx, "c/1", []byte("again"), t0, time.Minute); err != nil || !ok {
		t.Fatalf("put after take: %v %v", ok, err)
	}
}

func ephTakeOnceConcurrent(t *testing.T, a, b store.Ephemeral) {
	const keys, takers = 8, 6
	for i := range keys {
		if ok, err := a.PutIfAbsent(ctx, fmt.Sprintf("k/%d", i), []byte{byte(i)}, t0, time.Minute); err != nil || !ok {
			t.Fatalf("put %d: %v %v", i, ok, err)
		}
	}
	var won [keys]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, keys*takers)
	for i := range keys {
		for j := range takers {
			e := a
			if j%2 == 1 {
				e = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := e.Take(ctx, fmt.Sprintf("k/%d", i), t0)
				switch {
				case err == nil:
					if !bytes.Equal(v, []byte{byte(i)}) {
						errs <- fmt.Errorf("key %d: took %x", i, v)
					}
					won[i].Add(1)
				case !errors.Is(err, store.ErrNotFound):
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range keys {
		if n := won[i].Load(); n != 1 {
			t.Fatalf("key %d taken %d times by %d concurrent takers on two nodes, want exactly once", i, n, takers)
		}
	}
}

func ephExpiry(t *testing.T, a, b store.Ephemeral) {
	if ok, err := a.PutIfAbsent(ctx, "x", []byte("v"), t0, time.Minute); err != nil || !ok {
		t.Fatalf("put: %v %v", ok, err)
	}
	late := t0.Add(time.Minute)
	if got, err := b.Take(ctx, "x", late); !errors.Is(err, store.ErrExpired) {
		t.Fatalf("take at its end: %q %v, want ErrExpired", got, err)
	}
	if got, err := a.Take(ctx, "x", late); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("take after the expired take: %q %v, want ErrNotFound", got, err)
	}
	// A value past its end does not stop a new one under its key.
	if ok, err := a.PutIfAbsent(ctx, "y", []byte("old"), t0, time.Minute); err != nil || !ok {
		t.Fatalf("put: %v %v", ok, err)
	}
	if ok, err := b.PutIfAbsent(ctx, "y", []byte("new"), late, time.Minute); err != nil || !ok {
		t.Fatalf("put over an expired value: %v %v", ok, err)
	}
	if got, err := a.Take(ctx, "y", late); err != nil || string(got) != "new" {
		t.Fatalf("take: %q %v", got, err)
	}
}

func ephCounter(t *testing.T, a, b store.Ephemeral) {
	const p = 10 * time.Second
	if u, err := a.Until(ctx, "n", t0); err != nil || u.After(t0) {
		t.Fatalf("absent counter: %v %v", u, err)
	}
	for i := 1; i <= 3; i++ {
		e := a
		if i == 2 {
			e = b
		}
		u, err := e.Incr(ctx, "n", t0, p)
		if err != nil || !u.Equal(t0.Add(time.Duration(i)*p)) {
			t.Fatalf("incr %d: %v %v, want %v", i, u, err, t0.Add(time.Duration(i)*p))
		}
	}
	if u, err := b.Until(ctx, "n", t0); err != nil || !u.Equal(t0.Add(3*p)) {
		t.Fatalf("until on the other node: %v %v", u, err)
	}
	// It drains one per period: at t0+25s one is left; one more ends at t0+40s.
	if u, err := b.Incr(ctx, "n", t0.Add(25*time.Second), p); err != nil || !u.Equal(t0.Add(40*time.Second)) {
		t.Fatalf("incr after draining: %v %v", u, err)
	}
	// Empty again: starts from now.
	later := t0.Add(time.Hour)
	if u, err := a.Incr(ctx, "n", later, p); err != nil || !u.Equal(later.Add(p)) {
		t.Fatalf("incr of an empty counter: %v %v", u, err)
	}
	if err := b.Reset(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if u, err := a.Until(ctx, "n", later); err != nil || !u.IsZero() {
		t.Fatalf("until after reset: %v %v", u, err)
	}
}

func ephCounterConcurrent(t *testing.T, a, b store.Ephemeral) {
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.Incr(ctx, "spent", t0, time.Minute); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if u, err := a.Until(ctx, "spent", t0); err != nil || !u.Equal(t0.Add(n*time.Minute)) {
		t.Fatalf("after %d concurrent increments on two nodes: until %v (%v), want %v", n, u, err, t0.Add(n*time.Minute))
	}
}

func ephKindsAndKeys(t *testing.T, a, b store.Ephemeral) {
	if _, err := a.PutIfAbsent(ctx, "", []byte("v"), t0, time.Minute); err == nil {
		t.Fatal("empty key accepted")
	}
	if _, err := a.Incr(ctx, "cnt", t0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Take(ctx, "cnt", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("take of a counter: %q %v, want ErrNotFound", got, err)
	}
	// Keys that are prefixes of one another are distinct.
	for _, k := range []string{"p", "p/", "p/1"} {
		if ok, err := a.PutIfAbsent(ctx, k, []byte(k), t0, time.Minute); err != nil || !ok {
			t.Fatalf("put %q: %v %v", k, ok, err)
		}
	}
	for _, k := range []string{"p/1", "p", "p/"} {
		if got, err := b.Take(ctx, k, t0); err != nil || string(got) != k {
			t.Fatalf("take %q: %q %v", k, got, err)
		}
	}
	if err := a.Reset(context.Background(), "absent"); err != nil {
		t.Fatalf("reset of an absent key: %v", err)
	}
}
