package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/storetest"
)

// TestMemoryEphemeralConformance runs the ephemeral conformance cases on
// the single-node, in-memory implementation.
func TestMemoryEphemeralConformance(t *testing.T) {
	storetest.RunEphemeral(t, storetest.EphemeralHarness{Open: func(t *testing.T) (store.Ephemeral, store.Ephemeral) {
		e := store.NewMemoryEphemeral(1000)
		return e, e
	}})
}

// TestMemoryEphemeralBounded: a flood of puts never holds more than the
// cap; the oldest go first, expired entries are swept.
func TestMemoryEphemeralBounded(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := store.NewMemoryEphemeral(10)
	for i := range 100 {
		if ok, err := e.PutIfAbsent(ctx, fmt.Sprint(i), []byte("v"), now, time.Minute); err != nil || !ok {
			t.Fatalf("put %d: %v %v", i, ok, err)
		}
	}
	if n := e.Len(); n != 10 {
		t.Fatalf("%d entries held, cap 10", n)
	}
	if _, err := e.Take(ctx, "0", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the oldest was not dropped: %v", err)
	}
	if v, err := e.Take(ctx, "99", now); err != nil || string(v) != "v" {
		t.Fatalf("the newest: %q %v", v, err)
	}
	later := now.Add(2 * time.Minute)
	if _, err := e.PutIfAbsent(ctx, "new", []byte("v"), later, time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := e.Len(); n != 1 {
		t.Fatalf("%d entries after expiry, want 1", n)
	}
}

// TestSharedOnlyOnCluster: a bbolt store keeps ephemeral state in each
// node's memory (SharedEphemeral reports none).
func TestSharedOnlyOnCluster(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/k.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, ok := db.SharedEphemeral(); ok || db.Shared() {
		t.Fatal("bbolt reports shared ephemeral state")
	}
}

// TestMemoryEphemeralObjects: a value kept by reference is taken once,
// expires like any other, and is not readable as bytes.
func TestMemoryEphemeralObjects(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := store.NewMemoryEphemeral(10)
	obj := &struct{ n int }{7}
	if ok, err := e.PutObject("o", obj, now, time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if ok, _ := e.PutObject("o", obj, now, time.Minute); ok {
		t.Fatal("a held key was put again")
	}
	if _, err := e.Take(ctx, "o", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Take of an object: %v", err)
	}
	if got, err := e.TakeObject("o", now); err != nil || got != obj {
		t.Fatalf("TakeObject: %v %v", got, err)
	}
	if _, err := e.TakeObject("o", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second TakeObject: %v", err)
	}
	e.PutObject("p", obj, now, time.Minute)
	if _, err := e.TakeObject("p", now.Add(time.Minute)); !errors.Is(err, store.ErrExpired) {
		t.Fatalf("TakeObject at its end: %v", err)
	}
}
