package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/server"
)

// routeSet is what a routes table mounts ("METHOD /path"), Any expanded,
// the routes of capabilities that are off left out.
func routeSet(routes []server.Route) map[string]bool {
	set := map[string]bool{}
	for _, r := range routes {
		if r.Handler == nil {
			continue
		}
		if r.Method == server.Any {
			set["ANY "+r.Path] = true
			continue
		}
		set[r.Method+" "+r.Path] = true
	}
	return set
}

// servedSet is what a listener serves, echo's not-found routes left out
// and a path served for every method counted as ANY.
func servedSet(e *echo.Echo) map[string]bool {
	set, methods := map[string]bool{}, map[string]int{}
	for _, r := range e.Routes() {
		if r.Method != echo.RouteNotFound {
			methods[r.Path]++
			set[r.Method+" "+r.Path] = true
		}
	}
	for p, n := range methods {
		if strings.HasSuffix(p, "*") && n > 5 {
			for k := range set {
				if strings.HasSuffix(k, " "+p) {
					delete(set, k)
				}
			}
			set["ANY "+p] = true
		}
	}
	return set
}

func diffSets(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// TestApplianceRoutesTables starts the appliance as `keywarden dev` does
// with every capability on (attestation, client and custodian shares,
// passkeys, Portal with webhooks, demo page, pprof) and two listeners:
// each listener serves exactly the routes of its table
// (server/routes_public.go, server/routes_admin.go), every capability has
// its routes, and the public listener has no admin route and no /metrics.
func TestApplianceRoutesTables(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KEYWARDEN_DATA_DIR", filepath.Join(dir, "data"))
	t.Setenv("KEYWARDEN_LISTEN_ADDR", "127.0.0.1:1")
	t.Setenv("KEYWARDEN_LISTEN_ADMIN_ADDR", "127.0.0.1:2")
	t.Setenv("KEYWARDEN_ADMIN_KEY", "routes-admin-key-0123456789")
	t.Setenv("KEYWARDEN_PASSKEY_RP_ID", "localhost")
	t.Setenv("KEYWARDEN_PORTAL_CUSTODIAN_ID", "cust-1")
	t.Setenv("KEYWARDEN_PORTAL_API_URL", "http://127.0.0.1:3")
	t.Setenv("KEYWARDEN_PORTAL_WEBHOOK_SECRET", "whsec-0123456789abcdef0123456789")
	cfg, _, err := serveConfig(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	a, srv, err := startAppliance(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if srv.Public == srv.Admin {
		t.Fatal("one listener; want two")
	}
	public, admin := routeSet(srv.PublicRoutes()), routeSet(srv.AdminRoutes())
	for _, l := range []struct {
		name  string
		e     *echo.Echo
		table map[string]bool
	}{{"public", srv.Public, public}, {"admin", srv.Admin, admin}} {
		served := servedSet(l.e)
		if m := diffSets(served, l.table); len(m) > 0 {
			t.Errorf("the %s listener serves routes its table does not list: %v", l.name, m)
		}
		if m := diffSets(l.table, served); len(m) > 0 {
			t.Errorf("the %s table lists routes its listener does not serve: %v", l.name, m)
		}
	}
	for _, k := range []string{
		"PUT /v1/firebase/key", "GET /v1/attestation", "POST /v1/passkeys/authentication/finish",
		"GET /.well-known/assetlinks.json", "GET /v1/backup/encrypt-key", "POST /passkeys/finish-login/read",
		"POST /webhook/backup/fetch", "POST /demo/session",
	} {
		if !public[k] {
			t.Errorf("the public table has no %s", k)
		}
	}
	for _, k := range []string{
		"GET /metrics", "GET /v1/admin/backup", "POST /v1/admin/keys/import", "GET /v1/admin/owners/:owner",
		"PUT /v1/admin/users/:userId/client-shares/:method", "POST /v1/admin/custodian-shares/batch-get",
		"POST /v1/admin/users/:userId/passkeys/reset", "DELETE /v1/admin/portal/identities",
		"GET /v1/admin/debug/pprof/:name", "POST /v1/admin/users/:userId/session-tokens",
	} {
		if !admin[k] {
			t.Errorf("the admin table has no %s", k)
		}
	}
	for k := range servedSet(srv.Public) {
		if p := k[strings.Index(k, " ")+1:]; p == "/metrics" || strings.HasPrefix(p, "/v1/admin") {
			t.Errorf("the public listener serves %s", k)
		}
	}
}
