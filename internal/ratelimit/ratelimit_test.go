package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

// op is one step of a scenario: at t0+at, call method on key and, for
// Check and Take, expect ok and wait.
type op struct {
	at     time.Duration
	method string // "check", "spend", "take"
	key    string
	ok     bool
	wait   time.Duration
}

func TestLimiter(t *testing.T) {
	tests := []struct {
		name     string
		burst    int
		interval time.Duration
		ops      []op
	}{
		{"burst then refused", 2, 10 * time.Second, []op{
			{0, "take", "a", true, 0},
			{0, "take", "a", true, 0},
			{0, "take", "a", false, 10 * time.Second},
			{0, "check", "a", false, 10 * time.Second},
		}},
		{"refill over time", 2, 10 * time.Second, []op{
			{0, "take", "a", true, 0},
			{0, "take", "a", true, 0},
			{4 * time.Second, "take", "a", false, 6 * time.Second},
			{10 * time.Second, "take", "a", true, 0},
			{10 * time.Second, "take", "a", false, 10 * time.Second},
			{time.Hour, "take", "a", true, 0}, // refills to burst, no more
			{time.Hour, "take", "a", true, 0},
			{time.Hour, "take", "a", false, 10 * time.Second},
		}},
		{"check does not spend", 1, 10 * time.Second, []op{
			{0, "check", "a", true, 0},
			{0, "check", "a", true, 0},
			{0, "check", "a", true, 0},
			{0, "take", "a", true, 0},
			{0, "check", "a", false, 10 * time.Second},
		}},
		{"only spends count", 2, 10 * time.Second, []op{
			{0, "check", "a", true, 0},
			{0, "spend", "a", false, 0},
			{0, "check", "a", true, 0},
			{0, "spend", "a", false, 0},
			{0, "check", "a", false, 10 * time.Second},
			{0, "spend", "a", false, 0}, // never below empty
			{10 * time.Second, "check", "a", true, 0},
		}},
		{"refused take spends nothing", 1, 10 * time.Second, []op{
			{0, "take", "a", true, 0},
			{5 * time.Second, "take", "a", false, 5 * time.Second},
			{5 * time.Second, "take", "a", false, 5 * time.Second},
			{10 * time.Second, "take", "a", true, 0},
		}},
		{"keys are independent", 1, 10 * time.Second, []op{
			{0, "take", "a", true, 0},
			{0, "take", "a", false, 10 * time.Second},
			{0, "check", "b", true, 0},
			{0, "take", "b", true, 0},
		}},
		{"wait is at least MinWait, not rounded", 1, 10 * time.Second, []op{
			{0, "take", "a", true, 0},
			{9500 * time.Millisecond, "check", "a", false, MinWait},
			{8700 * time.Millisecond, "check", "a", false, MinWait}, // time going back refills nothing
			{0, "take", "b", true, 0},
			{6300 * time.Millisecond, "take", "b", false, 3700 * time.Millisecond},
		}},
		{"zero burst refuses all", 0, 10 * time.Second, []op{
			{0, "check", "a", false, 10 * time.Second},
			{0, "take", "a", false, 10 * time.Second},
			{time.Hour, "take", "a", false, 10 * time.Second},
		}},
		{"short interval", 1, 100 * time.Millisecond, []op{
			{0, "take", "a", true, 0},
			{0, "take", "a", false, MinWait},
			{100 * time.Millisecond, "take", "a", true, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.burst, tt.interval, 100)
			for i, o := range tt.ops {
				now := t0.Add(o.at)
				var ok bool
				var wait time.Duration
				switch o.method {
				case "check":
					ok, wait = l.Check(o.key, now)
				case "take":
					ok, wait = l.Take(o.key, now)
				case "spend":
					l.Spend(o.key, now)
					continue
				default:
					t.Fatalf("op %d: method %q", i, o.method)
				}
				if ok != o.ok || wait != o.wait {
					t.Fatalf("op %d (%s %s at +%s): %v %s, want %v %s", i, o.method, o.key, o.at, ok, wait, o.ok, o.wait)
				}
			}
		})
	}
}

func TestLimiterNil(t *testing.T) {
	if New(-1, time.Second, 10) != nil {
		t.Fatal("a negative burst should mean no limit (nil)")
	}
	for _, l := range []*Limiter{nil, New(-5, time.Second, 1)} {
		for i := range 100 {
			l.Spend("x", t0)
			if ok, wait := l.Check("x", t0); !ok || wait != 0 {
				t.Fatalf("check %d refused: %s", i, wait)
			}
			if ok, wait := l.Take("x", t0); !ok || wait != 0 {
				t.Fatalf("take %d refused: %s", i, wait)
			}
		}
	}
}

func TestLimiterBoundedMemory(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		keys   int
		method string
	}{
		{"spend", 3, 5, "spend"},
		{"take", 3, 5, "take"},
		{"spend many", 100, 10_000, "spend"},
		{"take many", 100, 10_000, "take"},
		{"max below 1", 0, 10, "take"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(2, 10*time.Second, tt.max)
			limit := max(tt.max, 1)
			for i := range tt.keys {
				k := fmt.Sprint("k", i)
				if tt.method == "spend" {
					l.Spend(k, t0)
				} else {
					l.Take(k, t0)
				}
				if len(l.m) > limit {
					t.Fatalf("after %d keys the limiter holds %d, cap %d", i+1, len(l.m), limit)
				}
			}
			if len(l.m) == 0 {
				t.Fatal("nothing tracked")
			}
		})
	}
}

// A check never stores a key: memory is spent only by spending.
func TestLimiterCheckStoresNothing(t *testing.T) {
	l := New(2, 10*time.Second, 3)
	for i := range 10 {
		l.Check(fmt.Sprint("k", i), t0)
	}
	if len(l.m) != 0 {
		t.Fatalf("checks stored %d keys", len(l.m))
	}
}

// When full, refilled buckets go first: a limited key survives while
// there are idle ones to drop.
func TestLimiterEvictsRefilledFirst(t *testing.T) {
	l := New(1, 10*time.Second, 10)
	for i := range 9 {
		l.Take(fmt.Sprint("idle", i), t0)
	}
	l.Take("hot", t0.Add(10*time.Second))
	// At +15 s the nine idle buckets have refilled; "hot" has not.
	now := t0.Add(15 * time.Second)
	if ok, _ := l.Check("hot", now); ok {
		t.Fatal("hot allowed before the evictions")
	}
	l.Take("new", now) // the limiter is full: evicts
	if len(l.m) != 2 {
		t.Fatalf("after eviction %d keys, want hot and new", len(l.m))
	}
	if ok, wait := l.Check("hot", now); ok || wait != 5*time.Second {
		t.Fatalf("hot forgotten or refilled: %v %s", ok, wait)
	}
}

// TakeBytes is Take: the same buckets, the same refusals and waits; a key
// already tracked costs nothing to look up, so the per-request limiter
// does not allocate for a returning client.
func TestTakeBytes(t *testing.T) {
	l := New(2, time.Second, 100)
	key := AppendAddrKey(nil, "192.0.2.7:4711")
	for i := range 2 {
		if ok, _ := l.TakeBytes(key, t0); !ok {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	ok, wait := l.TakeBytes(key, t0)
	if ok || wait != time.Second {
		t.Fatalf("past the burst: ok %v wait %v", ok, wait)
	}
	// The same bucket as the string form.
	if ok, _ := l.Take("192.0.2.7", t0); ok {
		t.Fatal("Take and TakeBytes keep different buckets")
	}
	if ok, _ := l.TakeBytes(key, t0.Add(time.Second)); !ok {
		t.Fatal("no token regained after an interval")
	}
	var nilL *Limiter
	if ok, _ := nilL.TakeBytes(key, t0); !ok {
		t.Fatal("nil limiter refused")
	}
	big := New(1<<20, time.Nanosecond, 100)
	var buf [64]byte
	allocs := testing.AllocsPerRun(100, func() {
		big.TakeBytes(AppendAddrKey(buf[:0], "192.0.2.9:1"), t0)
	})
	if allocs != 0 {
		t.Errorf("a tracked address costs %.0f allocations, want 0", allocs)
	}
}
