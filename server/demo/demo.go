// Package demo is the passkey demo page of `keywarden dev`: type a user id,
// register a passkey and store a random key, then recover the key with the
// passkey. It is plain HTML, JavaScript and CSS embedded in the binary (no
// build step, nothing fetched from elsewhere), talking to the native
// passkey API (/v1/passkeys/…) like any web app would.
//
// # Dev mode only
//
// Registration needs a user session token, which a real deployment mints
// through the admin API from the customer's backend. The demo has no
// backend, so it brings a stand-in: POST /demo/session {"userId"} mints a
// session token for any user id, without credentials. That is exactly what
// must never exist in production, so cmd/keywarden wires this package only
// when the configuration is dev mode, and only in builds with the
// simulator (cgo): release builds (CGO_ENABLED=0) do not contain it.
//
// Even in dev mode the endpoint answers only same-origin browser requests:
// the Origin header must name one of the configured passkey web origins
// and the body must be application/json (so a cross-site page needs a CORS
// preflight that is never granted). That keeps another site open in the
// developer's browser, or a DNS-rebound name, from minting tokens.
//
// # Routes
//
//	GET  /demo            → redirect to /demo/
//	GET  /demo/           → index.html; /demo/app.js, /demo/keywarden.js (the TypeScript client), /demo/style.css
//	POST /demo/session    {"userId"} → 201 {"userId","token","expiresAt"}
package demo

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
)

//go:embed static
var static embed.FS

// Files returns the page's static files (index.html, app.js, keywarden.js, style.css).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// DefaultTTL is the lifetime of a demo session token when Options.TTL is 0.
const DefaultTTL = 10 * time.Minute

// ActionSessionToken is the audit action of a token minted by the demo.
const ActionSessionToken = "demo_session_token"

// Errors of the session endpoint.
var (
	ErrOriginNotAllowed = apierr.New(http.StatusForbidden, "origin_not_allowed",
		"the demo session endpoint answers only the demo page itself: the Origin header must be a configured passkey origin")
	ErrContentType = apierr.New(http.StatusUnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json")
)

// Options configure the demo.
type Options struct {
	// Sessions mints the session tokens. Required.
	Sessions *enclave.SessionTokens
	// Origins are the web origins whose pages may call POST /demo/session
	// (the passkey origins; android:apk-key-hash:… entries are ignored).
	// At least one http(s) origin is required. Guards against other sites
	// in the developer's browser minting tokens.
	Origins []string
	// Audit records every token minted (durably; when it fails, no token
	// is minted). Required.
	Audit keys.Auditor
	// TTL is the tokens' lifetime; 0 means DefaultTTL.
	TTL time.Duration
}

// Demo serves the page and its session endpoint.
type Demo struct {
	sessions *enclave.SessionTokens
	origins  map[string]bool
	audit    keys.Auditor
	ttl      time.Duration
	files    http.Handler
}

// New checks opts and returns the demo.
func New(opts Options) (*Demo, error) {
	if opts.Sessions == nil || opts.Audit == nil {
		return nil, errors.New("demo: Sessions and Audit are required")
	}
	if opts.TTL < 0 {
		return nil, errors.New("demo: TTL must not be negative")
	}
	d := &Demo{sessions: opts.Sessions, audit: opts.Audit, ttl: opts.TTL, origins: map[string]bool{}}
	if d.ttl == 0 {
		d.ttl = DefaultTTL
	}
	for _, o := range opts.Origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			continue
		}
		d.origins[strings.ToLower(o)] = true
	}
	if len(d.origins) == 0 {
		return nil, errors.New("demo: at least one http(s) origin is required")
	}
	d.files = http.StripPrefix("/demo", http.FileServerFS(Files()))
	return d, nil
}

// Redirect is GET /demo: to /demo/.
func (d *Demo) Redirect(c echo.Context) error {
	return c.Redirect(http.StatusMovedPermanently, "/demo/")
}

// contentSecurityPolicy allows the page's own script and style only, and
// requests to its own origin only.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ServeFile is GET and HEAD /demo/*: the page and its files.
func (d *Demo) ServeFile(c echo.Context) error {
	name := strings.TrimPrefix(c.Request().URL.Path, "/demo/")
	if name != "" && name != "index.html" {
		if _, err := fs.Stat(Files(), name); err != nil {
			return apierr.ErrNotFound.WithMessage("no such demo file")
		}
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set(echo.HeaderCacheControl, "no-store")
	d.files.ServeHTTP(c.Response(), c.Request())
	return nil
}

type sessionRequest struct {
	UserID string `json:"userId"`
}

type sessionResponse struct {
	UserID    string    `json:"userId"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Session is POST /demo/session: it mints a user session token for the
// typed user id (dev only; see the package doc).
func (d *Demo) Session(c echo.Context) error {
	if !d.origins[strings.ToLower(c.Request().Header.Get("Origin"))] {
		return ErrOriginNotAllowed
	}
	ct := strings.ToLower(c.Request().Header.Get(echo.HeaderContentType))
	if !strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
		return ErrContentType
	}
	var req sessionRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	if err := validUserID(req.UserID); err != nil {
		return err
	}
	if err := d.record(c, req.UserID); err != nil {
		return err
	}
	tok, exp := d.sessions.Mint(req.UserID, d.ttl)
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, sessionResponse{UserID: req.UserID, Token: tok, ExpiresAt: exp})
}

// validUserID is the one user-id rule, the one the page's hint states.
func validUserID(id string) error { return enclave.ValidUserID(id) }

func (d *Demo) record(c echo.Context, userID string) error {
	ev := audit.Event{
		Action: ActionSessionToken, Outcome: audit.OutcomeSuccess, Actor: "dev-demo",
		Owner: string(enclave.UserOwner(userID)), RequestID: httpx.RequestID(c), Remote: c.RealIP(),
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 5*time.Second)
	defer cancel()
	if err := d.audit.Record(ctx, ev); err != nil {
		return apierr.ErrAuditFailed.Wrap(err)
	}
	return nil
}
