package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/sysclock"
)

// ClockCheck is the readiness check of the clock, reported as "degraded"
// (never failing the node): token times (exp, iat, auth_time) are judged
// by this clock, so an unsynchronized clock, or one that disagrees with
// Google's by more than the tolerated leeway, makes valid tokens look
// expired or not yet valid.
//
// read asks the kernel whether a time daemon disciplines the clock (nil:
// not checked). skew, when not nil, is the Firebase verifier's last
// measurement of this clock against the Date of Google's certificate
// answer (it has whole seconds, so a skew up to one second over leeway is
// tolerated).
func ClockCheck(read func() sysclock.State, skew func() (time.Duration, time.Time, bool), leeway time.Duration) Check {
	return Check{Name: "clock", Run: func(context.Context) error {
		if read != nil {
			if st := read(); st.Known && !st.Synchronized {
				return errors.New("the system clock is not synchronized (no NTP/chrony/timesyncd discipline)")
			}
		}
		if skew != nil {
			if d, _, ok := skew(); ok && d.Abs() > leeway+time.Second {
				dir := "ahead of"
				if d < 0 {
					dir = "behind"
				}
				return fmt.Errorf("the system clock is %s %s Google's (more than the %s leeway): valid tokens may be refused", d.Abs().Round(time.Second), dir, leeway)
			}
		}
		return nil
	}}
}
