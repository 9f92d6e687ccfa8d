package portal

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/ratelimit"
)

// ClientsMePath is the Portal API route that describes the caller's client.
const ClientsMePath = "/api/v3/clients/me"

// maxAnswerBytes bounds Portal's answer (a client with its wallets).
const maxAnswerBytes = 1 << 20

// Client is a resolved Portal client.
type Client struct {
	// ID is the Portal client id.
	ID string
	// CustodianID is the client's custodian (always the configured one
	// for a client Resolve returns).
	CustodianID string
}

// ResolverStats are counters for metrics.
type ResolverStats struct {
	Hits      uint64 // answered from the cache (successes and cached refusals)
	Stale     uint64 // answered from an expired entry while Portal failed
	Lookups   uint64 // calls made to Portal's API
	Failures  uint64 // calls that ended without a usable answer (down, 5xx, 429, timeout, malformed)
	Limited   uint64 // misses refused by the per-address limit
	Busy      uint64 // look-ups refused because MaxConcurrentLookups were in flight
	Entries   int    // entries in the cache now
	InFlight  int64  // calls to Portal in flight now
	LastError string // the last failure's class, "" after a success
}

// Resolver turns a Portal client credential into a client id by asking
// Portal's API (GET <APIURL>/api/v3/clients/me with the same bearer), and
// caches the answer under SHA-256 of the credential (the credential itself
// is never kept). It is safe for concurrent use.
//
// # Abuse resistance (decisions/22)
//
//   - Callers check the credential's shape ([CheckCredential]) and, on the
//     TBS routes, the Firebase token before Resolve: garbage never costs a
//     network call.
//   - Concurrent look-ups of one credential share one call (singleflight).
//   - At most MaxConcurrentLookups calls are in flight in all; a look-up
//     that cannot start within half of LookupTimeout is a 503.
//   - Misses (credentials not in the cache, and no look-up of them in
//     flight) are limited per client address (429 beyond), IPv6 grouped by
//     /64 (ratelimit.AddrKey).
//   - Only Portal's 401/403/404 and "another custodian" are cached as
//     refusals (for FailureTTL); a Portal 5xx, 429, timeout or outage is
//     never cached: it is a 503 with Retry-After for credentials not in the
//     cache, while cached ones keep working (within IdentityTTL, then
//     StaleIfError).
type Resolver struct {
	opts   Options
	url    string
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]*list.Element
	lru     *list.List       // front = most recently used
	waiting map[[32]byte]int // callers waiting for a look-up, per credential

	flight singleflight.Group
	sem    chan struct{}
	misses *ratelimit.Limiter // per client address; Take: every miss spends

	hits, stale, lookups, failures, limited, busy atomic.Uint64
	lastErr                                       atomic.Value // string
}

// entry is one cached answer; immutable once stored.
type entry struct {
	key     [32]byte
	client  Client
	err     *apierr.Error // a cached refusal, or nil
	fetched time.Time
	expires time.Time
}

// NewResolver validates opts and returns a resolver.
func NewResolver(opts Options, logger *slog.Logger, clock func() time.Time) (*Resolver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if logger == nil {
		logger = slog.Default()
	}
	if clock == nil {
		clock = time.Now
	}
	hc := &http.Client{Timeout: o.LookupTimeout}
	if o.HTTPClient != nil {
		c := *o.HTTPClient
		hc = &c
	}
	// The credential must never follow a redirect to another host.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r := &Resolver{
		opts: o, url: o.APIURL + ClientsMePath, client: hc, log: logger, now: clock,
		entries: map[[32]byte]*list.Element{}, lru: list.New(), waiting: map[[32]byte]int{},
		sem:    make(chan struct{}, o.MaxConcurrentLookups),
		misses: ratelimit.New(o.MissBurst, o.MissInterval, o.MaxTrackedAddresses),
	}
	r.lastErr.Store("")
	return r, nil
}

// CheckCredential checks a credential's shape: 1 to MaxCredentialBytes
// visible ASCII characters (what an API key or a token is). It is the
// check made before any look-up.
func CheckCredential(cred string) error {
	if cred == "" {
		return ErrCredentialMissing
	}
	if len(cred) > MaxCredentialBytes {
		return ErrCredentialInvalid
	}
	for i := 0; i < len(cred); i++ {
		if cred[i] < 0x21 || cred[i] > 0x7e {
			return ErrCredentialInvalid
		}
	}
	return nil
}

// Resolve returns the client the credential belongs to. clientAddr is the
// caller's address (misses are limited per address); traceID, when not
// empty, is forwarded to Portal as X-Portal-Trace-Id.
func (r *Resolver) Resolve(ctx context.Context, cred, clientAddr, traceID string) (Client, error) {
	if err := CheckCredential(cred); err != nil {
		return Client{}, err
	}
	key := sha256.Sum256([]byte(cred))
	now := r.now()
	cached := r.get(key)
	if cached != nil && now.Before(cached.expires) {
		r.hits.Add(1)
		return cached.result()
	}
	// A caller that joins a look-up already in flight costs Portal
	// nothing and is not counted as a miss.
	if !r.join(key) {
		if ok, wait := r.misses.Take(ratelimit.AddrKey(clientAddr), now); !ok {
			r.leave(key)
			if c, ok := r.staleOK(cached, now); ok {
				return c, nil
			}
			r.limited.Add(1)
			return Client{}, ErrLookupLimited.WithRetry(wait)
		}
	}
	defer r.leave(key)
	ch := r.flight.DoChan(hex.EncodeToString(key[:]), func() (any, error) {
		return r.lookup(ctx, key, cred, traceID)
	})
	select {
	case <-ctx.Done():
		return Client{}, ErrPortalUnavailable.Wrap(ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			e, _ := apierr.As(res.Err)
			if e == nil || e.Code == ErrPortalUnavailable.Code || e.Code == ErrPortalBadAnswer.Code {
				if c, ok := r.staleOK(cached, r.now()); ok {
					return c, nil
				}
			}
			return Client{}, res.Err
		}
		return res.Val.(*entry).result()
	}
}

// staleOK honours an expired successful entry while Portal fails.
func (r *Resolver) staleOK(e *entry, now time.Time) (Client, bool) {
	if e == nil || e.err != nil || r.opts.StaleIfError <= 0 || now.After(e.fetched.Add(r.opts.IdentityTTL+r.opts.StaleIfError)) {
		return Client{}, false
	}
	r.stale.Add(1)
	return e.client, true
}

func (e *entry) result() (Client, error) {
	if e.err != nil {
		return Client{}, e.err
	}
	return e.client, nil
}

// lookup asks Portal once (shared by concurrent callers of the same
// credential). It waits at most LookupTimeout/2 for one of the
// MaxConcurrentLookups slots; the call is bounded by LookupTimeout and
// detached from the first caller's cancellation (the others still wait
// for it).
func (r *Resolver) lookup(ctx context.Context, key [32]byte, cred, traceID string) (*entry, error) {
	ctx = context.WithoutCancel(ctx)
	wait := time.NewTimer(r.opts.LookupTimeout / 2)
	defer wait.Stop()
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-wait.C:
		r.busy.Add(1)
		r.fail("busy")
		return nil, ErrPortalUnavailable.WithMessage("too many look-ups of Portal client credentials are in flight; retry shortly")
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.LookupTimeout)
	defer cancel()
	r.lookups.Add(1)
	client, refusal, err := r.call(ctx, cred, traceID)
	if errors.Is(err, ErrCredentialUnknown) {
		// An answer (404, 400…), just not one cached as a refusal.
		r.lastErr.Store("")
		return nil, err
	}
	if err != nil {
		r.fail(errClass(err))
		r.log.Warn("portal: client look-up failed", "error", err.Error())
		return nil, err
	}
	r.lastErr.Store("")
	now := r.now()
	e := &entry{key: key, client: client, fetched: now, expires: now.Add(r.opts.IdentityTTL)}
	if refusal != nil {
		e.err, e.client, e.expires = refusal, Client{}, now.Add(r.opts.FailureTTL)
	}
	r.put(e)
	return e, nil
}

func (r *Resolver) fail(class string) {
	r.failures.Add(1)
	r.lastErr.Store(class)
}

func errClass(err error) string {
	if e, ok := apierr.As(err); ok {
		return e.Code
	}
	return "error"
}

// clientAnswer is what the adapter reads of Portal's client description.
type clientAnswer struct {
	ID        string `json:"id"`
	Custodian struct {
		ID string `json:"id"`
	} `json:"custodian"`
}

// call makes the HTTP request. It returns the client, or a refusal to
// cache, or an error not to cache.
func (r *Resolver) call(ctx context.Context, cred, traceID string) (Client, *apierr.Error, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return Client{}, nil, ErrPortalUnavailable.Wrap(err)
	}
	req.Header.Set("Authorization", "Bearer "+cred)
	req.Header.Set("Accept", "application/json")
	if traceID != "" {
		req.Header.Set("X-Portal-Trace-Id", traceID)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		// The error may quote the URL, never the credential (a header).
		return Client{}, nil, ErrPortalUnavailable.Wrap(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return Client{}, nil, ErrPortalUnavailable.Wrap(err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return Client{}, ErrCredentialUnknown.Wrap(fmt.Errorf("portal answered %d", resp.StatusCode)), nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return Client{}, nil, ErrPortalUnavailable.Wrap(fmt.Errorf("portal answered %d", resp.StatusCode))
	default:
		// 404, 400, a redirect…: not a credential Portal accepts, but not
		// one of the answers cached as failures either.
		return Client{}, nil, ErrCredentialUnknown.Wrap(fmt.Errorf("portal answered %d", resp.StatusCode))
	}
	if len(body) > maxAnswerBytes {
		return Client{}, nil, ErrPortalBadAnswer.Wrap(errors.New("answer larger than 1 MiB"))
	}
	c, err := ParseClient(body)
	if err != nil {
		return Client{}, nil, err
	}
	if c.CustodianID != r.opts.CustodianID {
		return Client{}, ErrOtherCustodian, nil
	}
	return c, nil, nil
}

// ParseClient reads Portal's answer to GET /api/v3/clients/me: an object
// with "id" (the client id) and "custodian": {"id"}. Other members are
// ignored. The client id must be 1 to MaxClientIDBytes visible ASCII
// characters (it names records and is a WebAuthn user handle).
func ParseClient(body []byte) (Client, error) {
	var a clientAnswer
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&a); err != nil {
		return Client{}, ErrPortalBadAnswer.Wrap(errors.New("not a JSON client object"))
	}
	if dec.More() {
		return Client{}, ErrPortalBadAnswer.Wrap(errors.New("data after the client object"))
	}
	if err := CheckClientID(a.ID); err != nil {
		return Client{}, ErrPortalBadAnswer.Wrap(errors.New("the client id is missing or malformed"))
	}
	if a.Custodian.ID == "" {
		return Client{}, ErrPortalBadAnswer.Wrap(errors.New("the custodian id is missing"))
	}
	return Client{ID: a.ID, CustodianID: a.Custodian.ID}, nil
}

// CheckClientID checks a client id's form: 1 to MaxClientIDBytes visible
// ASCII characters.
func CheckClientID(id string) error {
	if id == "" || len(id) > MaxClientIDBytes {
		return ErrClientID
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return ErrClientID
		}
	}
	return nil
}

// join records a caller waiting for key's look-up and reports whether
// one was already waiting.
func (r *Resolver) join(key [32]byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.waiting[key]
	r.waiting[key] = n + 1
	return n > 0
}

func (r *Resolver) leave(key [32]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.waiting[key] - 1; n > 0 {
		r.waiting[key] = n
	} else {
		delete(r.waiting, key)
	}
}

func (r *Resolver) get(key [32]byte) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.entries[key]
	if !ok {
		return nil
	}
	r.lru.MoveToFront(el)
	return el.Value.(*entry)
}

func (r *Resolver) put(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.entries[e.key]; ok {
		el.Value = e
		r.lru.MoveToFront(el)
		return
	}
	r.entries[e.key] = r.lru.PushFront(e)
	for r.lru.Len() > r.opts.MaxIdentities {
		old := r.lru.Back()
		r.lru.Remove(old)
		delete(r.entries, old.Value.(*entry).key)
	}
}

// Flush forgets every cached answer (after a credential was revoked at
// Portal, say). It returns how many there were.
func (r *Resolver) Flush() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.lru.Len()
	r.entries = map[[32]byte]*list.Element{}
	r.lru.Init()
	return n
}

// Stats returns a snapshot of the counters.
func (r *Resolver) Stats() ResolverStats {
	r.mu.Lock()
	n := r.lru.Len()
	r.mu.Unlock()
	last, _ := r.lastErr.Load().(string)
	return ResolverStats{Hits: r.hits.Load(), Stale: r.stale.Load(), Lookups: r.lookups.Load(), Failures: r.failures.Load(),
		Limited: r.limited.Load(), Busy: r.busy.Load(), Entries: n, InFlight: int64(len(r.sem)), LastError: last}
}

// APIURL is the Portal API base URL in use.
func (r *Resolver) APIURL() string { return r.opts.APIURL }
