package portal

import (
	"net/http"
	"testing"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// metricValue is the value of a counter, or the sample count of a
// histogram, named name with exactly these labels (0 when absent).
func metricValue(t *testing.T, h *harness, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if hg := m.GetHistogram(); hg != nil {
				return float64(hg.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// Passkey releases and stores go through the keys service like every other
// path, so they are in the release and store metrics.
func TestPasskeyReleaseAndStoreCounted(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	h.register(credA, h.auth, keyHex1)
	opts, sid := h.beginLogin(credA)
	if got := readKey(t, h.loginRead(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}))); got != keyHex1 {
		t.Fatalf("read %q", got)
	}
	released := map[string]string{"method": "PASSKEY", "outcome": "released"}
	if n := metricValue(t, h, "keywarden_release_duration_seconds", released); n != 1 {
		t.Fatalf("keywarden_release_duration_seconds_count%v = %v, want 1", released, n)
	}
	opts, sid = h.beginLogin(credA)
	mustStatus(t, h.loginWrite(credA, sid, h.assert(h.auth, opts, softauthn.GetOptions{}), keyHex2), http.StatusOK, "")
	stored := map[string]string{"method": "PASSKEY", "outcome": "stored"}
	if n := metricValue(t, h, "keywarden_key_stores_total", stored); n < 1 {
		t.Fatalf("keywarden_key_stores_total%v = %v, want >= 1", stored, n)
	}
}
