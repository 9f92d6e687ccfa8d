package audit

import (
	"maps"
	"sync"
	"time"
)

const (
	// maxReasons bounds the reasons counted separately (otherReason included), so that a caller
	// passing request-controlled text as a reason cannot grow memory or
	// metric labels without bound; the rest count as otherReason.
	maxReasons     = 64
	maxReasonBytes = 64
	otherReason    = "other"
	noReason       = "unspecified"
)

// sampler counts refusals per reason and decides which become a line: a
// token bucket of rate lines per second with a burst of rate.
type sampler struct {
	mu       sync.Mutex
	rate     float64
	tokens   float64
	last     time.Time
	byReason map[string]uint64 // all refusals
	skipped  map[string]uint64 // not written since the last line that carried them
	total    uint64
	sampled  uint64
	dropped  uint64
}

func (s *sampler) init(rate int) {
	s.rate = float64(rate)
	s.tokens = s.rate
	s.byReason = make(map[string]uint64)
	s.skipped = make(map[string]uint64)
}

// reasonKey maps a reason to its counting key. Callers hold s.mu.
func (s *sampler) reasonKey(reason string) string {
	if reason == "" {
		return noReason
	}
	if len(reason) > maxReasonBytes {
		reason = reason[:maxReasonBytes]
	}
	if _, ok := s.byReason[reason]; !ok && len(s.byReason) >= maxReasons-1 {
		return otherReason
	}
	return reason
}

// admit counts one refusal and reports whether it may become a line; when
// it may not, it is counted as skipped (one lock either way).
func (s *sampler) admit(reason string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.reasonKey(reason)
	s.total++
	s.byReason[key]++
	if !s.last.IsZero() {
		if d := now.Sub(s.last); d > 0 {
			s.tokens = min(s.rate, s.tokens+d.Seconds()*s.rate)
		}
	}
	s.last = now
	if s.tokens < 1 {
		s.dropped++
		s.skipped[key]++
		return false
	}
	s.tokens--
	return true
}

// skip records a refusal that will not be written as a line.
func (s *sampler) skip(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped++
	s.skipped[s.reasonKey(reason)]++
}

// wrote records n refusal lines written.
func (s *sampler) wrote(n int) {
	s.mu.Lock()
	s.sampled += uint64(n)
	s.mu.Unlock()
}

// takeSkipped returns the skipped counts not yet carried by a line and
// resets them; nil when there are none.
func (s *sampler) takeSkipped() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.skipped) == 0 {
		return nil
	}
	m := s.skipped
	s.skipped = make(map[string]uint64)
	return m
}

// pendingSkipped reports whether skipped counts wait for a line.
func (s *sampler) pendingSkipped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.skipped) > 0
}

// unwritten puts back counts whose line was not written, and counts the
// refusal lines that failed with them.
func (s *sampler) unwritten(m map[string]uint64, failed []Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range m {
		s.skipped[k] += v
	}
	for _, ev := range failed {
		s.dropped++
		s.skipped[s.reasonKey(ev.Reason)]++
	}
}

func (s *sampler) stats() (total, sampled, dropped uint64, byReason map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, s.sampled, s.dropped, maps.Clone(s.byReason)
}
