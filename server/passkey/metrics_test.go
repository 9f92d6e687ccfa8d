package passkey

import (
	"testing"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// A native passkey release goes through the keys service, so it is in
// keywarden_release_duration_seconds like a Firebase release.
func TestNativePasskeyReleaseCounted(t *testing.T) {
	v := newEnv(t, nil)
	v.register(nil, "alice", testKey(3), softauthn.CreateOptions{})
	fin := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
	if fin.Status != 200 {
		t.Fatalf("release: %d %s", fin.Status, fin.Body)
	}
	mfs, err := v.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	for _, mf := range mfs {
		if mf.GetName() != "keywarden_release_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["method"] == "PASSKEY" && l["outcome"] == "released" {
				got = m.GetHistogram().GetSampleCount()
			}
		}
	}
	if got != 1 {
		t.Fatalf(`keywarden_release_duration_seconds_count{method="PASSKEY",outcome="released"} = %d, want 1`, got)
	}
}
