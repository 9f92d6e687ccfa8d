// Package ratelimit is a token-bucket rate limiter keyed by string (a
// user, a client address) with bounded memory.
//
// A key's bucket holds up to burst tokens and regains one per interval.
// Callers either check and spend in one step (Take), or check first and
// spend later only for the attempts that should count (Check, then Spend:
// "only failures spend", so a caller is never slowed by its successes).
//
// Time is passed in by the caller (now), so tests drive it with a fake
// clock. All methods are safe for concurrent use and on a nil *Limiter,
// which allows everything.
package ratelimit

import (
	"sync"
	"time"
)

// MinWait is the least wait Check and Take report when they refuse, so
// that a caller can always send a non-zero Retry-After.
const MinWait = time.Second

// Limiter is a set of token buckets, one per key. A key not seen yet (or
// forgotten) has a full bucket. Memory is bounded by max keys: when a new
// key would exceed it, buckets that have refilled to full (and so are
// indistinguishable from forgotten ones) are dropped first, then, if that
// freed too little, arbitrary ones until a tenth of the room is free
// (a flood of distinct keys cannot grow memory, and the scan this costs is
// paid once per max/10 new keys, not once per key).
//
// A nil *Limiter is "no limit": Check and Take allow every key and Spend
// does nothing.
type Limiter struct {
	mu       sync.Mutex
	burst    float64
	interval time.Duration
	max      int
	m        map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter that lets each key spend burst tokens at once and
// regains one token per interval (interval must be > 0), remembering at
// most max keys (max < 1 is treated as 1). A negative burst returns nil:
// no limit. A burst of 0 refuses every key.
func New(burst int, interval time.Duration, max int) *Limiter {
	if burst < 0 {
		return nil
	}
	if max < 1 {
		max = 1
	}
	return &Limiter{burst: float64(burst), interval: interval, max: max, m: map[string]*bucket{}}
}

// Check reports whether key has a token left, without spending it; when
// not, wait is how long until it has one (at least MinWait, not rounded).
func (l *Limiter) Check(key string, now time.Time) (ok bool, wait time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.m[key]
	if !found {
		if l.burst >= 1 {
			return true, 0
		}
		return false, l.waitFor(0)
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return true, 0
	}
	return false, l.waitFor(b.tokens)
}

// Spend spends one token of key, if it has one (a bucket never goes
// below empty).
func (l *Limiter) Spend(key string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.get(key, now)
	if b.tokens -= 1; b.tokens < 0 {
		b.tokens = 0
	}
}

// Take spends one token of key and reports true, or, when key has none,
// spends nothing and reports how long until it has one (at least MinWait,
// not rounded). Check and spend are one atomic step.
func (l *Limiter) Take(key string, now time.Time) (ok bool, wait time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.get(key, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, l.waitFor(b.tokens)
}

// TakeBytes is Take with the key as bytes: a key already tracked costs no
// allocation (the string is made only when a new bucket is stored).
func (l *Limiter) TakeBytes(key []byte, now time.Time) (ok bool, wait time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.m[string(key)]
	if !found {
		b = l.get(string(key), now)
	} else {
		l.refill(b, now)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, l.waitFor(b.tokens)
}

// get returns key's bucket refilled to now, creating a full one (and
// making room for it) when key is not tracked; l.mu is held.
func (l *Limiter) get(key string, now time.Time) *bucket {
	b, ok := l.m[key]
	if !ok {
		if len(l.m) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[key] = b
	}
	l.refill(b, now)
	return b
}

// refill credits b with the tokens regained since its last update; l.mu
// is held.
func (l *Limiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens += float64(el) / float64(l.interval)
		if b.tokens > l.burst {
			b.tokens = l.burst
		}
		b.last = now
	}
}

// waitFor is how long a bucket holding tokens (< 1) takes to hold one.
func (l *Limiter) waitFor(tokens float64) time.Duration {
	wait := time.Duration((1 - tokens) * float64(l.interval))
	if wait < MinWait {
		wait = MinWait
	}
	return wait
}

// evict makes room for a new key: it forgets every bucket refilled to
// full, then arbitrary ones until fewer than 9/10 of max remain; l.mu is
// held.
func (l *Limiter) evict(now time.Time) {
	for k, b := range l.m {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.m, k)
		}
	}
	for k := range l.m {
		if len(l.m) < l.max*9/10 {
			break
		}
		delete(l.m, k)
	}
}
