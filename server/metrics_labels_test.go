package server

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/metrics"
)

// seriesCount is the number of series the registry exposes now: what a
// scrape of /metrics would carry and what the registry keeps in memory.
func seriesCount(t *testing.T, m *metrics.Metrics) int {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	return n
}

// TestMetricsSeriesBounded is the attack of the review: an unauthenticated
// client sends requests with made-up methods (some of them tens of KB
// long) to made-up paths. No request may add a series: the method label
// is one of a closed set and the route label is a route pattern.
func TestMetricsSeriesBounded(t *testing.T) {
	h := newHarness(t)
	h.Client.Handler = h.srv.Public // in process: 10,000 requests stay quick
	m := h.srv.opts.Metrics

	// Unknown paths under every prefix that has its own catch-all route
	// (echo adds one per group with middleware), so every route pattern
	// an unknown path can land on is in the warm-up.
	prefixes := []string{"/", "/v1/", "/v1/admin/", "/v1/firebase/", "/passkeys/", "/webhook/", "/v1/passkeys/"}
	fixed := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"}
	for _, p := range prefixes {
		for _, meth := range fixed {
			h.Do(meth, p+"zz-warm-up", nil)
			h.Do(meth, p+"zz-warm-up/deeper/still", nil)
		}
	}
	base := seriesCount(t, m)

	rng := rand.New(rand.NewPCG(12, 34))
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	word := func(n int) string {
		var sb strings.Builder
		for range n {
			sb.WriteByte(letters[rng.IntN(len(letters))])
		}
		return sb.String()
	}
	for i := range 10000 {
		var meth string
		switch {
		case i%500 == 0:
			meth = word(30 << 10) // the review's 30 KB methods
		case i%8 == 0:
			meth = fixed[rng.IntN(len(fixed))]
		default:
			meth = word(1 + rng.IntN(64))
		}
		path := prefixes[rng.IntN(len(prefixes))] + "zz-" + word(1+rng.IntN(40))
		for range rng.IntN(3) {
			path += "/" + word(1+rng.IntN(20))
		}
		h.Do(meth, path, nil)
	}
	if got := seriesCount(t, m); got != base {
		t.Fatalf("series grew from %d to %d after 10,000 requests with random methods and paths", base, got)
	}

	// The closed set is visible as such, and no raw path became a label.
	mfs, _ := m.Registry.Gather()
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if strings.Contains(l.GetValue(), "zz-") {
					t.Fatalf("%s carries a raw path: %s=%q", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func TestMethodLabel(t *testing.T) {
	for in, want := range map[string]string{
		"GET": "GET", "HEAD": "HEAD", "POST": "POST", "PUT": "PUT", "DELETE": "DELETE",
		"OPTIONS": "OPTIONS", "PATCH": "PATCH", "get": "other", "CONNECT": "other", "TRACE": "other",
		"": "other", strings.Repeat("X", 30<<10): "other",
	} {
		if got := metrics.MethodLabel(in); got != want {
			t.Errorf("MethodLabel(%.20q) = %q, want %q", in, got, want)
		}
	}
}
