package server

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminRoutes is every route of the admin listener: its probes, /metrics
// and the /v1/admin/* routes, which carry no-store and the admin API key
// check (routes()). A capability that is off has a nil handler and is not
// mounted. When both listeners are one, the probes are mounted once.
func (s *Server) AdminRoutes() []Route {
	const a = "/v1/admin"
	u := mw(s.unsealed)
	cs, cu, cj := s.opts.ClientShares, s.opts.Custodian, s.opts.ClusterJoins
	var cmw []echo.MiddlewareFunc
	if cu != nil {
		cmw = mw(s.unsealed, cu.Configured)
	}
	return []Route{
		// Probes and metrics (no admin key).
		{Method: http.MethodGet, Path: "/healthz", Handler: s.healthz, Plain: true},
		{Method: http.MethodHead, Path: "/healthz", Handler: s.healthz, Plain: true},
		{Method: http.MethodGet, Path: "/readyz", Handler: s.readyz, Plain: true},
		{Method: http.MethodHead, Path: "/readyz", Handler: s.readyz, Plain: true},
		// The API document (openapi.yaml) with this listener's paths.
		{Method: http.MethodGet, Path: "/openapi.json", Handler: s.docAdmin, Plain: true},
		{Method: http.MethodGet, Path: "/metrics", Handler: echo.WrapHandler(promhttp.HandlerFor(s.opts.Metrics.Registry, promhttp.HandlerOpts{})), Plain: true},

		{Method: http.MethodGet, Path: a + "/readyz", Handler: s.adminReadyz},

		// Users (user:<userId> owners), their keys and session tokens.
		{Method: http.MethodPost, Path: a + "/users/:userId/session-tokens", Handler: s.mintSessionToken, Middleware: u},
		{Method: http.MethodGet, Path: a + "/users/:userId", Handler: s.describeUser, Middleware: u},
		{Method: http.MethodDelete, Path: a + "/users/:userId", Handler: s.deleteUser, Middleware: u},
		{Method: http.MethodGet, Path: a + "/users/:userId/keys/:method/versions", Handler: s.listVersions, Middleware: u},
		{Method: http.MethodPost, Path: a + "/users/:userId/keys/:method/versions/:versionId/restore", Handler: s.restoreVersion, Middleware: u},

		// Backup and import.
		{Method: http.MethodGet, Path: a + "/backup", Handler: s.backup},
		{Method: http.MethodGet, Path: a + "/backup/etcd-snapshot", Handler: bind(s.opts.EtcdSnapshot, s.etcdSnapshot)},
		{Method: http.MethodPost, Path: a + "/keys/import", Handler: s.importKeys, Middleware: u},

		// Firebase: block list and users (:subject is the owner
		// firebase:<project>/<tenant>/<uid>, URL-escaped).
		{Method: http.MethodGet, Path: a + "/firebase/blocked", Handler: s.listBlocked},
		{Method: http.MethodPut, Path: a + "/firebase/blocked/:subject", Handler: s.block},
		{Method: http.MethodDelete, Path: a + "/firebase/blocked/:subject", Handler: s.unblock},
		{Method: http.MethodGet, Path: a + "/firebase/users/:subject/keys/:method/versions", Handler: s.listFirebaseVersions, Middleware: u},
		{Method: http.MethodPost, Path: a + "/firebase/users/:subject/keys/:method/versions/:versionId/restore", Handler: s.restoreFirebaseVersion, Middleware: u},
		{Method: http.MethodDelete, Path: a + "/firebase/users/:subject", Handler: s.deleteFirebaseUser, Middleware: u},

		// Owners of every kind (user:, firebase:, portal:).
		{Method: http.MethodGet, Path: a + "/owners/:owner", Handler: s.describeOwner, Middleware: u},
		{Method: http.MethodGet, Path: a + "/owners/:owner/keys/:method/versions", Handler: s.listAnyOwnerVersions, Middleware: u},
		{Method: http.MethodPost, Path: a + "/owners/:owner/keys/:method/versions/:versionId/restore", Handler: s.restoreAnyOwnerVersion, Middleware: u},

		// Passkeys (server/passkey).
		{Method: http.MethodGet, Path: a + "/users/:userId/passkeys", Handler: bind(s.opts.Passkey, PasskeyHandler.AdminList)},
		{Method: http.MethodDelete, Path: a + "/users/:userId/passkeys/:credentialId", Handler: bind(s.opts.Passkey, PasskeyHandler.AdminRevoke)},
		{Method: http.MethodPost, Path: a + "/users/:userId/passkeys/reset", Handler: bind(s.opts.Passkey, PasskeyHandler.AdminReset)},

		// Portal's identity cache (server/portal).
		{Method: http.MethodDelete, Path: a + "/portal/identities", Handler: bind(s.opts.Portal, PortalHandler.FlushIdentities)},

		// Client shares (server/clientshares).
		{Method: http.MethodGet, Path: a + "/users/:userId/client-shares", Handler: bind(cs, ClientSharesHandler.List), Middleware: u},
		{Method: http.MethodPut, Path: a + "/users/:userId/client-shares/:method", Handler: bind(cs, ClientSharesHandler.Put), Middleware: u},
		{Method: http.MethodGet, Path: a + "/users/:userId/client-shares/:method", Handler: bind(cs, ClientSharesHandler.Get), Middleware: u},
		{Method: http.MethodDelete, Path: a + "/users/:userId/client-shares/:method", Handler: bind(cs, ClientSharesHandler.Delete), Middleware: u},
		{Method: http.MethodPut, Path: a + "/users/:userId/client-shares/:method/status", Handler: bind(cs, ClientSharesHandler.Status), Middleware: u},
		{Method: http.MethodGet, Path: a + "/users/:userId/client-shares/:method/versions", Handler: bind(cs, ClientSharesHandler.Versions), Middleware: u},
		{Method: http.MethodPost, Path: a + "/users/:userId/client-shares/:method/versions/:versionId/restore", Handler: bind(cs, ClientSharesHandler.Restore), Middleware: u},

		// Custodian shares (server/custodianapi): any owner (user:,
		// firebase:, portal:) URL-escaped in one segment under /owners.
		{Method: http.MethodPut, Path: a + "/users/:userId/custodian-share", Handler: bind(cu, CustodianHandler.Put), Middleware: cmw},
		{Method: http.MethodGet, Path: a + "/users/:userId/custodian-share", Handler: bind(cu, CustodianHandler.Get), Middleware: cmw},
		{Method: http.MethodDelete, Path: a + "/users/:userId/custodian-share", Handler: bind(cu, CustodianHandler.Delete), Middleware: cmw},
		{Method: http.MethodGet, Path: a + "/users/:userId/custodian-share/versions", Handler: bind(cu, CustodianHandler.Versions), Middleware: cmw},
		{Method: http.MethodPost, Path: a + "/users/:userId/custodian-share/versions/:versionId/restore", Handler: bind(cu, CustodianHandler.Restore), Middleware: cmw},
		{Method: http.MethodGet, Path: a + "/users/:userId/custodian-shares", Handler: bind(cu, CustodianHandler.List), Middleware: cmw},
		{Method: http.MethodGet, Path: a + "/owners/:owner/custodian-shares", Handler: bind(cu, CustodianHandler.OwnerList), Middleware: cmw},
		{Method: http.MethodGet, Path: a + "/owners/:owner/custodian-shares/:method/versions", Handler: bind(cu, CustodianHandler.OwnerVersions), Middleware: cmw},
		{Method: http.MethodPost, Path: a + "/owners/:owner/custodian-shares/:method/versions/:versionId/restore", Handler: bind(cu, CustodianHandler.OwnerRestore), Middleware: cmw},
		{Method: http.MethodPost, Path: a + "/custodian-shares/batch-put", Handler: bind(cu, CustodianHandler.BatchPut), Middleware: cmw},
		{Method: http.MethodPost, Path: a + "/custodian-shares/batch-get", Handler: bind(cu, CustodianHandler.BatchGet), Middleware: cmw},
		{Method: http.MethodPost, Path: a + "/custodian/rewrap", Handler: bind(cu, CustodianHandler.StartRewrap), Middleware: cmw},
		{Method: http.MethodGet, Path: a + "/custodian/rewrap", Handler: bind(cu, CustodianHandler.ListJobs), Middleware: cmw},
		{Method: http.MethodGet, Path: a + "/custodian/rewrap/:jobId", Handler: bind(cu, CustodianHandler.Job), Middleware: cmw},

		// The embedded etcd cluster's members (server/clusterapi).
		{Method: http.MethodGet, Path: a + "/cluster", Handler: bind(s.opts.Cluster, ClusterHandler.Status)},
		{Method: http.MethodDelete, Path: a + "/cluster/members/:id", Handler: bind(s.opts.Cluster, ClusterHandler.RemoveMember)},
		// Attested cluster join (server/clusterapi/joins.go). The joiner's
		// routes take no admin key (a joining node has none): the nonce and
		// the pending requests are bounded, the poll answers only the holder
		// of the request's poll secret.
		{Method: http.MethodPost, Path: "/v1/cluster/joins/nonce", Handler: bind(cj, ClusterJoinsHandler.Nonce), Middleware: mw(noStore, s.unsealed), Plain: true},
		{Method: http.MethodPost, Path: "/v1/cluster/joins", Handler: bind(cj, ClusterJoinsHandler.Submit), Middleware: mw(noStore, s.unsealed), Plain: true},
		{Method: http.MethodGet, Path: "/v1/cluster/joins/:id", Handler: bind(cj, ClusterJoinsHandler.Poll), Middleware: mw(noStore, s.unsealed), Plain: true},
		{Method: http.MethodGet, Path: a + "/cluster/joins", Handler: bind(cj, ClusterJoinsHandler.List), Middleware: u},
		{Method: http.MethodGet, Path: a + "/cluster/joins/:id", Handler: bind(cj, ClusterJoinsHandler.Get), Middleware: u},
		{Method: http.MethodPost, Path: a + "/cluster/joins/:id/approve", Handler: bind(cj, ClusterJoinsHandler.Approve), Middleware: u},
		{Method: http.MethodPost, Path: a + "/cluster/joins/:id/refuse", Handler: bind(cj, ClusterJoinsHandler.Refuse), Middleware: u},

		// Go's profiler (dev mode only).
		{Method: http.MethodGet, Path: a + "/debug/pprof/profile", Handler: bind(s.opts.Pprof, PprofHandler.Profile)},
		{Method: http.MethodGet, Path: a + "/debug/pprof/:name", Handler: bind(s.opts.Pprof, PprofHandler.Named)},

		// While sealed, every API path says so (no capability is wired).
		{Method: Any, Path: "/v1/*", Handler: s.whileSealed(), Plain: true},
		{Method: Any, Path: "/passkeys/*", Handler: s.whileSealed(), Plain: true},
		{Method: Any, Path: "/webhook/*", Handler: s.whileSealed(), Plain: true},
	}
}
