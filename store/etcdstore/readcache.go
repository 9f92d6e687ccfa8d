package etcdstore

import (
	"bytes"
	"context"
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
// The cache holds what the store holds (values sealed by the root key),
// bounded by maxCached entries (emptied when full).

// maxCached bounds the read cache's entries.
const maxCached = 1 << 16

// cached is one key's state: its value (nil: absent) and mod revision
// (0: absent), known current at revision at.
type cached struct {
	v   []byte
	mod int64
	at  int64
}

type readCache struct {
	mu sync.Mutex
	m  map[string]cached
}

func newReadCache() *readCache { return &readCache{m: map[string]cached{}} }

// get returns key's cached state.
func (c *readCache) get(key string) (cached, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	return e, ok
}

// put records key's state known at revision at, unless the cache knows a
// later one. add false: only update a key already cached (the watch).
func (c *readCache) put(key string, e cached, add bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.m[key]
	if ok && old.at > e.at || !ok && !add {
		return
	}
	if !ok && len(c.m) >= maxCached {
		clear(c.m)
	}
	c.m[key] = e
}

func (c *readCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// watch applies every change under the prefix to the cached keys until
// ctx ends, from revision from on. When the watch breaks (compaction, a
// member gone), the cache is emptied (changes may have been missed) and
// the watch starts again from the current revision.
func (s *Store) watch(ctx context.Context, from int64) {
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if from > 0 {
			opts = append(opts, clientv3.WithRev(from))
		}
		wctx, cancel := context.WithCancel(ctx)
		for wr := range s.cli.Watch(wctx, s.prefix, opts...) {
			if wr.Err() != nil || wr.Canceled {
				break
			}
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					s.cache.put(k, cached{at: ev.Kv.ModRevision}, false)
				} else {
					s.cache.put(k, cached{v: bytes.Clone(ev.Kv.Value), mod: ev.Kv.ModRevision, at: ev.Kv.ModRevision}, false)
				}
			}
		}
		cancel()
		s.cache.clear()
		from = 0
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
