package server

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/apivalidate"
	"github.com/keywarden/keywarden/server/apidoc"
)

// docRoutes is what a routes table says a listener serves, in the
// document's form ("METHOD /path/{param}"): every row, whether its
// capability is on or not, without the sealed catch-alls (Any).
func docRoutes(routes []Route) map[string]bool {
	set := map[string]bool{}
	for _, r := range routes {
		if r.Method == Any {
			continue
		}
		set[r.Method+" "+apidoc.PathOf(r.Path)] = true
	}
	return set
}

// documented is what the document says listener serves ("METHOD /path").
func documented(d apidoc.Doc, listener string) map[string]bool {
	set := map[string]bool{}
	for p, item := range d.Paths() {
		if !apidoc.Serves(listener, apidoc.ListenerOf(item)) {
			continue
		}
		for k := range item.(map[string]any) {
			if m := strings.ToUpper(k); slices.Contains([]string{"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"}, m) {
				set[m+" "+p] = true
			}
		}
	}
	return set
}

// docMismatch lists the routes of a listener's table the document lacks
// and the documented routes of that listener its table lacks.
func docMismatch(listener string, table []Route, d apidoc.Doc) []string {
	want, got := docRoutes(table), documented(d, listener)
	var out []string
	for _, k := range missing(want, got) {
		out = append(out, listener+" listener serves "+k+", openapi.yaml does not document it")
	}
	for _, k := range missing(got, want) {
		out = append(out, "openapi.yaml documents "+k+" on the "+listener+" listener, which has no such route")
	}
	return out
}

// TestOpenAPIDocumentsEveryRoute: every row of each routes table is a
// documented path and method of that listener in openapi.yaml, and every
// documented one is a row of the listener's table; a path documented for
// both listeners is in both tables.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	h := newHarness(t, func(c *config.Config, _ *Options) { c.Listen.AdminAddr = "127.0.0.1:1" })
	d, err := apidoc.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range append(docMismatch(apidoc.Public, h.srv.PublicRoutes(), d), docMismatch(apidoc.Admin, h.srv.AdminRoutes(), d)...) {
		t.Error(m)
	}
	for p, item := range d.Paths() {
		if l := apidoc.ListenerOf(item); l != apidoc.Public && l != apidoc.Admin && l != apidoc.Both {
			t.Errorf("openapi.yaml: %s has x-listener %q, want public, admin or both", p, l)
		}
	}

	// The check can fail: a route added to a table without the document,
	// and a documented route removed from a table, are both found.
	extra := append(h.srv.PublicRoutes(), Route{Method: http.MethodPost, Path: "/v1/firebase/key/rotate"})
	if m := docMismatch(apidoc.Public, extra, d); len(m) != 1 || !strings.Contains(m[0], "POST /v1/firebase/key/rotate") {
		t.Errorf("an undocumented route was not found: %v", m)
	}
	var fewer []Route
	for _, r := range h.srv.AdminRoutes() {
		if r.Path != "/v1/admin/backup" {
			fewer = append(fewer, r)
		}
	}
	if m := docMismatch(apidoc.Admin, fewer, d); len(m) != 1 || !strings.Contains(m[0], "GET /v1/admin/backup") {
		t.Errorf("a documented route without a table row was not found: %v", m)
	}
}

// TestOpenAPIServedPerListener: GET /openapi.json on each listener is the
// document with that listener's paths only (the public one shows no admin
// path), and it is valid OpenAPI; one listener shows both.
func TestOpenAPIServedPerListener(t *testing.T) {
	h := newHarness(t, func(c *config.Config, _ *Options) { c.Listen.AdminAddr = "127.0.0.1:1" })
	d, err := apidoc.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct {
		name string
		srv  http.Handler
	}{{apidoc.Public, h.srv.Public}, {apidoc.Admin, h.srv.Admin}} {
		c := *h.Client
		c.Handler = l.srv
		r := c.Do("GET", "/openapi.json", nil)
		if r.Status != 200 {
			t.Fatalf("%s: GET /openapi.json = %d %s", l.name, r.Status, r.Body)
		}
		if _, err := apivalidate.New(r.Body); err != nil {
			t.Fatalf("%s: the served document: %v", l.name, err)
		}
		var served apidoc.Doc
		if err := json.Unmarshal(r.Body, &served); err != nil {
			t.Fatal(err)
		}
		got, want := documented(served, apidoc.Both), documented(d, l.name)
		if m := append(missing(got, want), missing(want, got)...); len(m) > 0 {
			t.Errorf("%s listener's /openapi.json differs from its paths in openapi.yaml: %v", l.name, m)
		}
		for k := range got {
			p := k[strings.Index(k, " ")+1:]
			if admin := strings.HasPrefix(p, "/v1/admin") || p == "/metrics"; admin && l.name == apidoc.Public {
				t.Errorf("the public listener's /openapi.json shows %s", k)
			}
			if of := apidoc.ListenerOf(d.Paths()[p]); of != l.name && of != apidoc.Both {
				t.Errorf("%s listener's /openapi.json shows %s of the %s listener", l.name, k, of)
			}
		}
	}

	one := newHarnessNoCore(t, h)
	c := *h.Client
	c.Handler = one.Public
	var served apidoc.Doc
	c.Do("GET", "/openapi.json", nil).Decode(t, &served)
	if len(served.Paths()) != len(d.Paths()) {
		t.Errorf("one listener: /openapi.json has %d paths, the document %d", len(served.Paths()), len(d.Paths()))
	}
}

// newHarnessNoCore is a second server over h's store and audit log with
// one listener (only one TPM simulator per process).
func newHarnessNoCore(t *testing.T, h *harness) *Server {
	t.Helper()
	o := h.srv.opts
	o.Config.Listen.AdminAddr = o.Config.Listen.Addr
	o.Metrics = nil
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOpenAPIErrorCodes: every error code the code can answer with
// (apierr.New with a constant status and code, anywhere in the module but
// tests) is listed, with its status, in the document: the response of
// that status carries it in its code enum, and the ErrorCode schema lists
// it. A new code or a code moved to another status fails until the
// document says so.
func TestOpenAPIErrorCodes(t *testing.T) {
	v, err := apivalidate.Default()
	if err != nil {
		t.Fatal(err)
	}
	enumOf := func(status int) []string {
		for _, r := range v.Doc.Components.Responses {
			if r.Value == nil || r.Value.Content.Get("application/json") == nil {
				continue
			}
			s := r.Value.Content.Get("application/json").Schema
			if s == nil || s.Value == nil {
				continue
			}
			// The response's own schema narrows Error's code to its enum.
			if e := s.Value.Properties["error"]; e != nil && e.Value != nil {
				if c := e.Value.Properties["code"]; c != nil && c.Value != nil && statusOf(r.Value) == status {
					var out []string
					for _, x := range c.Value.Enum {
						out = append(out, x.(string))
					}
					return out
				}
			}
		}
		return nil
	}
	all := map[string]bool{}
	for _, x := range v.Doc.Components.Schemas["ErrorCode"].Value.Enum {
		all[x.(string)] = true
	}
	found := sourceCodes(t)
	if len(found) < 50 {
		t.Fatalf("found only %d error codes in the source", len(found))
	}
	for _, f := range found {
		if !all[f.code] {
			t.Errorf("%s: code %q is not in openapi.yaml's ErrorCode", f.pos, f.code)
		}
		if !slices.Contains(enumOf(f.status), f.code) {
			t.Errorf("%s: code %q (status %d) is not among the codes of openapi.yaml's %d response", f.pos, f.code, f.status, f.status)
		}
	}
}

// statusOf is the status a component response documents, from its
// x-status extension.
func statusOf(r interface{ MarshalJSON() ([]byte, error) }) int {
	b, _ := r.MarshalJSON()
	var m struct {
		Status int `json:"x-status"`
	}
	_ = json.Unmarshal(b, &m)
	return m.Status
}

type foundCode struct {
	pos    string
	code   string
	status int
}

// sourceCodes finds apierr.New(status, "code", …) (and New inside package
// apierr, and the Firebase verifier's unauthorized("code", …)) in every
// non-test Go file of the module.
func sourceCodes(t *testing.T) []foundCode {
	t.Helper()
	var out []foundCode
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && (e.Name() == "tools" || e.Name() == "node_modules" || e.Name() == "e2e" || e.Name() == "benchtools" || strings.HasPrefix(e.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		inApierr := f.Name.Name == "apierr"
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			name := ""
			switch fn := call.Fun.(type) {
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok && x.Name == "apierr" && fn.Sel.Name == "New" {
					name = "New"
				}
			case *ast.Ident:
				if (inApierr && fn.Name == "New") || (f.Name.Name == "firebase" && fn.Name == "unauthorized") {
					name = fn.Name
				}
			}
			if name == "" {
				return true
			}
			status, codeArg := http.StatusUnauthorized, 0
			if name == "New" {
				if len(call.Args) < 2 {
					return true
				}
				s, ok := constStatus(call.Args[0])
				if sel, isSel := call.Args[0].(*ast.SelectorExpr); isSel && !ok && strings.HasPrefix(sel.Sel.Name, "Status") {
					t.Errorf("%s: add %s to statusNames", fset.Position(call.Pos()), sel.Sel.Name)
				}
				if !ok {
					return true // a computed status (echo's own 4xx)
				}
				status, codeArg = s, 1
			}
			lit, ok := call.Args[codeArg].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			code, _ := strconv.Unquote(lit.Value)
			out = append(out, foundCode{pos: fset.Position(call.Pos()).String(), code: code, status: status})
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var statusNames = map[string]int{
	"StatusBadRequest": 400, "StatusUnauthorized": 401, "StatusForbidden": 403, "StatusNotFound": 404,
	"StatusMethodNotAllowed": 405, "StatusConflict": 409, "StatusGone": 410, "StatusRequestEntityTooLarge": 413,
	"StatusUnsupportedMediaType": 415, "StatusTooManyRequests": 429, "StatusInternalServerError": 500,
	"StatusBadGateway": 502, "StatusServiceUnavailable": 503,
}

func constStatus(e ast.Expr) (int, bool) {
	switch x := e.(type) {
	case *ast.SelectorExpr:
		s, ok := statusNames[x.Sel.Name]
		return s, ok
	case *ast.BasicLit:
		n, err := strconv.Atoi(x.Value)
		return n, err == nil
	}
	return 0, false
}
