// Package sysclock reports whether the kernel considers the system clock
// synchronized (by NTP, chrony or systemd-timesyncd).
//
// Token checks (exp, iat, auth_time) and audit times depend on the clock:
// an unsynchronized clock is the first suspect when valid tokens are
// refused, so readiness reports it (as "degraded", never failing).
package sysclock

// State is what the kernel says of the clock.
type State struct {
	// Known is false where the platform cannot tell.
	Known bool
	// Synchronized: a time daemon disciplines the clock.
	Synchronized bool
	// MaxError is the kernel's bound on the clock's error (zero when not
	// Known).
	MaxErrorMicros int64
}

// Read asks the kernel. It sends no network request.
func Read() State { return read() }
