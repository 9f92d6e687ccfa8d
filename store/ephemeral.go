package store

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrExpired is returned by [Ephemeral.Take] for a value that is still
// held but whose lifetime has passed (it is taken all the same: a second
// Take answers ErrNotFound).
var ErrExpired = errors.New("store: expired")

// Ephemeral is short-lived state that refuses or permits something and
// must be seen the same way by every node that serves requests: open
// passkey ceremonies, step-up proofs (single use), per-user failure
// budgets. It is not part of the records (no schema, no backup, no change
// ledger, no rollback digest): it lives at most its TTL.
//
// Every operation is linearizable: once it returned, every later
// operation on any node sees it. In particular a value taken once is
// never taken again anywhere, and a counter spent on one node counts on
// every other. The caller passes the time (now) so that expiry follows
// one clock; a cluster's nodes keep theirs close (NTP), as they must for
// token expiry anyway. Values are opaque: callers seal what carries
// anything user-identifying before it gets here.
//
// Keys are non-empty strings the caller builds from identifiers (never
// from raw client input: hash it).
type Ephemeral interface {
	// PutIfAbsent stores value under key until now+ttl unless a value that
	// has not expired is held there; it reports whether it stored.
	PutIfAbsent(ctx context.Context, key string, value []byte, now time.Time, ttl time.Duration) (bool, error)
	// Take removes the value at key and returns it, atomically: of two
	// Takes of one value anywhere, exactly one gets it. An absent key is
	// ErrNotFound; a value past its lifetime is removed and ErrExpired.
	Take(ctx context.Context, key string, now time.Time) ([]byte, error)
	// Incr adds one to the leaky counter at key, which drains by one per
	// period, and returns the time at which it will be empty again
	// (its level at t is ceil((until−t)/period)). It is a token bucket's
	// debt: a bucket of burst tokens regaining one per period has a token
	// left at now while until−now ≤ (burst−1)·period. The key expires when
	// the counter is empty.
	Incr(ctx context.Context, key string, now time.Time, period time.Duration) (until time.Time, err error)
	// Until returns the time at which the counter at key is empty (now or
	// earlier for an empty or absent counter).
	Until(ctx context.Context, key string, now time.Time) (time.Time, error)
	// Reset empties the counter (or drops the value) at key.
	Reset(ctx context.Context, key string) error
}

// EphemeralWatcher is implemented by a shared Ephemeral that can tell a
// node what other nodes removed: WatchRemoved calls fn with each key under
// prefix whose value is removed (taken, reset or expired) anywhere, from
// now until ctx ends or the store closes, in commit order. Nothing
// security-relevant may depend on it (it is late by a network delay);
// it lets a node release what it holds for a value that is gone, such as
// a per-node cap on open ceremonies.
type EphemeralWatcher interface {
	WatchRemoved(ctx context.Context, prefix string, fn func(key string))
}

// EphemeralBackend is implemented by a backend that several nodes share
// (etcd): its ephemeral state is shared with them, linearizably. A backend
// without it (bbolt) serves one node, whose ephemeral state stays in its
// memory ([MemoryEphemeral]).
type EphemeralBackend interface {
	Ephemeral() Ephemeral
}

// SharedEphemeral returns the ephemeral state the backend shares between
// nodes, or false when the store serves one node only (then each service
// keeps its own bounded [MemoryEphemeral], at memory speed).
func (db *DB) SharedEphemeral() (Ephemeral, bool) {
	if e, ok := db.b.(EphemeralBackend); ok {
		return e.Ephemeral(), true
	}
	return nil, false
}

// Shared reports whether other nodes write this store too (the backend is
// a cluster's): state cached in memory may then be stale and security
// state must be read from the store each time.
func (db *DB) Shared() bool {
	_, ok := db.b.(EphemeralBackend)
	return ok
}

// MemoryEphemeral is an [Ephemeral] in this process's memory, for a
// single node: bounded to max entries, the oldest dropped first when full
// (a dropped ceremony or proof is refused as unknown; a dropped counter
// starts again empty, as a rate limiter that forgets does). Expired
// entries are dropped as they reach the front of the queue.
type MemoryEphemeral struct {
	mu    sync.Mutex
	max   int
	m     map[string]*memEntry
	queue []*memEntry
}

type memEntry struct {
	key     string
	value   []byte
	obj     any       // PutObject's value (never copied, never encoded)
	expires time.Time // value: its end; counter: when it is empty
	counter bool
	removed bool
}

// NewMemoryEphemeral returns an empty in-memory Ephemeral holding at most
// capacity entries (less than 1 is 1).
func NewMemoryEphemeral(capacity int) *MemoryEphemeral {
	return &MemoryEphemeral{max: max(1, capacity), m: map[string]*memEntry{}}
}

var _ Ephemeral = (*MemoryEphemeral)(nil)

// Len is the number of entries held (expired ones included until swept).
func (e *MemoryEphemeral) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.m)
}

// sweep drops entries from the front of the queue that are removed or
// expired; e.mu is held. Counters are not swept by expiry order (an Incr
// pushes their end later): they leave when full eviction reaches them.
func (e *MemoryEphemeral) sweep(now time.Time) {
	i := 0
	for ; i < len(e.queue); i++ {
		x := e.queue[i]
		if !x.removed && (x.counter || now.Before(x.expires)) {
			break
		}
		if !x.removed {
			e.drop(x)
		}
		e.queue[i] = nil
	}
	e.queue = e.queue[i:]
	if len(e.queue) > 2*len(e.m)+64 {
		live := make([]*memEntry, 0, len(e.m))
		for _, x := range e.queue {
			if !x.removed {
				live = append(live, x)
			}
		}
		e.queue = live
	}
}

func (e *MemoryEphemeral) drop(x *memEntry) {
	x.removed = true
	delete(e.m, x.key)
}

// insert adds x, dropping the oldest entries while full; e.mu is held.
func (e *MemoryEphemeral) insert(now time.Time, x *memEntry) {
	e.sweep(now)
	for len(e.m) >= e.max && len(e.queue) > 0 {
		if old := e.queue[0]; !old.removed {
			e.drop(old)
		}
		e.queue[0] = nil
		e.queue = e.queue[1:]
	}
	e.m[x.key] = x
	e.queue = append(e.queue, x)
}

// PutIfAbsent implements [Ephemeral].
func (e *MemoryEphemeral) PutIfAbsent(ctx context.Context, key string, value []byte, now time.Time, ttl time.Duration) (bool, error) {
	if err := checkEphemeralKey(key); err != nil {
		return false, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		if now.Before(x.expires) {
			return false, nil
		}
		e.drop(x)
	}
	e.insert(now, &memEntry{key: key, value: append([]byte(nil), value...), expires: now.Add(ttl)})
	return true, nil
}

// PutObject is PutIfAbsent for a Go value kept as it is, by reference: a
// single node's callers skip encoding what never leaves the process. The
// caller must not change obj after handing it over. TakeObject takes it.
func (e *MemoryEphemeral) PutObject(key string, obj any, now time.Time, ttl time.Duration) (bool, error) {
	if err := checkEphemeralKey(key); err != nil {
		return false, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		if now.Before(x.expires) {
			return false, nil
		}
		e.drop(x)
	}
	e.insert(now, &memEntry{key: key, obj: obj, expires: now.Add(ttl)})
	return true, nil
}

// TakeObject is Take for a value PutObject stored.
func (e *MemoryEphemeral) TakeObject(key string, now time.Time) (any, error) {
	if err := checkEphemeralKey(key); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if !ok || x.counter || x.obj == nil {
		return nil, ErrNotFound
	}
	e.drop(x)
	if !now.Before(x.expires) {
		return nil, ErrExpired
	}
	return x.obj, nil
}

// Take implements [Ephemeral].
func (e *MemoryEphemeral) Take(ctx context.Context, key string, now time.Time) ([]byte, error) {
	if err := checkEphemeralKey(key); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if !ok || x.counter || x.obj != nil {
		return nil, ErrNotFound
	}
	e.drop(x)
	if !now.Before(x.expires) {
		return nil, ErrExpired
	}
	return x.value, nil
}

// Incr implements [Ephemeral].
func (e *MemoryEphemeral) Incr(ctx context.Context, key string, now time.Time, period time.Duration) (time.Time, error) {
	if err := checkEphemeralKey(key); err != nil {
		return time.Time{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if ok && !x.counter {
		e.drop(x)
		ok = false
	}
	if !ok {
		x = &memEntry{key: key, counter: true, expires: now}
		e.insert(now, x)
	}
	x.expires = LeakyIncr(x.expires, now, period)
	return x.expires, nil
}

// Until implements [Ephemeral].
func (e *MemoryEphemeral) Until(ctx context.Context, key string, now time.Time) (time.Time, error) {
	if err := checkEphemeralKey(key); err != nil {
		return time.Time{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if !ok || !x.counter {
		return time.Time{}, nil
	}
	return x.expires, nil
}

// Reset implements [Ephemeral].
func (e *MemoryEphemeral) Reset(ctx context.Context, key string) error {
	if err := checkEphemeralKey(key); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		e.drop(x)
	}
	return nil
}

// LeakyIncr is the one rule of a leaky counter's increment: from the time
// until it is empty (in the past when it is), one period more.
func LeakyIncr(until, now time.Time, period time.Duration) time.Time {
	if until.Before(now) {
		until = now
	}
	return until.Add(period)
}

func checkEphemeralKey(key string) error {
	if key == "" {
		return errors.New("store: empty ephemeral key")
	}
	return nil
}
