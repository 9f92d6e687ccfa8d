package firebase

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Limits on a certificate set.
const (
	maxCertsResponse = 1 << 20 // bytes; Google's is about 3 KiB
	maxCerts         = 64
	minRSABits       = 2048
	maxRSABits       = 8192

	// DefaultCertsMaxAge is used when the endpoint sends no Cache-Control
	// max-age; MaxCertsMaxAge caps what it may ask for, so that a key Google
	// withdraws is dropped within a day.
	DefaultCertsMaxAge = time.Hour
	MaxCertsMaxAge     = 24 * time.Hour

	// CertValidityGrace widens each certificate's validity window on both
	// sides. Google's certificates are wrappers around raw keys whose dates
	// matter little, and appliance clocks drift; the loose check still stops
	// a key Google let expire weeks ago (in a stale file or cache) from
	// verifying tokens.
	CertValidityGrace = 24 * time.Hour
)

// certKey is one usable public key.
type certKey struct {
	pub       *rsa.PublicKey
	notBefore time.Time
	notAfter  time.Time
}

// validAt reports whether the certificate's window, widened by
// CertValidityGrace, contains now.
func (k *certKey) validAt(now time.Time) bool {
	return !now.Before(k.notBefore.Add(-CertValidityGrace)) && !now.After(k.notAfter.Add(CertValidityGrace))
}

// keySet is an immutable set of keys from one successful fetch.
type keySet struct {
	keys      map[string]*certKey
	fetchedAt time.Time
	expiresAt time.Time // zero: never (file mode)
}

// stale reports whether the set is past its max-age.
func (s *keySet) stale(now time.Time) bool {
	return !s.expiresAt.IsZero() && now.After(s.expiresAt)
}

// usable reports whether the set may still be used: fresh, or stale by no
// more than maxStale.
func (s *keySet) usable(now time.Time, maxStale time.Duration) bool {
	return s.expiresAt.IsZero() || !now.After(s.expiresAt.Add(maxStale))
}

// parseCerts reads Google's format: a JSON object mapping each kid to a PEM
// X.509 certificate. Certificates that are not RSA keys of 2048–8192 bits
// are skipped; so are those outside their (widened) validity window at now.
// At least one usable key is required.
func parseCerts(data []byte, now time.Time) (map[string]*certKey, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if len(obj) > maxCerts {
		return nil, fmt.Errorf("certificates: %d entries, at most %d", len(obj), maxCerts)
	}
	keys := make(map[string]*certKey, len(obj))
	var skipped []string
	for kid := range obj {
		p, _, err := obj.str(kid)
		if err != nil {
			return nil, fmt.Errorf("certificates: kid %s: not a string", quote(kid))
		}
		k, err := parseCert(p)
		if err == nil && !k.validAt(now) {
			err = fmt.Errorf("outside its validity %s..%s", k.notBefore.Format(time.RFC3339), k.notAfter.Format(time.RFC3339))
		}
		if err != nil || kid == "" || len(kid) > maxKidLen {
			skipped = append(skipped, fmt.Sprintf("%s: %v", quote(kid), err))
			continue
		}
		keys[kid] = k
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("certificates: no usable certificate (%d entries; %s)", len(obj), strings.Join(skipped, "; "))
	}
	return keys, nil
}

func parseCert(p string) (*certKey, error) {
	blk, rest := pem.Decode([]byte(p))
	if blk == nil || blk.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("not one PEM certificate")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%T key, want RSA", c.PublicKey)
	}
	if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, fmt.Errorf("RSA key of %d bits", bits)
	}
	return &certKey{pub: pub, notBefore: c.NotBefore, notAfter: c.NotAfter}, nil
}

// loaded is what a source returned.
type loaded struct {
	data   []byte
	maxAge time.Duration // 0 when the set does not expire (a file)
	date   time.Time     // the server's Date header; zero for a file or none
}

// source loads the certificate JSON.
type source interface {
	load(ctx context.Context) (l loaded, err error)
	String() string
}

type urlSource struct {
	url    string
	client *http.Client
}

func (s urlSource) String() string { return s.url }

func (s urlSource) load(ctx context.Context) (loaded, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return loaded{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return loaded{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return loaded{}, fmt.Errorf("GET %s: %s", s.url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCertsResponse+1))
	if err != nil {
		return loaded{}, fmt.Errorf("GET %s: %w", s.url, err)
	}
	if len(data) > maxCertsResponse {
		return loaded{}, fmt.Errorf("GET %s: answer larger than %d bytes", s.url, maxCertsResponse)
	}
	date, _ := http.ParseTime(resp.Header.Get("Date"))
	return loaded{data: data, maxAge: cacheMaxAge(resp.Header), date: date}, nil
}

// cacheMaxAge reads Cache-Control's max-age less the Age header, clamped to
// 0..MaxCertsMaxAge. no-store and no-cache mean 0 (refetch as often as
// RefetchInterval allows); no max-age means DefaultCertsMaxAge.
func cacheMaxAge(h http.Header) time.Duration {
	maxAge, found := DefaultCertsMaxAge, false
	for _, line := range h.Values("Cache-Control") {
		for _, d := range strings.Split(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				if found {
					continue // the first one counts
				}
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
				if err != nil || n < 0 {
					return 0 // unparseable: treat as stale (RFC 9111 §4.2.1)
				}
				found = true
				if n > int64(MaxCertsMaxAge/time.Second) {
					n = int64(MaxCertsMaxAge / time.Second)
				}
				maxAge = time.Duration(n) * time.Second
			}
		}
	}
	if age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64); err == nil && age > 0 {
		maxAge -= time.Duration(min(age, int64(MaxCertsMaxAge/time.Second))) * time.Second
	}
	return max(maxAge, 0)
}

type fileSource struct{ path string }

func (s fileSource) String() string { return "file:" + s.path }

func (s fileSource) load(context.Context) (loaded, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return loaded{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCertsResponse+1))
	if err != nil {
		return loaded{}, fmt.Errorf("reading %s: %w", s.path, err)
	}
	if len(data) > maxCertsResponse {
		return loaded{}, fmt.Errorf("%s is larger than %d bytes", s.path, maxCertsResponse)
	}
	return loaded{data: data}, nil
}

// errRefetchTooSoon means the last fetch attempt was less than
// RefetchInterval ago, so none was made.
var errRefetchTooSoon = errors.New("firebase: certificates fetched too recently to fetch again")

var errClosed = errors.New("firebase: verifier closed")

// refresh fetches the certificates unless an attempt was made less than
// RefetchInterval ago (then errRefetchTooSoon). Concurrent callers share one
// fetch. The fetch runs under the verifier's own context (Close cancels it)
// so a caller that gives up does not abort it for the others; the caller
// stops waiting when ctx ends.
func (v *Verifier) refresh(ctx context.Context) error {
	if v.tooSoon(v.now()) { // the common case under a flood: not even a goroutine
		v.stats.suppressed.Add(1)
		return errRefetchTooSoon
	}
	v.closeMu.RLock()
	if v.closed {
		v.closeMu.RUnlock()
		return errClosed
	}
	v.wg.Add(1)
	v.closeMu.RUnlock()
	done := make(chan error, 1)
	go func() {
		defer v.wg.Done()
		_, err, _ := v.flight.Do("keys", func() (any, error) { return nil, v.fetchOnce() })
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshInBackground starts a refresh unless one is running or the last
// attempt was too recent, and does not wait for it.
func (v *Verifier) refreshInBackground() {
	if v.tooSoon(v.now()) || !v.bgRunning.CompareAndSwap(false, true) {
		return
	}
	v.closeMu.RLock()
	if v.closed {
		v.closeMu.RUnlock()
		v.bgRunning.Store(false)
		return
	}
	v.wg.Add(1)
	v.closeMu.RUnlock()
	go func() {
		defer v.wg.Done()
		defer v.bgRunning.Store(false)
		_, _, _ = v.flight.Do("keys", func() (any, error) { return nil, v.fetchOnce() })
	}()
}

func (v *Verifier) tooSoon(now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return !v.lastAttempt.IsZero() && now.Sub(v.lastAttempt) < v.opts.RefetchInterval
}

// fetchOnce makes one rate-limited fetch and installs the result. Only
// called inside v.flight.
func (v *Verifier) fetchOnce() error {
	now := v.now()
	v.mu.Lock()
	if !v.lastAttempt.IsZero() && now.Sub(v.lastAttempt) < v.opts.RefetchInterval {
		v.mu.Unlock()
		v.stats.suppressed.Add(1)
		return errRefetchTooSoon
	}
	v.lastAttempt = now
	v.mu.Unlock()

	ctx, cancel := context.WithTimeout(v.bgCtx, DefaultFetchTimeout)
	defer cancel()
	v.stats.fetches.Add(1)
	l, err := v.src.load(ctx)
	now = v.now()
	var keys map[string]*certKey
	if err == nil {
		keys, err = parseCerts(l.data, now)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		v.stats.failures.Add(1)
		v.lastErr = fmt.Errorf("loading certificates from %s: %w", v.src, err)
		return v.lastErr
	}
	s := &keySet{keys: keys, fetchedAt: now}
	if _, isURL := v.src.(urlSource); isURL {
		s.expiresAt = now.Add(l.maxAge)
	}
	if !l.date.IsZero() {
		// Date has whole seconds and was stamped before the answer
		// travelled: the difference is exact to about a second.
		v.skew.Store(&clockSkew{skew: now.Sub(l.date), at: now})
	}
	v.keys.Store(s)
	v.lastErr = nil
	return nil
}

// Stats are counters for metrics. They only grow.
type Stats struct {
	Fetches             uint64 // certificate fetches attempted
	FetchFailures       uint64 // of which failed
	UnknownKidRefetches uint64 // fetches asked for because of an unknown kid (made or suppressed)
	RefetchesSuppressed uint64 // fetches not made because one was made less than RefetchInterval ago
}

type stats struct {
	fetches, failures, unknownKid, suppressed atomic.Uint64
}

// Stats returns the verifier's counters.
func (v *Verifier) Stats() Stats {
	return Stats{
		Fetches:             v.stats.fetches.Load(),
		FetchFailures:       v.stats.failures.Load(),
		UnknownKidRefetches: v.stats.unknownKid.Load(),
		RefetchesSuppressed: v.stats.suppressed.Load(),
	}
}

// clockSkew is this host's clock minus Google's Date header, measured at
// a certificate fetch.
type clockSkew struct {
	skew time.Duration
	at   time.Time
}

// ClockSkew reports this host's clock minus the Date of Google's last
// certificate answer (positive: this clock is ahead), and whether one was
// measured. It is exact to about a second. A skew beyond the leeway makes
// valid tokens look expired or not yet valid.
func (v *Verifier) ClockSkew() (skew time.Duration, measuredAt time.Time, ok bool) {
	s := v.skew.Load()
	if s == nil {
		return 0, time.Time{}, false
	}
	return s.skew, s.at, true
}

// Leeway is the clock skew tolerated on the token's times.
func (v *Verifier) Leeway() time.Duration { return v.opts.Leeway }

// KeySetStatus describes the certificates in use, for /readyz.
type KeySetStatus struct {
	Source    string    `json:"source"`     // URL, or "file:<path>"
	Usable    bool      `json:"usable"`     // tokens can be verified now
	Degraded  bool      `json:"degraded"`   // not usable, or past max-age (in use under MaxStale)
	Stale     bool      `json:"stale"`      // past max-age
	Keys      int       `json:"keys"`       // certificates held
	FetchedAt time.Time `json:"fetched_at"` // of the set in use; zero if none
	// Age is the time since FetchedAt.
	Age time.Duration `json:"-"`
	// AgeSeconds is Age in whole seconds, for JSON.
	AgeSeconds int64 `json:"age_seconds"`
	// ExpiresAt is the end of its max-age; zero for a file, which does not
	// expire (its certificates' validity still applies).
	ExpiresAt time.Time `json:"expires_at"`
	// UsableUntil is when it stops being used if not refreshed (ExpiresAt +
	// MaxStale); zero for a file.
	UsableUntil time.Time `json:"usable_until"`
	LastAttempt time.Time `json:"last_attempt"`         // last fetch attempt
	LastError   string    `json:"last_error,omitempty"` // of the last attempt, if it failed
}

// KeySetStatus reports the state of the certificate cache.
func (v *Verifier) KeySetStatus() KeySetStatus {
	now := v.now()
	st := KeySetStatus{Source: v.src.String()}
	v.mu.Lock()
	st.LastAttempt = v.lastAttempt
	if v.lastErr != nil {
		st.LastError = v.lastErr.Error()
	}
	v.mu.Unlock()
	s := v.keys.Load()
	if s == nil {
		st.Degraded = true
		return st
	}
	st.Keys = len(s.keys)
	st.FetchedAt = s.fetchedAt
	st.Age = max(now.Sub(s.fetchedAt), 0)
	st.AgeSeconds = int64(st.Age / time.Second)
	st.ExpiresAt = s.expiresAt
	if !s.expiresAt.IsZero() {
		st.UsableUntil = s.expiresAt.Add(v.opts.MaxStale)
	}
	st.Stale = s.stale(now)
	st.Usable = s.usable(now, v.opts.MaxStale)
	st.Degraded = st.Stale || !st.Usable
	return st
}
