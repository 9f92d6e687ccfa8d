// Package storetest is the conformance suite of [store.Backend]: every
// backend Keywarden can run on (bbolt today; a cluster backend such as etcd
// next) must pass [Run]. Each case is one clause of the contract written in
// the documentation of [store.Backend]; a backend that fails one would
// break a guarantee the rest of the appliance builds on (a release after a
// delete, a token used twice, a write acknowledged and then lost).
//
// A backend's test calls it with a [Harness]:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			Open:    func(t *testing.T) store.Backend { … a new, empty backend … },
//			Reopen:  func(t *testing.T, b store.Backend) store.Backend { … close b, open the same data … },
//			Restore: func(t *testing.T, snap []byte) store.Backend { … a backend holding what Snapshot wrote … },
//		})
//	}
//
// The suite uses only real backends: no case mocks the engine, and none
// depends on timing.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/store"
)

// Harness opens the backend under test.
type Harness struct {
	// Open returns a new, empty backend (no buckets, schema version 0).
	Open func(t *testing.T) store.Backend
	// Reopen closes b and returns the same store opened again, as after a
	// restart of the process.
	Reopen func(t *testing.T, b store.Backend) store.Backend
	// Restore returns a new backend holding snap, the bytes a Snapshot
	// wrote, restored by the backend's own means.
	Restore func(t *testing.T, snap []byte) store.Backend
}

// The suite's buckets. Names that are prefixes of one another catch a
// backend that maps buckets to key prefixes without a separator.
const (
	bucketA  store.Bucket = "conf"
	bucketAB store.Bucket = "conf_b"
	bucketB  store.Bucket = "confb"
)

var suiteBuckets = []store.Bucket{bucketA, bucketAB, bucketB}

var ctx = context.Background()

// Run runs every conformance case against fresh backends from h.
func Run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"NotFound", testNotFound},
		{"UnknownBucket", testUnknownBucket},
		{"PutGetDelete", testPutGetDelete},
		{"ReadYourWrites", testReadYourWrites},
		{"ByteOrder", testByteOrder},
		{"PrefixScans", testPrefixScans},
		{"BucketsDoNotLeak", testBucketsDoNotLeak},
		{"ForEachStopsOnError", testForEachStops},
		{"FailedUpdateLeavesNothing", testFailedUpdate},
		{"CanceledContext", testCanceled},
		{"RetriedFunctionsAreSerializable", testSerializable},
		{"ViewNeverSeesHalfAnUpdate", testIsolation},
		{"ViewConsistentUnderWrites", testIsolationLoop},
		{"ConcurrentUpdatesAllLand", testConcurrent},
		{"DurableOnReturn", testDurable},
		{"SnapshotRestoresEqual", testSnapshot},
		{"LargeValues", testLarge},
		{"EmptyValues", testEmpty},
		{"GetReturnsCopies", testCopies},
		{"Schema", testSchema},
		{"Facade", testFacade},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, h) })
	}
}

// open returns a fresh backend with the suite's buckets, closed at the end
// of the test.
func open(t *testing.T, h Harness) *handle {
	t.Helper()
	hd := &handle{b: h.Open(t)}
	t.Cleanup(func() { hd.b.Close() })
	update(t, hd.b, func(tx store.BackendTx) error {
		for _, b := range suiteBuckets {
			if err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
	return hd
}

// handle holds the current backend of a test (Reopen replaces it).
type handle struct{ b store.Backend }

func update(t *testing.T, b store.Backend, fn func(store.BackendTx) error) {
	t.Helper()
	if err := b.Update(ctx, fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func view(t *testing.T, b store.Backend, fn func(store.BackendTx) error) {
	t.Helper()
	if err := b.View(ctx, fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

func put(t *testing.T, b store.Backend, bk store.Bucket, kvs ...[]byte) {
	t.Helper()
	update(t, b, func(tx store.BackendTx) error {
		for i := 0; i+1 < len(kvs); i += 2 {
			if err := tx.Put(bk, kvs[i], kvs[i+1]); err != nil {
				return err
			}
		}
		return nil
	})
}

// get returns the value and whether it is present (failing on any error
// but ErrNotFound).
func get(t *testing.T, b store.Backend, bk store.Bucket, key []byte) ([]byte, bool) {
	t.Helper()
	var v []byte
	var found bool
	view(t, b, func(tx store.BackendTx) error {
		var err error
		v, err = tx.Get(bk, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	return v, found
}

type kv struct{ k, v string }

// dump lists bucket bk's records with the given prefix, in ForEach order.
func dump(t *testing.T, tx store.BackendTx, bk store.Bucket, prefix []byte) []kv {
	t.Helper()
	var out []kv
	if err := tx.ForEach(bk, prefix, func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	}); err != nil {
		t.Fatalf("ForEach %s %x: %v", bk, prefix, err)
	}
	return out
}

func dumpAll(t *testing.T, b store.Backend) map[store.Bucket][]kv {
	t.Helper()
	all := map[store.Bucket][]kv{}
	view(t, b, func(tx store.BackendTx) error {
		for _, bk := range suiteBuckets {
			all[bk] = dump(t, tx, bk, nil)
		}
		return nil
	})
	return all
}

func testNotFound(t *testing.T, h Harness) {
	hd := open(t, h)
	put(t, hd.b, bucketA, []byte("present"), []byte("v"))
	for _, k := range [][]byte{[]byte("absent"), []byte("presen"), []byte("present\x00"), {0xFF}} {
		if _, found := get(t, hd.b, bucketA, k); found {
			t.Errorf("Get %q found a value", k)
		}
	}
	// The same answer inside a write transaction.
	err := hd.b.Update(ctx, func(tx store.BackendTx) error {
		_, err := tx.Get(bucketA, []byte("absent"))
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of an absent key in Update: %v, want ErrNotFound", err)
	}
}

func testUnknownBucket(t *testing.T, h Harness) {
	hd := open(t, h)
	const nope store.Bucket = "never_created"
	for name, fn := range map[string]func(tx store.BackendTx) error{
		"Get":     func(tx store.BackendTx) error { _, err := tx.Get(nope, []byte("k")); return err },
		"Put":     func(tx store.BackendTx) error { return tx.Put(nope, []byte("k"), []byte("v")) },
		"Delete":  func(tx store.BackendTx) error { return tx.Delete(nope, []byte("k")) },
		"ForEach": func(tx store.BackendTx) error { return tx.ForEach(nope, nil, func(k, v []byte) error { return nil }) },
	} {
		err := hd.b.Update(ctx, fn)
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s on a bucket no migration created: %v, want an error other than ErrNotFound", name, err)
		}
	}
}

func testPutGetDelete(t *testing.T, h Harness) {
	hd := open(t, h)
	k := []byte("user:a\x00PASSKEY")
	put(t, hd.b, bucketA, k, []byte("v1"))
	if v, ok := get(t, hd.b, bucketA, k); !ok || string(v) != "v1" {
		t.Fatalf("get = %q, %v", v, ok)
	}
	put(t, hd.b, bucketA, k, []byte("v2"))
	if v, ok := get(t, hd.b, bucketA, k); !ok || string(v) != "v2" {
		t.Fatalf("after overwrite: %q, %v", v, ok)
	}
	update(t, hd.b, func(tx store.BackendTx) error { return tx.Delete(bucketA, k) })
	if _, ok := get(t, hd.b, bucketA, k); ok {
		t.Fatal("present after Delete")
	}
	// Deleting an absent key is not an error.
	update(t, hd.b, func(tx store.BackendTx) error { return tx.Delete(bucketA, k) })
}

func testReadYourWrites(t *testing.T, h Harness) {
	hd := open(t, h)
	put(t, hd.b, bucketA, []byte("a1"), []byte("old"), []byte("a2"), []byte("gone"))
	update(t, hd.b, func(tx store.BackendTx) error {
		if err := tx.Put(bucketA, []byte("a1"), []byte("new")); err != nil {
			return err
		}
		if err := tx.Put(bucketA, []byte("a3"), []byte("added")); err != nil {
			return err
		}
		if err := tx.Delete(bucketA, []byte("a2")); err != nil {
			return err
		}
		if v, err := tx.Get(bucketA, []byte("a1")); err != nil || string(v) != "new" {
			t.Errorf("Get after Put in the same transaction: %q, %v", v, err)
		}
		if _, err := tx.Get(bucketA, []byte("a2")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get after Delete in the same transaction: %v, want ErrNotFound", err)
		}
		got := dump(t, tx, bucketA, []byte("a"))
		want := []kv{{"a1", "new"}, {"a3", "added"}}
		if !slices.Equal(got, want) {
			t.Errorf("ForEach in the transaction = %q, want %q", got, want)
		}
		return nil
	})
}

// orderKeys are keys whose byte order differs from any signed, string or
// length-first order.
var orderKeys = [][]byte{
	{0x00}, {0x00, 0x00}, {0x00, 0x01}, {0x01}, {0x7F}, {0x7F, 0xFF}, {0x80}, {0xFE, 0xFF}, {0xFF}, {0xFF, 0x00}, {0xFF, 0xFF}, {0xFF, 0xFF, 0xFF},
	[]byte("A"), []byte("Z"), []byte("a"), []byte("a\x00"), []byte("a\x00b"), []byte("a\x01"), []byte("a/"), []byte("ab"), []byte("b"),
	[]byte("user:a\x00PASSKEY"), []byte("user:a\x00PASSKEY\x00"), []byte("user:a\x00PASSKEY\x0000000000000000000001"), []byte("user:a\x00firebase"), []byte("user:ab\x00PASSKEY"),
}

func putOrderKeys(t *testing.T, b store.Backend, bk store.Bucket) {
	t.Helper()
	// Insert in an order unrelated to the sorted one.
	keys := slices.Clone(orderKeys)
	slices.Reverse(keys)
	keys = append(keys[len(keys)/2:], keys[:len(keys)/2]...)
	update(t, b, func(tx store.BackendTx) error {
		for _, k := range keys {
			if err := tx.Put(bk, k, append([]byte("v:"), k...)); err != nil {
				return err
			}
		}
		return nil
	})
}

func testByteOrder(t *testing.T, h Harness) {
	hd := open(t, h)
	putOrderKeys(t, hd.b, bucketA)
	want := slices.Clone(orderKeys)
	slices.SortFunc(want, bytes.Compare)
	check := func(when string) {
		var got [][]byte
		view(t, hd.b, func(tx store.BackendTx) error {
			return tx.ForEach(bucketA, nil, func(k, v []byte) error {
				if !bytes.Equal(v, append([]byte("v:"), k...)) {
					t.Errorf("%s: key %x has value %q", when, k, v)
				}
				got = append(got, bytes.Clone(k))
				return nil
			})
		})
		if !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("%s: ForEach order\n got %x\nwant %x (byte-wise ascending)", when, got, want)
		}
	}
	check("after the write")
	hd.b = h.Reopen(t, hd.b)
	check("after reopening")
}

func testPrefixScans(t *testing.T, h Harness) {
	hd := open(t, h)
	putOrderKeys(t, hd.b, bucketA)
	prefixes := [][]byte{nil, {}, {0x00}, {0x00, 0x00}, {0x7F}, {0xFF}, {0xFF, 0xFF}, {0xFF, 0xFF, 0xFF, 0xFF},
		[]byte("a"), []byte("a\x00"), []byte("a\xFF"), []byte("user:a\x00"), []byte("user:a\x00PASSKEY\x00"), []byte("user:a\x00PASSKEY"), []byte("zzz")}
	view(t, hd.b, func(tx store.BackendTx) error {
		for _, p := range prefixes {
			var want []kv
			sorted := slices.Clone(orderKeys)
			slices.SortFunc(sorted, bytes.Compare)
			for _, k := range sorted {
				if bytes.HasPrefix(k, p) {
					want = append(want, kv{string(k), "v:" + string(k)})
				}
			}
			if got := dump(t, tx, bucketA, p); !slices.Equal(got, want) {
				t.Errorf("prefix %x:\n got %q\nwant %q", p, got, want)
			}
		}
		return nil
	})
}

func testBucketsDoNotLeak(t *testing.T, h Harness) {
	hd := open(t, h)
	// The same keys in three buckets whose names prefix one another, and
	// keys that would spell another bucket's name if a backend joined
	// bucket and key without a separator.
	put(t, hd.b, bucketA, []byte("k"), []byte("A"), []byte("_b/k"), []byte("A2"), []byte("b"), []byte("A3"), []byte{0xFF}, []byte("A4"))
	put(t, hd.b, bucketAB, []byte("k"), []byte("AB"))
	put(t, hd.b, bucketB, []byte("k"), []byte("B"), []byte{0x00}, []byte("B0"))
	all := dumpAll(t, hd.b)
	want := map[store.Bucket][]kv{
		bucketA:  {{"_b/k", "A2"}, {"b", "A3"}, {"k", "A"}, {"\xFF", "A4"}},
		bucketAB: {{"k", "AB"}},
		bucketB:  {{"\x00", "B0"}, {"k", "B"}},
	}
	for _, bk := range suiteBuckets {
		if !slices.Equal(all[bk], want[bk]) {
			t.Errorf("bucket %s holds %q, want %q", bk, all[bk], want[bk])
		}
	}
	update(t, hd.b, func(tx store.BackendTx) error { return tx.Delete(bucketAB, []byte("k")) })
	if v, ok := get(t, hd.b, bucketA, []byte("k")); !ok || string(v) != "A" {
		t.Fatalf("a delete in %s removed %s's key: %q %v", bucketAB, bucketA, v, ok)
	}
	if v, ok := get(t, hd.b, bucketB, []byte("k")); !ok || string(v) != "B" {
		t.Fatalf("a delete in %s removed %s's key: %q %v", bucketAB, bucketB, v, ok)
	}
}

func testForEachStops(t *testing.T, h Harness) {
	hd := open(t, h)
	putOrderKeys(t, hd.b, bucketA)
	stop := errors.New("stop")
	n := 0
	err := hd.b.View(ctx, func(tx store.BackendTx) error {
		return tx.ForEach(bucketA, nil, func(k, v []byte) error {
			n++
			if n == 3 {
				return stop
			}
			return nil
		})
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("ForEach returned %v after %d calls; want fn's error after 3", err, n)
	}
}

func testFailedUpdate(t *testing.T, h Harness) {
	hd := open(t, h)
	put(t, hd.b, bucketA, []byte("keep"), []byte("v"), []byte("doomed"), []byte("v"))
	before := dumpAll(t, hd.b)
	boom := errors.New("boom")
	err := hd.b.Update(ctx, func(tx store.BackendTx) error {
		for _, op := range []func() error{
			func() error { return tx.Put(bucketA, []byte("new"), []byte("x")) },
			func() error { return tx.Put(bucketA, []byte("keep"), []byte("overwritten")) },
			func() error { return tx.Delete(bucketA, []byte("doomed")) },
			func() error { return tx.Put(bucketB, []byte("other bucket"), []byte("x")) },
			func() error { return tx.CreateBucket("conf_new") },
		} {
			if err := op(); err != nil {
				return err
			}
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if after := dumpAll(t, hd.b); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a failed Update left changes:\nbefore %q\nafter  %q", before, after)
	}
	err = hd.b.View(ctx, func(tx store.BackendTx) error {
		return tx.ForEach("conf_new", nil, func(k, v []byte) error { return nil })
	})
	if err == nil {
		t.Fatal("a bucket created by a failed Update exists")
	}
}

func testCanceled(t *testing.T, h Harness) {
	hd := open(t, h)
	c, cancel := context.WithCancel(ctx)
	cancel()
	err := hd.b.Update(c, func(tx store.BackendTx) error { return tx.Put(bucketA, []byte("k"), []byte("v")) })
	if err == nil {
		t.Fatal("Update with a canceled context succeeded")
	}
	if _, ok := get(t, hd.b, bucketA, []byte("k")); ok {
		t.Fatal("Update with a canceled context applied its write")
	}
}

// testSerializable: concurrent read-modify-write Updates. A backend that
// retries a function on conflict (optimistic concurrency) must apply each
// function's writes exactly once, from what that run read: the counter
// ends at the number of increments, none lost, none doubled. Each run
// starts from scratch, so a function that is run again must not carry
// state from the earlier run (the idempotence contract).
func testSerializable(t *testing.T, h Harness) {
	hd := open(t, h)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				err := hd.b.Update(ctx, func(tx store.BackendTx) error {
					n := 0
					if v, err := tx.Get(bucketA, []byte("counter")); err == nil {
						n = int(v[0])<<8 | int(v[1])
					} else if !errors.Is(err, store.ErrNotFound) {
						return err
					}
					n++
					if err := tx.Put(bucketA, []byte("counter"), []byte{byte(n >> 8), byte(n)}); err != nil {
						return err
					}
					return tx.Put(bucketA, fmt.Appendf(nil, "log/%04d", n), fmt.Appendf(nil, "w%d-%d", w, i))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	v, _ := get(t, hd.b, bucketA, []byte("counter"))
	if len(v) != 2 || int(v[0])<<8|int(v[1]) != workers*each {
		t.Fatalf("counter = %x after %d increments", v, workers*each)
	}
	var seen []string
	view(t, hd.b, func(tx store.BackendTx) error {
		for _, r := range dump(t, tx, bucketA, []byte("log/")) {
			seen = append(seen, r.v)
		}
		return nil
	})
	slices.Sort(seen)
	if len(seen) != workers*each || len(slices.Compact(seen)) != workers*each {
		t.Fatalf("%d log entries (%d distinct) for %d increments", len(seen), len(slices.Compact(seen)), workers*each)
	}
}

// testIsolation: while an Update has written part of its changes, a View
// started meanwhile sees none of them.
func testIsolation(t *testing.T, h Harness) {
	hd := open(t, h)
	put(t, hd.b, bucketA, []byte("x"), []byte("0"), []byte("y"), []byte("0"))
	update(t, hd.b, func(tx store.BackendTx) error {
		if err := tx.Put(bucketA, []byte("x"), []byte("1")); err != nil {
			return err
		}
		if err := tx.Put(bucketA, []byte("new"), []byte("1")); err != nil {
			return err
		}
		seen := make(chan []kv, 1)
		go func() {
			var got []kv
			err := hd.b.View(ctx, func(vtx store.BackendTx) error { got = dump(t, vtx, bucketA, nil); return nil })
			if err != nil {
				t.Error(err)
			}
			seen <- got
		}()
		if got, want := <-seen, []kv{{"x", "0"}, {"y", "0"}}; !slices.Equal(got, want) {
			t.Errorf("a View during an Update saw %q, want the state before it %q", got, want)
		}
		return tx.Put(bucketA, []byte("y"), []byte("1"))
	})
	if got, want := dumpAll(t, hd.b)[bucketA], []kv{{"new", "1"}, {"x", "1"}, {"y", "1"}}; !slices.Equal(got, want) {
		t.Fatalf("after the Update: %q, want %q", got, want)
	}
}

// testIsolationLoop: readers running alongside a writer that always writes
// x and y equal never see them differ.
func testIsolationLoop(t *testing.T, h Harness) {
	hd := open(t, h)
	put(t, hd.b, bucketA, []byte("x"), []byte("0"), []byte("y"), []byte("0"))
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				err := hd.b.View(ctx, func(tx store.BackendTx) error {
					x, err := tx.Get(bucketA, []byte("x"))
					if err != nil {
						return err
					}
					y, err := tx.Get(bucketA, []byte("y"))
					if err != nil {
						return err
					}
					if !bytes.Equal(x, y) {
						return fmt.Errorf("view saw x=%s y=%s: half an update", x, y)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 1; i <= 200; i++ {
		v := fmt.Appendf(nil, "%d", i)
		put(t, hd.b, bucketA, []byte("x"), v, []byte("y"), v)
	}
	close(done)
	wg.Wait()
}

func testConcurrent(t *testing.T, h Harness) {
	hd := open(t, h)
	const writers, each = 32, 4
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := fmt.Appendf(nil, "w%02d-%d", w, i)
				if err := hd.b.Update(ctx, func(tx store.BackendTx) error { return tx.Put(bucketA, k, k) }); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got := dumpAll(t, hd.b)[bucketA]; len(got) != writers*each {
		t.Fatalf("%d of %d concurrent writes landed", len(got), writers*each)
	}
}

func testDurable(t *testing.T, h Harness) {
	hd := open(t, h)
	for i := range 50 {
		k := fmt.Appendf(nil, "k%03d", i)
		put(t, hd.b, bucketA, k, k)
	}
	put(t, hd.b, bucketB, []byte{0x00, 0xFF}, []byte{})
	update(t, hd.b, func(tx store.BackendTx) error { return tx.Delete(bucketA, []byte("k007")) })
	before := dumpAll(t, hd.b)
	hd.b = h.Reopen(t, hd.b)
	if after := dumpAll(t, hd.b); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("after reopening:\n got %q\nwant %q", after, before)
	}
	if _, ok := get(t, hd.b, bucketA, []byte("k007")); ok {
		t.Fatal("a delete did not survive reopening")
	}
}

func testSnapshot(t *testing.T, h Harness) {
	hd := open(t, h)
	putOrderKeys(t, hd.b, bucketA)
	put(t, hd.b, bucketAB, []byte("k"), []byte("v"), []byte("empty"), []byte{})
	update(t, hd.b, func(tx store.BackendTx) error { return tx.SetSchemaVersion(3) })
	want := dumpAll(t, hd.b)
	var buf bytes.Buffer
	n, err := hd.b.Snapshot(ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("Snapshot reported %d bytes, wrote %d", n, buf.Len())
	}
	// Changes after the snapshot are not in it.
	put(t, hd.b, bucketA, []byte("later"), []byte("x"))
	update(t, hd.b, func(tx store.BackendTx) error { return tx.Delete(bucketAB, []byte("k")) })

	r := h.Restore(t, buf.Bytes())
	t.Cleanup(func() { r.Close() })
	if got := dumpAll(t, r); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("restored snapshot:\n got %q\nwant %q", got, want)
	}
	view(t, r, func(tx store.BackendTx) error {
		if v, err := tx.SchemaVersion(); err != nil || v != 3 {
			t.Errorf("restored schema version %d, %v; want 3", v, err)
		}
		return nil
	})
	// The restored store is a working store, independent of the original.
	put(t, r, bucketA, []byte("after restore"), []byte("x"))
	if _, ok := get(t, hd.b, bucketA, []byte("after restore")); ok {
		t.Fatal("a write to the restored store appeared in the original")
	}
}

func testLarge(t *testing.T, h Harness) {
	hd := open(t, h)
	vals := make([][]byte, 8)
	for i := range vals {
		vals[i] = make([]byte, 64<<10)
		_, _ = rand.Read(vals[i])
	}
	update(t, hd.b, func(tx store.BackendTx) error {
		for i, v := range vals {
			if err := tx.Put(bucketA, fmt.Appendf(nil, "big%d", i), v); err != nil {
				return err
			}
		}
		return nil
	})
	longKey := bytes.Repeat([]byte{0xAB}, 1024)
	put(t, hd.b, bucketA, longKey, vals[0])
	hd.b = h.Reopen(t, hd.b)
	for i, v := range vals {
		if got, ok := get(t, hd.b, bucketA, fmt.Appendf(nil, "big%d", i)); !ok || !bytes.Equal(got, v) {
			t.Fatalf("64 KiB value %d: %d bytes back, equal %v", i, len(got), bytes.Equal(got, v))
		}
	}
	if got, ok := get(t, hd.b, bucketA, longKey); !ok || !bytes.Equal(got, vals[0]) {
		t.Fatal("value under a 1 KiB key not returned")
	}
}

func testEmpty(t *testing.T, h Harness) {
	hd := open(t, h)
	put(t, hd.b, bucketA, []byte("empty"), []byte{}, []byte("nil"), nil)
	update(t, hd.b, func(tx store.BackendTx) error {
		// In the writing transaction too.
		if err := tx.Put(bucketA, []byte("fresh"), nil); err != nil {
			return err
		}
		if v, err := tx.Get(bucketA, []byte("fresh")); err != nil || len(v) != 0 {
			t.Errorf("empty value in its own transaction: %q, %v", v, err)
		}
		return nil
	})
	check := func(when string) {
		for _, k := range []string{"empty", "nil", "fresh"} {
			if v, ok := get(t, hd.b, bucketA, []byte(k)); !ok || len(v) != 0 {
				t.Errorf("%s: %s: %q, present %v; want a present, empty value", when, k, v, ok)
			}
		}
		if got := dumpAll(t, hd.b)[bucketA]; !slices.Equal(got, []kv{{"empty", ""}, {"fresh", ""}, {"nil", ""}}) {
			t.Errorf("%s: ForEach = %q", when, got)
		}
	}
	check("before reopening")
	hd.b = h.Reopen(t, hd.b)
	check("after reopening")
}

func testCopies(t *testing.T, h Harness) {
	hd := open(t, h)
	put(t, hd.b, bucketA, []byte("filler"), bytes.Repeat([]byte{7}, 8192), []byte("k"), []byte("original"))
	var v []byte
	view(t, hd.b, func(tx store.BackendTx) (err error) { v, err = tx.Get(bucketA, []byte("k")); return })
	v[0] = 'X'
	if got, _ := get(t, hd.b, bucketA, []byte("k")); string(got) != "original" {
		t.Fatalf("writing into Get's result changed the store: %q", got)
	}
	// Rewrite the store until freed space is reused: v stays as it was.
	for i := range 50 {
		put(t, hd.b, bucketA, []byte("k"), fmt.Appendf(nil, "replaced %d", i), fmt.Appendf(nil, "other%d", i), bytes.Repeat([]byte{byte(i)}, 4096))
		update(t, hd.b, func(tx store.BackendTx) error { return tx.Delete(bucketA, fmt.Appendf(nil, "other%d", i)) })
	}
	if string(v) != "Xriginal" {
		t.Fatalf("a value from Get changed after its transaction: %q", v)
	}
}

func testSchema(t *testing.T, h Harness) {
	b := h.Open(t)
	hd := &handle{b: b}
	t.Cleanup(func() { hd.b.Close() })
	view(t, hd.b, func(tx store.BackendTx) error {
		if v, err := tx.SchemaVersion(); err != nil || v != 0 {
			t.Errorf("empty backend: schema version %d, %v; want 0", v, err)
		}
		return nil
	})
	update(t, hd.b, func(tx store.BackendTx) error {
		if err := tx.CreateBucket(bucketA); err != nil {
			return err
		}
		if err := tx.Put(bucketA, []byte("k"), []byte("v")); err != nil {
			return err
		}
		return tx.SetSchemaVersion(7)
	})
	// CreateBucket is idempotent and keeps what the bucket holds.
	update(t, hd.b, func(tx store.BackendTx) error { return tx.CreateBucket(bucketA) })
	hd.b = h.Reopen(t, hd.b)
	view(t, hd.b, func(tx store.BackendTx) error {
		if v, err := tx.SchemaVersion(); err != nil || v != 7 {
			t.Errorf("schema version after reopening %d, %v; want 7", v, err)
		}
		return nil
	})
	if v, ok := get(t, hd.b, bucketA, []byte("k")); !ok || string(v) != "v" {
		t.Fatalf("CreateBucket of an existing bucket lost its records: %q %v", v, ok)
	}
}

// testFacade: store.DB over the backend migrates it to the current schema
// and runs the group commit, the change ledger's view and backups on it.
func testFacade(t *testing.T, h Harness) {
	db, err := store.New(h.Open(t), store.Options{})
	if err != nil {
		t.Fatalf("store.New over an empty backend: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.Update(ctx, func(tx *store.Tx) error {
				for _, b := range store.Buckets() {
					if err := tx.Put(b, store.Key("owner", fmt.Sprint(i)), []byte("v")); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	err = db.View(ctx, func(tx *store.Tx) error {
		n := 0
		if err := tx.ForEachCovered(func(b store.Bucket, k, v []byte) error { n++; return nil }); err != nil {
			return err
		}
		if want := 40 * (len(store.Buckets()) - 1); n != want {
			t.Errorf("ForEachCovered saw %d records, want %d (every bucket but meta)", n, want)
		}
		// From a position: the same records from there on, in the same
		// order, until ErrStop (the rollback ledger's range scans).
		var all, from [][]byte
		_ = tx.ForEachCovered(func(b store.Bucket, k, v []byte) error { all = append(all, store.Pos(nil, b, k)); return nil })
		mid := all[len(all)/2]
		if err := tx.ForEachCoveredFrom(mid, func(b store.Bucket, k, v []byte) error {
			if len(from) == 100 {
				return store.ErrStop
			}
			from = append(from, store.Pos(nil, b, k))
			return nil
		}); err != nil {
			return err
		}
		want := all[len(all)/2:]
		if len(want) > 100 {
			want = want[:100]
		}
		if fmt.Sprintf("%q", from) != fmt.Sprintf("%q", want) {
			t.Errorf("ForEachCoveredFrom(%q) saw %d records, want the %d that ForEachCovered sees from there", mid, len(from), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var removed int
	err = db.Update(ctx, func(tx *store.Tx) (err error) {
		removed, err = tx.DeletePrefix(store.BucketKeys, store.Prefix("owner"))
		return
	})
	if err != nil || removed != 40 {
		t.Fatalf("DeletePrefix removed %d, %v; want 40", removed, err)
	}
	if err := db.Writable(ctx); err != nil {
		t.Fatalf("Writable: %v", err)
	}
	var buf bytes.Buffer
	if _, err := db.WriteTo(&buf); err != nil || buf.Len() == 0 {
		t.Fatalf("WriteTo: %d bytes, %v", buf.Len(), err)
	}
	r, err := store.New(h.Restore(t, buf.Bytes()), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("a backup does not open read-only at the current schema: %v", err)
	}
	defer r.Close()
	err = r.View(ctx, func(tx *store.Tx) error {
		_, err := tx.Get(store.BucketUsers, store.Key("owner", "7"))
		return err
	})
	if err != nil {
		t.Fatalf("backup lacks a record: %v", err)
	}
}
