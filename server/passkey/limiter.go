package passkey

import (
	"sync"
	"time"
)

// limiter counts failures per key with token buckets: a key may fail
// burst times, then once per interval. Only failures spend tokens, so a
// successful caller is never slowed by its own successes. Memory is
// bounded by max keys; full (idle) buckets are forgotten first.
type limiter struct {
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

// newLimiter returns nil (no limit) for a negative burst.
func newLimiter(burst int, interval time.Duration, max int) *limiter {
	if burst < 0 {
		return nil
	}
	return &limiter{burst: float64(burst), interval: interval, max: max, m: map[string]*bucket{}}
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens += float64(el) / float64(l.interval)
		if b.tokens > l.burst {
			b.tokens = l.burst
		}
		b.last = now
	}
}

// allow reports whether key may try again, and if not, after how long.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[key]
	if !ok {
		return l.burst >= 1, l.interval
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) * float64(l.interval))
	if wait < time.Second {
		wait = time.Second
	}
	return false, wait.Round(time.Second)
}

// fail spends one token of key.
func (l *limiter) fail(key string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[key]
	if !ok {
		if len(l.m) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[key] = b
	}
	l.refill(b, now)
	if b.tokens -= 1; b.tokens < 0 {
		b.tokens = 0
	}
}

// evict forgets every full bucket, or, when none is full, an arbitrary
// tenth of them (a flood of distinct keys must not grow memory).
func (l *limiter) evict(now time.Time) {
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
