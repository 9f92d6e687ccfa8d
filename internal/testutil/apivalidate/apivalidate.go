// Package apivalidate checks HTTP exchanges with the appliance against its
// API document (openapi.yaml at the repository root) with kin-openapi:
// the in-process client of the server tests (apptest.Client) and the
// end-to-end tests' HTTP clients pass every request and answer through it,
// so a wire change the document does not describe fails the tests.
//
// The rules of [Validator.Check]:
//   - a CORS preflight (OPTIONS answered 204 without a body) and a 404
//     route_not_found (a capability that is off, the other listener's
//     path) are fine on any path;
//   - a request to a path and method the document does not have must be
//     refused with an error answer ({"error":{…}}, status 4xx or 503): an
//     undocumented route that answers anything else is a failure;
//   - the status of an answer must be one the operation documents (no
//     default responses), and its body and headers must match that
//     response's schema (error codes included: each status lists its codes);
//   - a request the document calls invalid (a missing credential, a body
//     of the wrong shape, a missing parameter) must be refused (4xx or
//     5xx): the server accepting it means the document and the server
//     disagree. Tests send invalid requests on purpose; only their
//     acceptance is a failure.
package apivalidate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/keywarden/keywarden"
)

// Validator checks exchanges against one document.
type Validator struct {
	Doc    *openapi3.T
	router routers.Router
	errSch *openapi3.Schema
}

var (
	once    sync.Once
	shared  *Validator
	loadErr error
)

// Default is the validator of the embedded openapi.yaml, loaded once.
func Default() (*Validator, error) {
	once.Do(func() { shared, loadErr = New(keywarden.OpenAPIYAML) })
	return shared, loadErr
}

// New loads and validates a document (YAML or JSON).
func New(doc []byte) (*Validator, error) {
	l := openapi3.NewLoader()
	d, err := l.LoadFromData(doc)
	if err != nil {
		return nil, fmt.Errorf("apivalidate: load: %w", err)
	}
	if err := d.Validate(l.Context); err != nil {
		return nil, fmt.Errorf("apivalidate: the document is invalid: %w", err)
	}
	// The document's server is dev mode's address; tests serve on others.
	d.Servers = nil
	r, err := gorillamux.NewRouter(d)
	if err != nil {
		return nil, fmt.Errorf("apivalidate: router: %w", err)
	}
	es := d.Components.Schemas["Error"]
	if es == nil || es.Value == nil {
		return nil, errors.New("apivalidate: the document has no Error schema")
	}
	return &Validator{Doc: d, router: r, errSch: es.Value}, nil
}

// Check validates one exchange: the request as sent (reqBody its body, the
// request's own Body is not read) and the answer as received. It returns
// nil when the exchange is what the document describes.
func (v *Validator) Check(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	ctx := context.Background()
	r := req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	r.ContentLength = int64(len(reqBody))
	if len(reqBody) > 0 && r.Header.Get("Content-Type") == "" {
		// The server takes an absent Content-Type as JSON (the document
		// says so); kin-openapi would not.
		r.Header.Set("Content-Type", "application/json")
	}
	what := req.Method + " " + req.URL.RequestURI()
	if req.Method == http.MethodOptions && status == http.StatusNoContent && len(body) == 0 {
		return nil // CORS preflight, answered by the client routes' CORS layer on any path
	}
	if status == http.StatusNotFound && (req.Method == http.MethodHead || v.code(body) == "route_not_found") {
		return nil // a route of a capability that is off, or of the other listener
	}
	route, params, err := v.router.FindRoute(r)
	if err != nil {
		// Not a documented route: only a refusal is fine.
		if status >= 400 && status != 500 && (req.Method == http.MethodHead || v.isError(body)) {
			return nil
		}
		return fmt.Errorf("%s: not in openapi.yaml, yet answered %d %.200s", what, status, body)
	}
	in := &openapi3filter.RequestValidationInput{
		Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: authenticate, MultiError: false},
	}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	op := route.Operation
	if op.Responses.Status(status) == nil {
		return fmt.Errorf("%s (operation %s): status %d is not documented; body %.300s", what, op.OperationID, status, body)
	}
	if reqErr != nil && status < 400 {
		return fmt.Errorf("%s (operation %s): the server answered %d to a request openapi.yaml calls invalid: %v", what, op.OperationID, status, reqErr)
	}
	ct, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	in.Request.Body = io.NopCloser(bytes.NewReader(reqBody))
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: status, Header: header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true,
			// Only JSON bodies are checked member by member; other
			// content types (the backup, metrics, demo files) by type.
			ExcludeResponseBody: ct != "application/json"},
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%s (operation %s): the %d answer does not match openapi.yaml: %v", what, op.OperationID, status, err)
	}
	if ct != "application/json" && req.Method != http.MethodHead && len(body) > 0 {
		if resp := op.Responses.Status(status).Value; resp.Content.Get(ct) == nil {
			return fmt.Errorf("%s (operation %s): the %d answer's Content-Type %q is not documented", what, op.OperationID, status, ct)
		}
	}
	return nil
}

// code is the error code of an error body ("" otherwise).
func (v *Validator) code(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// isError reports whether body is the API's error object.
func (v *Validator) isError(body []byte) bool {
	var x any
	if json.Unmarshal(body, &x) != nil {
		return false
	}
	return v.errSch.VisitJSON(x, openapi3.EnableJSONSchema2020()) == nil
}

// authenticate checks that the request carries the credential a security
// scheme names (its validity is the server's business).
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s := in.SecurityScheme
	h := in.RequestValidationInput.Request.Header
	switch s.Type {
	case "http":
		scheme, tok, ok := strings.Cut(h.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, s.Scheme) || strings.TrimSpace(tok) == "" {
			return fmt.Errorf("no %s credential (%s)", s.Scheme, in.SecuritySchemeName)
		}
	case "apiKey":
		if s.In == "header" && h.Get(s.Name) == "" {
			return fmt.Errorf("no %s header (%s)", s.Name, in.SecuritySchemeName)
		}
	}
	return nil
}

// Transport is an http.RoundTripper that checks every exchange through
// next (nil: http.DefaultTransport) and reports each failure to report
// (a test's Errorf). The answer is passed on unchanged.
func (v *Validator) Transport(next http.RoundTripper, report func(format string, args ...any)) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &transport{v: v, next: next, report: report}
}

type transport struct {
	v      *Validator
	next   http.RoundTripper
	report func(format string, args ...any)
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.ContentLength = int64(len(b))
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	// Streams (a backup) are checked by status and type only.
	var body []byte
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	if resp.Header.Get("X-Request-Id") == "" {
		// Every answer of the appliance's handlers carries X-Request-Id
		// (its first middleware sets it); one without came from something in front
		// (a load balancer with no backend up) or from Go's HTTP server
		// refusing before any handler ran (431 for oversized headers).
		return resp, nil
	}
	if err := t.v.Check(req, reqBody, resp.StatusCode, resp.Header, body); err != nil {
		t.report("openapi: %v", err)
	}
	return resp, nil
}
