package server

import (
	"github.com/labstack/echo/v4"
)

// Route is one route of a listener: routes_public.go and routes_admin.go
// each list every route of their listener as one table of Routes.
type Route struct {
	Method string // an HTTP method, or echo.RouteNotFound… never: see Any
	Path   string // the full path as echo matches it
	// Handler serves the route; nil: the capability is off and the route
	// is not mounted (a request gets 404 route_not_found, as for any
	// unknown path).
	Handler echo.HandlerFunc
	// Middleware runs before Handler, after the listener's own (CORS and
	// the per-address limit on client routes; no-store and the admin key
	// on /v1/admin/*).
	Middleware []echo.MiddlewareFunc
	// Plain routes skip the listener's client or admin middleware: probes,
	// /metrics, and the sealed catch-alls.
	Plain bool
}

// Any is the Method of a route that takes every HTTP method (echo.Any).
const Any = "ANY"

// Capabilities are the handlers of the optional capabilities, each built
// by its package's constructor with its dependencies (cmd/keywarden
// startAppliance builds them in order). A nil field is a capability that
// is off: its routes are not mounted.
//
// The fields are interfaces (the handler's methods the routes tables use)
// so that package server does not import the capability packages, whose
// tests run the real server.

// AttestationHandler serves the attestation routes (server/attestapi.Handler).
type AttestationHandler interface {
	Attestation(echo.Context) error
	ApplianceKey(echo.Context) error
	ApplianceKeys(echo.Context) error
}

// ClientSharesHandler serves the client-share admin routes
// (server/clientshares.Handler).
type ClientSharesHandler interface {
	List(echo.Context) error
	Put(echo.Context) error
	Get(echo.Context) error
	Delete(echo.Context) error
	Status(echo.Context) error
	Versions(echo.Context) error
	Restore(echo.Context) error
}

// CustodianHandler serves the custodian-share admin routes
// (server/custodianapi.Handler); Configured runs before each of them.
type CustodianHandler interface {
	Configured(echo.HandlerFunc) echo.HandlerFunc
	Put(echo.Context) error
	Get(echo.Context) error
	Delete(echo.Context) error
	Versions(echo.Context) error
	Restore(echo.Context) error
	List(echo.Context) error
	OwnerList(echo.Context) error
	OwnerVersions(echo.Context) error
	OwnerRestore(echo.Context) error
	BatchPut(echo.Context) error
	BatchGet(echo.Context) error
	StartRewrap(echo.Context) error
	ListJobs(echo.Context) error
	Job(echo.Context) error
}

// PasskeyHandler serves the passkey routes (server/passkey.Handler).
type PasskeyHandler interface {
	RegistrationBegin(echo.Context) error
	RegistrationFinish(echo.Context) error
	AuthenticationBegin(echo.Context) error
	AuthenticationFinish(echo.Context) error
	AppleAppSiteAssociation(echo.Context) error
	AssetLinks(echo.Context) error
	AdminList(echo.Context) error
	AdminRevoke(echo.Context) error
	AdminReset(echo.Context) error
}

// PortalHandler serves the Portal SDK drop-in (server/portal.Adapter);
// WebhookAuth runs before the webhook routes.
type PortalHandler interface {
	TBSPut(echo.Context) error
	TBSGet(echo.Context) error
	PasskeyStatus(echo.Context) error
	BeginRegistration(echo.Context) error
	FinishRegistration(echo.Context) error
	BeginLogin(echo.Context) error
	FinishLoginRead(echo.Context) error
	FinishLoginWrite(echo.Context) error
	WebhookAuth(echo.HandlerFunc) echo.HandlerFunc
	WebhookBackup(echo.Context) error
	WebhookFetch(echo.Context) error
	FlushIdentities(echo.Context) error
}

// PINHandler serves the PIN release routes (server/pin.Handler).
type PINHandler interface {
	Begin(echo.Context) error
	Register(echo.Context) error
	Recover(echo.Context) error
	Unlock(echo.Context) error
	Status(echo.Context) error
	Delete(echo.Context) error
}

// DemoHandler serves the dev-only demo page (server/demo.Demo).
type DemoHandler interface {
	Redirect(echo.Context) error
	ServeFile(echo.Context) error
	Session(echo.Context) error
}

// ClusterHandler serves the embedded cluster's member routes
// (server/clusterapi.Members).
type ClusterHandler interface {
	Status(echo.Context) error
	RemoveMember(echo.Context) error
}

// ClusterJoinsHandler serves the attested cluster join
// (server/clusterapi.Joins): the joiner's routes on the admin listener
// without the admin key, the operator's under /v1/admin.
type ClusterJoinsHandler interface {
	Nonce(echo.Context) error
	Submit(echo.Context) error
	Poll(echo.Context) error
	List(echo.Context) error
	Get(echo.Context) error
	Approve(echo.Context) error
	Refuse(echo.Context) error
}

// PprofHandler serves Go's profiler (dev builds only: cmd/keywarden's
// wire_pprof.go, so release builds do not contain net/http/pprof).
type PprofHandler interface {
	Profile(echo.Context) error
	Named(echo.Context) error
}

// bind is h's method m as a handler, or nil (route off) when h is nil.
func bind[T comparable](h T, m func(T, echo.Context) error) echo.HandlerFunc {
	var none T
	if h == none {
		return nil
	}
	return func(c echo.Context) error { return m(h, c) }
}

// mw is a route's middleware list.
func mw(m ...echo.MiddlewareFunc) []echo.MiddlewareFunc { return m }

// mount adds routes to e: plain routes with their own middleware only,
// the others under prefix with the group's middleware (groupMW, the
// middleware of the group made for the prefix; the group itself keeps
// serving its catch-all routes). Routes already on e (the health probes
// when both listeners are one) are not added twice.
//
// Each route's middleware chain is built here, once: echo would build it
// again for every request (a closure per middleware per request).
func mount(e *echo.Echo, groupMW []echo.MiddlewareFunc, routes []Route) {
	have := map[string]bool{}
	for _, r := range e.Routes() {
		have[r.Method+" "+r.Path] = true
	}
	for _, r := range routes {
		if r.Handler == nil {
			continue
		}
		methods := []string{r.Method}
		if r.Method == Any {
			methods = anyMethods
		}
		chain := r.Middleware
		if !r.Plain {
			chain = append(append([]echo.MiddlewareFunc{}, groupMW...), r.Middleware...)
		}
		h := r.Handler
		for i := len(chain) - 1; i >= 0; i-- {
			h = chain[i](h)
		}
		for _, m := range methods {
			if have[m+" "+r.Path] {
				continue
			}
			e.Add(m, r.Path, h)
		}
	}
}

// anyMethods are the methods echo.Any registers.
var anyMethods = []string{
	echo.CONNECT, echo.DELETE, echo.GET, echo.HEAD, echo.OPTIONS,
	echo.PATCH, echo.POST, echo.PROPFIND, echo.PUT, echo.TRACE, echo.REPORT,
}
