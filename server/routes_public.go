package server

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// PublicRoutes is every route of the public listener: probes, the native
// Firebase key routes and the capabilities' client routes (passkeys,
// Portal, PIN). Client routes
// carry CORS and the per-address rate limit (routes()); a capability that
// is off has a nil handler and is not mounted.
func (s *Server) PublicRoutes() []Route {
	fbPut, fbGet, fbDel := sealedHandler, sealedHandler, sealedHandler
	if s.fb != nil {
		fbPut, fbGet, fbDel = s.fb.Put, s.fb.Get, s.fb.Delete
	}
	o := s.opts
	pk, po := o.Passkey, o.Portal
	u := mw(s.unsealed)
	// The Firebase key routes' reads (block list, key record) share one
	// linearizable round trip on a cluster (BlockList.ReadSession).
	fb := mw(s.unsealed, s.blocked.ReadSession)
	var webhook []echo.MiddlewareFunc
	if po != nil {
		webhook = mw(s.unsealed, po.WebhookAuth)
	}
	return []Route{
		// Probes (no CORS, no rate limit).
		{Method: http.MethodGet, Path: "/healthz", Handler: s.healthz, Plain: true},
		{Method: http.MethodHead, Path: "/healthz", Handler: s.healthz, Plain: true},
		{Method: http.MethodGet, Path: "/readyz", Handler: s.readyz, Plain: true},
		{Method: http.MethodHead, Path: "/readyz", Handler: s.readyz, Plain: true},
		// The API document (openapi.yaml) with this listener's paths.
		{Method: http.MethodGet, Path: "/openapi.json", Handler: s.docPublic, Plain: true},

		// Native Firebase key routes (server/firebase/http.go).
		{Method: http.MethodPut, Path: "/v1/firebase/key", Handler: fbPut, Middleware: fb},
		{Method: http.MethodGet, Path: "/v1/firebase/key", Handler: fbGet, Middleware: fb},
		{Method: http.MethodPost, Path: "/v1/firebase/key/release", Handler: fbGet, Middleware: fb},
		{Method: http.MethodDelete, Path: "/v1/firebase/key", Handler: fbDel, Middleware: fb},
		// The caller's own audit events (Firebase ID token, passkey proof or
		// Portal credentials; server/events.go).
		{Method: http.MethodGet, Path: "/v1/me/events", Handler: s.meEvents, Middleware: u},

		// Attestation (server/attestapi).
		{Method: http.MethodGet, Path: "/v1/attestation", Handler: bind(o.Attestation, AttestationHandler.Attestation)},
		{Method: http.MethodGet, Path: "/v1/appliance-key", Handler: bind(o.Attestation, AttestationHandler.ApplianceKey)},
		{Method: http.MethodGet, Path: "/v1/appliance-keys", Handler: bind(o.Attestation, AttestationHandler.ApplianceKeys)},

		// Passkeys (server/passkey).
		{Method: http.MethodPost, Path: "/v1/passkeys/registration/begin", Handler: bind(pk, PasskeyHandler.RegistrationBegin)},
		{Method: http.MethodPost, Path: "/v1/passkeys/registration/finish", Handler: bind(pk, PasskeyHandler.RegistrationFinish)},
		{Method: http.MethodPost, Path: "/v1/passkeys/authentication/begin", Handler: bind(pk, PasskeyHandler.AuthenticationBegin)},
		{Method: http.MethodPost, Path: "/v1/passkeys/authentication/finish", Handler: bind(pk, PasskeyHandler.AuthenticationFinish)},
		{Method: http.MethodGet, Path: "/.well-known/apple-app-site-association", Handler: bind(pk, PasskeyHandler.AppleAppSiteAssociation)},
		{Method: http.MethodGet, Path: "/.well-known/assetlinks.json", Handler: bind(pk, PasskeyHandler.AssetLinks)},

		// Portal SDK drop-in (server/portal): TBS, passkeys, webhooks.
		{Method: http.MethodPut, Path: "/v1/backup/encrypt-key", Handler: bind(po, PortalHandler.TBSPut), Middleware: u},
		{Method: http.MethodGet, Path: "/v1/backup/encrypt-key", Handler: bind(po, PortalHandler.TBSGet), Middleware: u},
		{Method: http.MethodGet, Path: "/passkeys/status", Handler: bind(po, PortalHandler.PasskeyStatus), Middleware: u},
		{Method: http.MethodPost, Path: "/passkeys/begin-registration", Handler: bind(po, PortalHandler.BeginRegistration), Middleware: u},
		{Method: http.MethodPost, Path: "/passkeys/finish-registration", Handler: bind(po, PortalHandler.FinishRegistration), Middleware: u},
		{Method: http.MethodPost, Path: "/passkeys/begin-login", Handler: bind(po, PortalHandler.BeginLogin), Middleware: u},
		{Method: http.MethodPost, Path: "/passkeys/finish-login/read", Handler: bind(po, PortalHandler.FinishLoginRead), Middleware: u},
		{Method: http.MethodPost, Path: "/passkeys/finish-login/write", Handler: bind(po, PortalHandler.FinishLoginWrite), Middleware: u},
		{Method: http.MethodPost, Path: "/webhook/backup", Handler: bind(po, PortalHandler.WebhookBackup), Middleware: webhook},
		{Method: http.MethodPost, Path: "/webhook/backup/fetch", Handler: bind(po, PortalHandler.WebhookFetch), Middleware: webhook},

		// PIN release with a guess limit (server/pin).
		{Method: http.MethodPost, Path: "/v1/pin/registrations", Handler: bind(o.PIN, PINHandler.Begin), Middleware: u},
		{Method: http.MethodPut, Path: "/v1/pin/registrations/:registrationId", Handler: bind(o.PIN, PINHandler.Register), Middleware: u},
		{Method: http.MethodPost, Path: "/v1/pin/recoveries", Handler: bind(o.PIN, PINHandler.Recover), Middleware: u},
		{Method: http.MethodPost, Path: "/v1/pin/recoveries/:recoveryId/unlock", Handler: bind(o.PIN, PINHandler.Unlock), Middleware: u},
		{Method: http.MethodGet, Path: "/v1/pin", Handler: bind(o.PIN, PINHandler.Status), Middleware: u},
		{Method: http.MethodDelete, Path: "/v1/pin", Handler: bind(o.PIN, PINHandler.Delete), Middleware: u},

		// Demo page (dev mode only, server/demo).
		{Method: http.MethodGet, Path: "/demo", Handler: bind(o.Demo, DemoHandler.Redirect)},
		{Method: http.MethodGet, Path: "/demo/*", Handler: bind(o.Demo, DemoHandler.ServeFile)},
		{Method: http.MethodHead, Path: "/demo/*", Handler: bind(o.Demo, DemoHandler.ServeFile)},
		{Method: http.MethodPost, Path: "/demo/session", Handler: bind(o.Demo, DemoHandler.Session)},

		// While sealed, every API path says so (no capability is wired).
		{Method: Any, Path: "/v1/*", Handler: s.whileSealed(), Plain: true},
		{Method: Any, Path: "/passkeys/*", Handler: s.whileSealed(), Plain: true},
		{Method: Any, Path: "/webhook/*", Handler: s.whileSealed(), Plain: true},
	}
}
