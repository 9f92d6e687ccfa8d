package server

import (
	"sort"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/config"
)

// tableSet is what a routes table mounts ("METHOD /path"), Any expanded,
// routes of capabilities that are off left out.
func tableSet(routes []Route) map[string]bool {
	set := map[string]bool{}
	for _, r := range routes {
		if r.Handler == nil {
			continue
		}
		methods := []string{r.Method}
		if r.Method == Any {
			methods = anyMethods
		}
		for _, m := range methods {
			set[m+" "+r.Path] = true
		}
	}
	return set
}

// echoSet is what a listener serves ("METHOD /path"), without the
// not-found routes echo's groups add.
func echoSet(e *echo.Echo) map[string]bool {
	set := map[string]bool{}
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		set[r.Method+" "+r.Path] = true
	}
	return set
}

// missing is what a holds and b does not, sorted.
func missing(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// checkTables fails on a route a listener serves that its routes table
// does not list, or the other way round.
func checkTables(t *testing.T, s *Server) {
	t.Helper()
	for _, l := range []struct {
		name  string
		e     *echo.Echo
		table []Route
	}{{"public", s.Public, s.PublicRoutes()}, {"admin", s.Admin, s.AdminRoutes()}} {
		want := tableSet(l.table)
		if s.Public == s.Admin { // one listener serves both tables
			want = tableSet(append(s.PublicRoutes(), s.AdminRoutes()...))
		}
		got := echoSet(l.e)
		if len(want) == 0 {
			t.Fatalf("%s: the routes table is empty", l.name)
		}
		if m := missing(got, want); len(m) > 0 {
			t.Errorf("%s listener serves routes its routes table does not list: %v", l.name, m)
		}
		if m := missing(want, got); len(m) > 0 {
			t.Errorf("%s routes table lists routes the listener does not serve: %v", l.name, m)
		}
	}
}

// TestRoutesTablesAreTheListeners: every route each listener serves is in
// its routes table (routes_public.go, routes_admin.go) and every route of
// a table is served, with two listeners, unsealed and sealed.
func TestRoutesTablesAreTheListeners(t *testing.T) {
	h := newHarness(t, func(c *config.Config, _ *Options) { c.Listen.AdminAddr = "127.0.0.1:1" })
	if h.srv.Public == h.srv.Admin {
		t.Fatal("the harness did not make two listeners")
	}
	checkTables(t, h.srv)

	// Sealed: the catch-alls are in the tables too. (The harness's store
	// and audit log are reused: only one TPM simulator per process.)
	o := h.srv.opts
	o.Custody, o.Keys, o.Firebase, o.Metrics = nil, nil, nil, nil
	sealed, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	checkTables(t, sealed)
	if !echoSet(sealed.Admin)["GET /v1/*"] || !echoSet(sealed.Public)["POST /passkeys/*"] {
		t.Fatal("sealed: the catch-alls are not served")
	}
}

// TestRoutesOneListener: with one listener both tables are served, the
// probes once.
func TestRoutesOneListener(t *testing.T) {
	h := newHarness(t)
	if h.srv.Public != h.srv.Admin {
		t.Fatal("the harness made two listeners")
	}
	checkTables(t, h.srv)
	n := 0
	for _, r := range h.srv.Public.Routes() {
		if r.Method == "GET" && r.Path == "/healthz" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("GET /healthz is mounted %d times", n)
	}
}

// TestPublicListenerServesNoAdminRoute: with two listeners the public one
// has no /v1/admin route and no /metrics, in its table, in echo's table,
// and when asked with the right admin key (as an attacker who learnt the
// key but reaches only the public address would).
func TestPublicListenerServesNoAdminRoute(t *testing.T) {
	h := newHarness(t, func(c *config.Config, _ *Options) { c.Listen.AdminAddr = "127.0.0.1:1" })
	admin := func(k string) bool {
		p := k[strings.Index(k, " ")+1:]
		return p == "/metrics" || strings.HasPrefix(p, "/v1/admin")
	}
	for k := range tableSet(h.srv.PublicRoutes()) {
		if admin(k) {
			t.Errorf("the public routes table lists %s", k)
		}
	}
	for k := range echoSet(h.srv.Public) {
		if admin(k) {
			t.Errorf("the public listener serves %s", k)
		}
	}
	for _, p := range []string{"/metrics", "/v1/admin/readyz", "/v1/admin/backup", "/v1/admin/firebase/blocked", "/v1/admin/users/alice"} {
		if r := h.Admin("GET", p, nil); r.Status != 404 {
			t.Errorf("public GET %s with the admin key = %d %s, want 404", p, r.Status, r.Body)
		}
	}
	// The admin listener does serve them.
	got := echoSet(h.srv.Admin)
	for _, k := range []string{"GET /metrics", "GET /v1/admin/readyz", "GET /v1/admin/backup"} {
		if !got[k] {
			t.Errorf("the admin listener does not serve %s", k)
		}
	}
}
