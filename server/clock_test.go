package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/sysclock"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/server/firebase"
)

// TestClockInReadiness: a clock that disagrees with the Date of Google's
// certificate answer (a local endpoint in Google's format, whose Date is
// the real time) by more than the leeway, or that the kernel reports
// unsynchronized, shows as "clock": "degraded" in /readyz, with 200.
func TestClockInReadiness(t *testing.T) {
	synced := func() sysclock.State { return sysclock.State{Known: true, Synchronized: true} }
	unsynced := func() sysclock.State { return sysclock.State{Known: true} }
	for _, tc := range []struct {
		name   string
		read   func() sysclock.State
		offset time.Duration // of this appliance's clock from the real time
		want   string
	}{
		{"in step", synced, 0, "ok"},
		{"ahead beyond leeway", synced, 10 * time.Minute, "degraded"},
		{"behind beyond leeway", synced, -10 * time.Minute, "degraded"},
		{"within leeway", synced, 30 * time.Second, "ok"},
		{"unsynchronized", unsynced, 0, "degraded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := firebasetest.NewClock(time.Now().Add(tc.offset))
			iss := firebasetest.NewIssuer(t, "proj-a", firebasetest.WithClock(clock))
			v, err := firebase.New(context.Background(), firebase.Options{ProjectIDs: []string{"proj-a"}, CertsURL: iss.URL(), Clock: clock.Now, Leeway: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(v.Close)
			if _, err := v.Verify(context.Background(), iss.Mint(nil)); err != nil {
				t.Fatal(err) // fetches Google's certificates, and their Date
			}
			h := newHarness(t)
			h.srv.opts.Degraded = append(h.srv.opts.Degraded, ClockCheck(tc.read, v.ClockSkew, v.Leeway()))
			r := h.srv.Readiness(context.Background())
			if r.Status != "ready" || r.Checks["clock"].Status != tc.want {
				t.Fatalf("readiness %+v, want ready with clock %s", r, tc.want)
			}
			if tc.want == "degraded" && !strings.Contains(r.Checks["clock"].Detail, "clock") {
				t.Fatalf("clock detail %q", r.Checks["clock"].Detail)
			}
		})
	}
}
