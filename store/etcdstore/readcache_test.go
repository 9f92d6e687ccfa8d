package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// openPair opens two stores (two nodes) on one prefix of c; a's options
// are o (its endpoints and prefix set here).
func openPair(t *testing.T, c *etcddev.Cluster, o etcdstore.Options) (a, b *etcdstore.Store) {
	t.Helper()
	o.Endpoints = c.Endpoints()
	o.Prefix = fmt.Sprintf("kw-rc-%d", prefixes.Add(1))
	var err error
	if a, err = etcdstore.Open(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.Endpoints(), Prefix: o.Prefix}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	update(t, a, func(tx store.BackendTx) error { return tx.CreateBucket(bk) })
	return a, b
}

func put(t *testing.T, s store.Backend, k, v string) {
	t.Helper()
	update(t, s, func(tx store.BackendTx) error { return tx.Put(bk, []byte(k), []byte(v)) })
}

// modRevision is the etcd key's current mod revision.
func modRevision(t *testing.T, s *etcdstore.Store, key string) int64 {
	t.Helper()
	resp, err := s.Client().Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %q: %v (%d keys)", key, err, len(resp.Kvs))
	}
	return resp.Kvs[0].ModRevision
}

// TestLateCacheEntryRefused: the watch passes over a change to a key the
// read cache does not hold; a point read of that key at an earlier
// revision whose answer reaches the cache afterwards must not become an
// entry (nothing would ever correct it). The next Update reads the key's
// current value and commits at its first attempt.
func TestLateCacheEntryRefused(t *testing.T) {
	a, b := openPair(t, etcddev.Embedded(t), etcdstore.Options{})
	k := a.Prefix() + "/" + string(bk) + "/k"
	sentinel := a.Prefix() + "/" + string(bk) + "/sentinel"
	put(t, a, "sentinel", "a") // cached in a: the watch keeps it current

	put(t, b, "k", "old")
	old := modRevision(t, b, k)
	put(t, b, "k", "new") // a does not cache k: its watch passes over this
	put(t, b, "sentinel", "b")
	// The watch applies a prefix's events in order: once it has applied
	// the sentinel's, it has passed over k's.
	for {
		if v, _, _ := etcdstore.CacheEntry(a, sentinel); string(v) == "b" {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, _, ok := etcdstore.CacheEntry(a, k); ok {
		t.Fatal("k cached before the late read (the test does not test what it says)")
	}

	etcdstore.Remember(a, k, []byte("old"), old, old) // the late answer of a read at old
	if v, mod, ok := etcdstore.CacheEntry(a, k); ok && (string(v) != "new" || mod == old) {
		t.Fatalf("the cache took a read older than what the watch applied: %q at mod %d", v, mod)
	}

	before := a.Conflicts()
	var seen []string
	update(t, a, func(tx store.BackendTx) error {
		v, err := tx.Get(bk, []byte("k"))
		if err != nil {
			return err
		}
		seen = append(seen, string(v))
		return tx.Put(bk, []byte("k"), append(v, "+a"...))
	})
	if a.Conflicts() != before || len(seen) != 1 || seen[0] != "new" {
		t.Fatalf("the Update read %q with %d conflicts; want \"new\" at its first attempt", seen, a.Conflicts()-before)
	}
	if got := get(t, b, "k"); got != "new+a" {
		t.Fatalf("k = %q, want \"new+a\"", got)
	}
}

// TestStaleCacheEntryWithoutRoomToRefresh: a stale cached value fails the
// guard; when the transaction is so large that the guard fits in the
// request but the Else branch's reads of the current values do not,
// nothing refreshes the entry, and the next attempt must not read it
// again (before: every attempt reused it, and the Update gave up after
// 64 conflicts).
func TestStaleCacheEntryWithoutRoomToRefresh(t *testing.T) {
	const maxReq = 4096
	a, b := openPair(t, etcddev.Embedded(t), etcdstore.Options{MaxRequestBytes: maxReq})
	etcdstore.StopWatch(a) // a's cache hears of b's writes only through guards
	put(t, a, "k", "v1")   // cached in a
	put(t, b, "k", "v2")   // a's entry is stale

	// One write of k after a read of k: the request's size as Update
	// counts it (the fence's write, k's write, each with 16 bytes of
	// framing), then k's compare in the guard, then k's read in the Else
	// branch. The value leaves room for the compare but not the read.
	key := len(a.Prefix()+"/"+string(bk)+"/k") + 16
	fence := len(a.Prefix()+"/.txn") + 16
	big := maxReq - fence - 2*key - key/2
	if big <= 0 {
		t.Fatal("request bound too small for the test")
	}
	value := []byte(strings.Repeat("x", big))

	before := a.Conflicts()
	var seen []string
	err := a.Update(context.Background(), func(tx store.BackendTx) error {
		v, err := tx.Get(bk, []byte("k"))
		if err != nil {
			return err
		}
		seen = append(seen, string(v))
		return tx.Put(bk, []byte("k"), value)
	})
	if err != nil {
		t.Fatalf("Update with a stale cached read and no room to refresh it: %v (after %d runs)", err, len(seen))
	}
	if a.Conflicts() == before || seen[0] != "v1" {
		t.Fatalf("first run read %q, %d conflicts: the stale entry was not used (the test does not test what it says)", seen[0], a.Conflicts()-before)
	}
	if last := seen[len(seen)-1]; last != "v2" {
		t.Fatalf("the committing run read %q, want \"v2\"", last)
	}
	if got := get(t, b, "k"); got != string(value) {
		t.Fatalf("k holds %d bytes, want the %d written", len(got), len(value))
	}
}

// TestReadCacheByteBound: the read cache holds at most its bound of bytes
// of keys and values; a value larger than the whole bound is not cached,
// and does not leave the key's older value behind.
func TestReadCacheByteBound(t *testing.T) {
	a, _ := openPair(t, etcddev.Embedded(t), etcdstore.Options{})
	const bound = 8 << 10
	etcdstore.SetCacheBytes(a, bound)
	value := strings.Repeat("v", 1<<10)
	for i := range 32 {
		put(t, a, fmt.Sprintf("k%02d", i), value)
		if n := etcdstore.CacheBytes(a); n > bound {
			t.Fatalf("after %d writes the read cache holds %d bytes, bound %d", i+1, n, bound)
		}
	}
	last := a.Prefix() + "/" + string(bk) + "/k31"
	if v, _, ok := etcdstore.CacheEntry(a, last); !ok || string(v) != value {
		t.Fatal("the last write is not cached: the bound emptied the cache for good")
	}

	x := a.Prefix() + "/" + string(bk) + "/x"
	put(t, a, "x", "small")
	huge := strings.Repeat("h", 2*bound)
	put(t, a, "x", huge)
	if v, _, ok := etcdstore.CacheEntry(a, x); ok && !bytes.Equal(v, []byte(huge)) {
		t.Fatalf("after a write larger than the bound, x's entry is the older %q", v)
	}
	if n := etcdstore.CacheBytes(a); n > bound {
		t.Fatalf("the read cache holds %d bytes, bound %d", n, bound)
	}
	if err := a.View(context.Background(), func(tx store.BackendTx) error {
		v, err := tx.Get(bk, []byte("x"))
		if err == nil && string(v) != huge {
			err = errors.New("x is not the value written")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
