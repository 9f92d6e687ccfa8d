// Package server is Keywarden's HTTP API on labstack/echo.
//
// Two listeners (decisions/18): the public one serves client, SDK, webhook
// and health routes; the admin one serves /v1/admin/* and /metrics
// (loopback by default). In dev mode both are one listener.
//
// Handlers are thin: bind → validate → one service call → JSON. Errors
// become HTTP in one place, [Server.handleError], from *apierr.Error values:
// {"error":{"code":"…","message":"…"}} with the right status.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/ratelimit"
	"github.com/keywarden/keywarden/receipt"
	"github.com/keywarden/keywarden/server/apidoc"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/store"
)

// Auditor is the audit log: Record is durable (fail closed), Refusal is
// counted and sampled.
type Auditor = keys.Auditor

// UserData is a capability that keeps per-user data: the admin API lists
// and deletes it with the user.
type UserData interface {
	// DescribeUser returns a JSON-able description without secrets, or nil.
	DescribeUser(ctx context.Context, userID string) (any, error)
	// DeleteUser removes everything of userID it keeps.
	DeleteUser(ctx context.Context, userID string) error
	// Name is the key under which DescribeUser's answer appears.
	Name() string
}

// Rollback is the TPM rollback counter (enclave.Rollback). Every store
// commit advances the generation through the store's change ledger; the
// server only closes the generation before a backup.
type Rollback interface {
	BeforeBackup()
}

// Check is a dependency reported in /readyz. Degraded checks never fail
// readiness (decisions/20); the routes that need them answer 503 themselves.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
	// Private checks describe the configuration (e.g. a root key sealed
	// without a PCR policy): they appear only in the admin readiness
	// (GET /v1/admin/readyz), not in the public /readyz.
	Private bool
}

// Options are the server's dependencies.
type Options struct {
	Config   config.Config
	Logger   *slog.Logger
	DB       *store.DB
	Custody  *enclave.Custody // nil while the root key is sealed
	Sessions *enclave.SessionTokens
	Audit    Auditor
	Metrics  *metrics.Metrics
	// BlockList is the operator's Firebase block list (LoadBlockList).
	// Required.
	BlockList *BlockList
	// Firebase serves the native Firebase key routes (firebase.NewHTTP
	// over Keys and BlockList.Has); nil: they answer 503 sealed.
	Firebase *firebase.HTTP
	// Keys is the keys service every key route uses; required unless
	// sealed (Custody nil).
	Keys *keys.Service
	// Attestation serves /v1/attestation, /v1/appliance-key and
	// /v1/appliance-keys; nil: off.
	Attestation AttestationHandler
	// Receipts: the audit log signs (audit.Options.Signer), so a release
	// answers with its receipt in the Keywarden-Receipt header.
	Receipts bool
	// ClientShares serves /v1/admin/users/:userId/client-shares…; nil: off.
	// (It is also among Users, which lists and deletes a user's shares.)
	ClientShares ClientSharesHandler
	// Custodian serves the custodian-share routes (each answers its 503
	// while Vault is not configured); nil: off. (Also among Users.)
	Custodian CustodianHandler
	// Passkey serves /v1/passkeys/…, /.well-known/… and the admin's
	// passkey routes; nil: off (passkey.rp_id not set).
	Passkey PasskeyHandler
	// Portal serves the Portal SDK drop-in (TBS, /passkeys/*, webhooks)
	// and the identity-cache flush; nil: off (portal.custodian_id not set).
	Portal PortalHandler
	// PIN serves /v1/pin/… (PIN release with a guess limit); nil: off
	// (pin.enabled false).
	PIN PINHandler
	// Cluster serves GET /v1/admin/cluster and DELETE
	// /v1/admin/cluster/members/:id (store.backend embedded only); nil: off.
	Cluster ClusterHandler
	// Demo serves the demo page at /demo/ (dev mode only); nil: off.
	Demo DemoHandler
	// Pprof serves Go's profiler under /v1/admin/debug/pprof/ (dev mode
	// only); nil: off.
	Pprof    PprofHandler
	Users    []UserData
	Degraded []Check
	// EtcdSnapshot serves GET /v1/admin/backup/etcd-snapshot (etcd's own
	// snapshot of a member); nil: off (the store is not on etcd).
	EtcdSnapshot EtcdSnapshotter
	// Rollback is told before a backup streams (BeforeBackup); nil when
	// there is no counter.
	Rollback Rollback
	// ClusterJoins serves the attested cluster join (server/clusterapi);
	// nil: off (the node is not a cluster member).
	ClusterJoins ClusterJoinsHandler
	// SealedReason explains why Custody is nil (shown in /readyz).
	SealedReason string
	Clock        func() time.Time
}

// Server is the HTTP API.
type Server struct {
	opts     Options
	log      *slog.Logger
	cfg      config.Config
	Public   *echo.Echo
	Admin    *echo.Echo // the same as Public when both listen on one address
	draining atomic.Bool
	adminKey [][32]byte
	blocked  *BlockList
	keys     *keys.Service         // nil while sealed
	fb       *firebase.HTTP        // nil while sealed
	client   []echo.MiddlewareFunc // the client routes' middleware (CORS, rate limit)
	deletes  *ratelimit.Limiter    // admin user deletions (decisions/13)

	// docPublic and docAdmin serve GET /openapi.json on each listener
	// (server/apidoc): that listener's paths, both tables' when one
	// listener serves both.
	docPublic, docAdmin echo.HandlerFunc

	lastBackup atomic.Int64 // unix seconds of the last completed backup stream (meta "last_backup")
	now        func() time.Time

	storeMu      sync.Mutex
	storeChecked time.Time
	storeErr     error
}

// New builds the server and its routes.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.DB == nil || opts.Audit == nil {
		return nil, errors.New("server: DB and Audit are required")
	}
	s := &Server{opts: opts, log: opts.Logger, cfg: opts.Config, now: opts.Clock}
	hashes, err := adminKeyHashes(opts.Config.Admin)
	if err != nil {
		return nil, err
	}
	s.adminKey = hashes
	perMin := max(opts.Config.Limits.UserDeletesPerMinute, 1)
	s.deletes = ratelimit.New(perMin, time.Minute/time.Duration(perMin), 1)
	if s.blocked = opts.BlockList; s.blocked == nil {
		return nil, errors.New("server: BlockList is required (LoadBlockList)")
	}
	if err := opts.DB.View(context.Background(), func(tx *store.Tx) error {
		if b, err := tx.GetMeta(store.MetaLastBackup); err == nil {
			if t, err := time.Parse(time.RFC3339, string(b)); err == nil {
				s.lastBackup.Store(t.Unix())
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	opts.Metrics.GaugeFunc("keywarden_backup_last_success_timestamp_seconds",
		"When the last backup stream (GET /v1/admin/backup) completed, unix seconds; 0: never.",
		func() float64 { return float64(s.lastBackup.Load()) })
	if s.keys = opts.Keys; s.keys == nil && opts.Custody != nil {
		return nil, errors.New("server: Keys is required when the root key is unsealed (Custody set)")
	}
	s.fb = opts.Firebase
	s.Public = s.newEcho()
	s.Admin = s.Public
	pub, adm := apidoc.Both, apidoc.Both
	if opts.Config.Listen.AdminAddr != opts.Config.Listen.Addr {
		s.Admin = s.newEcho()
		pub, adm = apidoc.Public, apidoc.Admin
	}
	if s.docPublic, err = apidoc.Handler(pub); err != nil {
		return nil, err
	}
	if s.docAdmin, err = apidoc.Handler(adm); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = ipExtractor(s.cfg.Listen.TrustedProxies)
	// One global middleware: echo applies them anew for every request.
	e.Use(s.front(s.cfg.Listen.MaxConcurrent, "/healthz", "/readyz"))
	return e
}

// ipExtractor believes X-Forwarded-For only from trusted proxies
// (decisions/19); by default only the direct peer counts.
func ipExtractor(trusted []string) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, t := range trusted {
		if !strings.Contains(t, "/") {
			if strings.Contains(t, ":") {
				t += "/128"
			} else {
				t += "/32"
			}
		}
		if _, n, err := net.ParseCIDR(t); err == nil {
			opts = append(opts, echo.TrustIPRange(n))
		}
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// routes mounts the two routes tables (routes_public.go, routes_admin.go)
// with the listeners' middleware: client routes carry CORS and the
// per-address rate limit, /v1/admin/* no-store and the admin API key.
func (s *Server) routes() {
	limiter := s.rateLimit()
	var client []echo.MiddlewareFunc
	if origins := corsOrigins(s.cfg); len(origins) > 0 {
		client = append(client, middleware.CORSWithConfig(middleware.CORSConfig{
			// Exact matches only: echo's AllowOrigins would also honour
			// wildcards and subdomain patterns.
			AllowOriginFunc: func(origin string) (bool, error) { _, ok := origins[origin]; return ok, nil },
			AllowMethods:    []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete},
			AllowHeaders:    []string{"Authorization", "Content-Type", "X-Firebase-Token", "X-Passkey-Proof", "X-Portal-Trace-Id"},
			ExposeHeaders:   []string{receipt.Header, "X-Request-Id"},
			MaxAge:          600,
		}))
	}
	client = append(client, limiter)
	s.client = client
	adminMW := []echo.MiddlewareFunc{noStore, s.requireAdmin}
	// The groups serve their catch-alls (404s under the group's
	// middleware); mount adds the routes with the same middleware.
	s.Public.Group("", client...)
	s.Admin.Group("/v1/admin", adminMW...)
	mount(s.Public, client, s.PublicRoutes())
	mount(s.Admin, adminMW, s.AdminRoutes())
}

// whileSealed is the handler of the sealed catch-alls: nil (not mounted)
// unless the root key is sealed.
func (s *Server) whileSealed() echo.HandlerFunc {
	if s.opts.Custody != nil {
		return nil
	}
	return sealedHandler
}

// Drain makes /readyz answer 503 so load balancers stop sending traffic
// (the first step of a graceful shutdown).
func (s *Server) Drain() { s.draining.Store(true) }

// --- middleware ---------------------------------------------------------

// front is the one wrapper every request passes through first. It does,
// in one call and one allocation of per-request state:
//
//   - the request id: X-Portal-Trace-Id or X-Request-Id when it is a sane
//     token, else a new one; the correlation id in logs and audit lines
//     (audit.RequestIDFrom), answered in X-Request-Id;
//   - with receipts, the slot a release leaves its receipt in; it goes out
//     in the Keywarden-Receipt header of a successful answer (README,
//     "Release receipts");
//   - panic recovery (the panic value is not logged: it could hold request
//     data);
//   - metrics: in-flight gauge, requests by route, method and status, and
//     latency by route, through children resolved once per label set;
//   - the concurrency cap: at most n requests at once; the exempt paths
//     (health probes) always pass, so a saturated node is not taken out of
//     the load balancer for being busy;
//   - the body limit (limits.max_body_bytes): a larger Content-Length, or
//     a body that reads longer, is 413 too_large.
func (s *Server) front(n int, exempt ...string) echo.MiddlewareFunc {
	sem := make(chan struct{}, n)
	m := s.opts.Metrics
	receipts := s.opts.Receipts
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			req := c.Request()
			st := &reqState{}
			st.ID = requestIDOf(req.Header)
			st.idHeader[0] = st.ID
			res := c.Response()
			// Set, not Add: the value is the id just chosen (the key is
			// canonical, so no allocation for it).
			res.Header()["X-Request-Id"] = st.idHeader[:]
			if receipts {
				// st sits between echo's response and the connection's
				// writer to add the header as the status goes out.
				st.Receipts = true
				st.w = res.Writer
				res.Writer = st
			}
			r := req.WithContext(audit.WithRequestState(req.Context(), &st.RequestState))
			if r.Body != nil && r.Body != http.NoBody {
				st.body = limitedBody{r: r.Body, limit: s.cfg.Limits.MaxBodyBytes}
				r.Body = &st.body
			}
			c.SetRequest(r)

			m.InFlight.Inc()
			err := s.guarded(c, next, sem, exempt)
			if err != nil {
				c.Error(err)
			}
			m.InFlight.Dec()
			// Both labels come from closed sets (see package metrics): a
			// client picks the method and path, so neither is used as it
			// came.
			m.ObserveRequest(metrics.RouteLabel(c.Path()), metrics.MethodLabel(req.Method), res.Status, time.Since(start))
			return nil
		}
	}
}

// reqState is front's per-request state (one allocation). With receipts
// it is also the response writer under echo's: WriteHeader puts the
// receipt of a release recorded while serving the request into a
// successful answer's headers.
type reqState struct {
	audit.RequestState
	idHeader [1]string
	body     limitedBody
	w        http.ResponseWriter // with receipts: the writer st wraps
}

func (st *reqState) Header() http.Header         { return st.w.Header() }
func (st *reqState) Write(b []byte) (int, error) { return st.w.Write(b) }

// Unwrap lets http.ResponseController reach the connection's writer
// (echo's Flush and Hijack use it).
func (st *reqState) Unwrap() http.ResponseWriter { return st.w }

func (st *reqState) WriteHeader(code int) {
	if code < 300 {
		if r := st.Slot.Encoded(); r != "" {
			st.w.Header().Set(receipt.Header, r)
		}
	}
	st.w.WriteHeader(code)
}

// guarded runs next under the concurrency cap, turning a panic into an
// internal error.
func (s *Server) guarded(c echo.Context, next echo.HandlerFunc, sem chan struct{}, exempt []string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.log.Error("panic in handler", "route", c.Path(), "request_id", RequestID(c), "type", fmt.Sprintf("%T", r))
			err = apierr.ErrInternal
		}
	}()
	path := c.Request().URL.Path
	for _, p := range exempt {
		if path == p {
			return next(c)
		}
	}
	select {
	case sem <- struct{}{}:
		defer func() { <-sem }()
	default:
		return errOverloaded
	}
	if c.Request().ContentLength > s.cfg.Limits.MaxBodyBytes {
		return echo.ErrStatusRequestEntityTooLarge
	}
	return next(c)
}

// limitedBody is a request body that fails with 413 once more than limit
// bytes were read.
type limitedBody struct {
	r     io.ReadCloser
	limit int64
	read  int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.read > b.limit {
		return 0, echo.ErrStatusRequestEntityTooLarge
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read > b.limit {
		return n, echo.ErrStatusRequestEntityTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.r.Close() }

// requestIDOf is the request's X-Portal-Trace-Id or X-Request-Id when it
// is a sane token, else a new id.
func requestIDOf(h http.Header) string {
	if id := headerValue(h, "X-Portal-Trace-Id"); saneID(id) {
		return id
	}
	if id := headerValue(h, "X-Request-Id"); saneID(id) {
		return id
	}
	return newID()
}

// headerValue is h.Get(key) for a canonical key.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func saneID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// RequestID returns the request's correlation id.
func RequestID(c echo.Context) string { return httpx.RequestID(c) }

var errOverloaded = apierr.New(http.StatusServiceUnavailable, "overloaded", "the appliance is at its concurrent request limit; retry shortly").WithRetry(time.Second)

// maxRateKeys bounds the client addresses the per-address limiter
// remembers (ratelimit.Limiter drops refilled buckets first).
const maxRateKeys = 100_000

// rateLimit limits requests per client address (token bucket; IPv6 by
// /64, ratelimit.AddrKey). The address's key is built in a stack buffer
// and looked up without allocating.
func (s *Server) rateLimit() echo.MiddlewareFunc {
	r := s.cfg.Limits.RatePerSecond
	l := ratelimit.New(s.cfg.Limits.RateBurst, time.Duration(float64(time.Second)/r), maxRateKeys)
	retry := time.Duration(float64(time.Second) / r)
	if retry < time.Second {
		retry = time.Second
	}
	errLimited := apierr.ErrRateLimited.WithRetry(retry)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			var buf [64]byte
			if ok, _ := l.TakeBytes(ratelimit.AppendAddrKey(buf[:0], c.RealIP()), time.Now()); !ok {
				return errLimited
			}
			return next(c)
		}
	}
}

// noStore marks every answer of the admin API as not to be kept by any
// cache: many carry secrets (custodian shares, client shares, backups,
// session tokens) and the rest describe users. It is set before the
// handler runs, so refusals and errors carry it too.
func noStore(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
		return next(c)
	}
}

func sealedHandler(echo.Context) error { return apierr.ErrSealed }

// unsealed refuses key routes while the root key is sealed.
func (s *Server) unsealed(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.Custody == nil {
			return apierr.ErrSealed
		}
		return next(c)
	}
}

// --- errors -------------------------------------------------------------

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// handleError is the one place errors become HTTP.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	e := s.toAPIError(err)
	if e.Code == "route_not_found" && s.otherMethodMatches(c) {
		e = errMethodNotAllowed
	}
	if e.Status >= 500 && e.Status != http.StatusServiceUnavailable {
		s.log.Error("request failed", "route", c.Path(), "request_id", RequestID(c), "code", e.Code, "cause", errString(e.Cause))
	} else if e.Cause != nil {
		s.log.Debug("request refused", "route", c.Path(), "request_id", RequestID(c), "code", e.Code, "cause", errString(e.Cause))
	}
	if e.Status >= 400 && e.Status < 500 && e.Status != http.StatusNotFound {
		s.opts.Metrics.Refusals.WithLabelValues(e.Code).Inc()
	}
	if e.RetryAfter > 0 {
		secs := int((e.RetryAfter + time.Second - 1) / time.Second)
		c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	}
	if e.Status == http.StatusUnauthorized && c.Response().Header().Get("WWW-Authenticate") == "" {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="keywarden"`)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(e.Status)
		return
	}
	var body errorBody
	body.Error.Code, body.Error.Message = e.Code, e.Message
	_ = c.JSON(e.Status, body)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Server) toAPIError(err error) *apierr.Error {
	if e, ok := apierr.As(err); ok {
		return e
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return apierr.New(http.StatusNotFound, "route_not_found", "no such route; see the API in README.md")
		case http.StatusMethodNotAllowed:
			return errMethodNotAllowed
		case http.StatusRequestEntityTooLarge:
			return apierr.ErrTooLarge.WithMessage("the request body is larger than %d bytes", s.cfg.Limits.MaxBodyBytes)
		case http.StatusUnsupportedMediaType:
			return apierr.New(http.StatusUnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json")
		case http.StatusBadRequest:
			return apierr.ErrBadRequest.Wrap(err)
		case http.StatusTooManyRequests:
			return apierr.ErrRateLimited
		}
		if he.Code >= 400 && he.Code < 500 {
			return apierr.New(he.Code, "request_error", http.StatusText(he.Code))
		}
		return apierr.ErrInternal.Wrap(err)
	}
	if errors.Is(err, store.ErrUnavailable) {
		return apierr.ErrStoreUnavailable.WithRetry(2 * time.Second).Wrap(err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return apierr.ErrUnavailable.WithRetry(time.Second).Wrap(err)
	}
	if errors.Is(err, audit.ErrUnavailable) {
		return apierr.ErrAuditFailed.WithRetry(5 * time.Second).Wrap(err)
	}
	if errors.Is(err, enclave.ErrOpen) || errors.Is(err, enclave.ErrMalformedRecord) {
		return apierr.New(http.StatusInternalServerError, "record_damaged", "the stored record does not open; an operator has been told").Wrap(err)
	}
	return apierr.ErrInternal.Wrap(err)
}

// Request ids are a random per-process prefix and a counter: unique, cheap
// (no syscall per request), and they need not be secret.
var (
	idPrefix  = func() string { var b [6]byte; _, _ = rand.Read(b[:]); return hex.EncodeToString(b[:]) }()
	idCounter atomic.Uint64
)

func newID() string {
	var b [32]byte // 12 hex digits, "-", at most 13 base-36 digits
	n := copy(b[:], idPrefix)
	b[n] = '-'
	return string(strconv.AppendUint(b[:n+1], idCounter.Add(1), 36))
}

var errMethodNotAllowed = apierr.New(http.StatusMethodNotAllowed, "method_not_allowed", "this route does not take that HTTP method")

// otherMethodMatches reports whether the path has a real route for another
// method on the listener that got the request (echo's groups register
// catch-all not-found routes that would otherwise turn every 405 into a
// 404). The other listener's routes do not count: the public listener
// must not reveal the admin API's routes by a 405.
func (s *Server) otherMethodMatches(c echo.Context) bool {
	path := c.Request().URL.Path
	for _, r := range c.Echo().Routes() {
		if r.Method == c.Request().Method || r.Method == echo.RouteNotFound || strings.HasSuffix(r.Path, "*") {
			continue
		}
		if routeMatches(r.Path, path) {
			return true
		}
	}
	return false
}

func routeMatches(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if strings.HasPrefix(ps[i], ":") {
			if xs[i] == "" {
				return false
			}
			continue
		}
		if ps[i] != xs[i] {
			return false
		}
	}
	return true
}

// corsOrigins is the exact set of browser origins allowed on client routes:
// listen.cors_origins when set, else the passkey origins that are https
// (a browser app on the relying party's own origin then works without a
// second list). Configuration validation refuses patterns.
func corsOrigins(cfg config.Config) map[string]struct{} {
	list := cfg.Listen.CORSOrigins
	if len(list) == 0 {
		for _, o := range cfg.Passkey.Origins {
			if o = strings.TrimSuffix(o, "/"); strings.HasPrefix(o, "https://") && config.ExactOrigin(o) == nil {
				list = append(list, o)
			}
		}
	}
	set := make(map[string]struct{}, len(list))
	for _, o := range list {
		set[o] = struct{}{}
	}
	return set
}
