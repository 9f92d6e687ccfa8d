package etcdstore

import (
	"bytes"
	"context"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// # The read cache of Update's first attempt
//
// An Update's first attempt may read a single key from the store's read
// cache instead of asking etcd: the value and mod revision this node last
// read, wrote or saw in its watch of the prefix. Nothing is trusted from
// it: the key's compare in the commit's guard (its mod revision is still
// the one cached, 0: still absent) is checked by the leader, so a cached
// value that another node changed in the meantime fails the guard and fn
// runs again on fresh reads, without the cache. The watch keeps entries
// current (a key rewritten by another node is rarely stale for longer
// than a network delay), so the common case — this node's own rollback
// record, a key record the node read or wrote before — costs no round
// trip at all. A guard that would fall back to the fence (more compares
// than a transaction may hold) cannot vouch for cached values: such an
// attempt counts as a conflict and runs again without the cache.
//
// An entry is added (a key the cache did not hold) only if it is known
// current at a revision the watch has reached: the watch updates the keys
// the cache holds and passes over the others, so a read answered at an
// earlier revision, whose answer reaches the cache after the watch passed
// over a change to that key, would otherwise stay stale for good (every
// guard on it failing until the cache forgets it). While the watch is
// down (between a break and its restart) no entry is added. Entries
// already held are replaced only by later states. A failed guard whose
// Else branch could not bring back the current values (no room left in
// the request) drops the keys it read, so the next attempt reads them
// from etcd.
//
// The cache holds what the store holds (values sealed by the root key),
// bounded by maxCached entries and maxCachedBytes bytes of keys and values
// (emptied when full; a value larger than the whole bound is not cached).

// maxCached bounds the read cache's entries.
const maxCached = 1 << 16

// maxCachedBytes bounds the read cache's keys and values.
const maxCachedBytes = 32 << 20

// entryOverhead is what an entry costs beyond its key and value (the map
// slot, the strings' and the slice's headers, the revisions), counted
// against maxCachedBytes.
const entryOverhead = 64

// cached is one key's state: its value (nil: absent) and mod revision
// (0: absent), known current at revision at.
type cached struct {
	v   []byte
	mod int64
	at  int64
}

type readCache struct {
	mu       sync.Mutex
	m        map[string]cached
	bytes    int   // the entries' size (cost)
	maxBytes int   // bound of bytes (maxCachedBytes; tests set less)
	watched  int64 // the latest revision the watch applied; blind: none (the watch is down)
}

// blind is readCache.watched while the watch is down: no entry is added.
const blind = math.MaxInt64

func newReadCache(watched int64) *readCache {
	return &readCache{m: map[string]cached{}, maxBytes: maxCachedBytes, watched: watched}
}

// cost is what key's entry e counts against maxCachedBytes.
func cost(key string, e cached) int { return len(key) + len(e.v) + entryOverhead }

// get returns key's cached state.
func (c *readCache) get(key string) (cached, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	return e, ok
}

// put records key's state known at revision at, unless the cache knows a
// later one. add false: only update a key already cached (the watch). A
// key not cached is added only when at is not before the latest revision
// the watch applied (it may have passed over a later change of the key).
func (c *readCache) put(key string, e cached, add bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(key, e, add)
}

func (c *readCache) putLocked(key string, e cached, add bool) {
	old, ok := c.m[key]
	if ok && old.at > e.at || !ok && (!add || e.at < c.watched) {
		return
	}
	n := cost(key, e)
	if ok {
		c.bytes -= cost(key, old)
		delete(c.m, key)
	}
	if n > c.maxBytes {
		return // too large to cache; the older state is gone too
	}
	if len(c.m) >= maxCached || c.bytes+n > c.maxBytes {
		clear(c.m)
		c.bytes = 0
	}
	c.m[key] = e
	c.bytes += n
}

// applied records that the watch applied key's change e (at its mod
// revision): the key's entry, if cached, becomes e, and no earlier state
// of a key is added from now on (one step, so that no such entry slips in
// between).
func (c *readCache) applied(key string, e cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(key, e, false)
	c.watched = max(c.watched, e.at)
}

// drop forgets keys.
func (c *readCache) drop(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if e, ok := c.m[k]; ok {
			c.bytes -= cost(k, e)
			delete(c.m, k)
		}
	}
}

// reset empties the cache; watched is the revision the watch has reached
// (blind: the watch is down).
func (c *readCache) reset(watched int64) {
	c.mu.Lock()
	clear(c.m)
	c.bytes = 0
	c.watched = watched
	c.mu.Unlock()
}

func (c *readCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.bytes = 0
	c.mu.Unlock()
}

// watch applies every change under the prefix to the cached keys until
// ctx ends, from revision from on (the cache knows the prefix as of
// from-1). When the watch breaks (compaction, a member gone), the cache is
// emptied and adds nothing (changes may be missed) until the watch starts
// again, after a linearizable read of the fence fixes the revision it
// starts from.
func (s *Store) watch(ctx context.Context, from int64) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		for wr := range s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(from)) {
			if wr.Err() != nil || wr.Canceled {
				break
			}
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					s.cache.applied(k, cached{at: ev.Kv.ModRevision})
				} else {
					s.cache.applied(k, cached{v: bytes.Clone(ev.Kv.Value), mod: ev.Kv.ModRevision, at: ev.Kv.ModRevision})
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			s.cache.clear() // stopped (Close)
			return
		}
		s.cache.reset(blind)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			rctx, cancel := context.WithTimeout(ctx, s.txTimeout)
			resp, err := s.cli.Get(rctx, s.fence, clientv3.WithKeysOnly())
			cancel()
			if err == nil {
				s.cache.reset(resp.Header.Revision)
				from = resp.Header.Revision + 1
				break
			}
		}
	}
}
