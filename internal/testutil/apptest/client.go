package apptest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/apivalidate"
)

// Client sends test requests to an appliance at URL, or in process to
// Handler.
type Client struct {
	T        testing.TB
	URL      string       // base URL, no trailing slash
	HTTP     *http.Client // nil: http.DefaultClient
	AdminKey string       // what Admin sends; "" means AdminKey
	Header   http.Header  // set on every request, before the call's own headers

	// Handler, when not nil, serves the requests in process (through an
	// httptest.ResponseRecorder; URL and HTTP are not used).
	Handler http.Handler
	// Prepare, when not nil, changes every request before the call's own
	// changes (e.g. RemoteAddr for an in-process Handler).
	Prepare func(*http.Request)
	// Unchecked skips the check against openapi.yaml: only for the
	// Client's own tests, whose handler is not the appliance.
	Unchecked bool
}

// checkExchange fails the test when a request and its answer are not what
// the API document (openapi.yaml) describes (package apivalidate): every
// test that talks to the appliance through a Client checks the wire.
func checkExchange(t testing.TB, req *http.Request, reqBody []byte, r Reply) {
	t.Helper()
	v, err := apivalidate.Default()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Check(req, reqBody, r.Status, r.Header, r.Body); err != nil {
		t.Errorf("openapi: %v", err)
	}
}

// Reply is an answer as received.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends body (nil, a string, []byte, or a value encoded as JSON) with
// the header pairs (name, value, name, value…) and returns the answer. A
// request with a body has Content-Type application/json.
func (c *Client) Do(method, path string, body any, headers ...string) Reply {
	c.T.Helper()
	return c.Send(method, path, body, func(req *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
	})
}

// Send is Do with functions that change the request last.
func (c *Client) Send(method, path string, body any, mods ...func(*http.Request)) Reply {
	c.T.Helper()
	var rd io.Reader
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
		rd = strings.NewReader(b)
	case []byte:
		raw = b
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.T.Fatal(err)
		}
		raw = j
		rd = bytes.NewReader(j)
	}
	var req *http.Request
	if c.Handler != nil {
		req = httptest.NewRequest(method, path, rd)
	} else {
		var err error
		if req, err = http.NewRequest(method, c.URL+path, rd); err != nil {
			c.T.Fatal(err)
		}
	}
	for k, vs := range c.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Prepare != nil {
		c.Prepare(req)
	}
	for _, m := range mods {
		m(req)
	}
	if c.Handler != nil {
		rec := httptest.NewRecorder()
		c.Handler.ServeHTTP(rec, req)
		r := Reply{rec.Code, rec.Header(), rec.Body.Bytes()}
		if !c.Unchecked {
			checkExchange(c.T, req, raw, r)
		}
		return r
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		c.T.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := Reply{resp.StatusCode, resp.Header, b}
	if !c.Unchecked {
		checkExchange(c.T, req, raw, r)
	}
	return r
}

// Bearer sends the request with "Authorization: Bearer token".
func (c *Client) Bearer(method, path, token string, body any, headers ...string) Reply {
	c.T.Helper()
	return c.Do(method, path, body, append([]string{"Authorization", "Bearer " + token}, headers...)...)
}

// Admin sends the request with the admin key.
func (c *Client) Admin(method, path string, body any) Reply {
	c.T.Helper()
	key := c.AdminKey
	if key == "" {
		key = AdminKey
	}
	return c.Bearer(method, path, key, body)
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Code is the error code of an error answer ("" otherwise).
func (r Reply) Code() string {
	var e errorBody
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

// Message is the public message of an error answer ("" otherwise).
func (r Reply) Message() string {
	var e errorBody
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Message
}

// Decode decodes the JSON body into v or fails the test.
func (r Reply) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Map decodes the JSON object body or fails the test.
func (r Reply) Map(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %s", r.Status, r.Body)
	}
	return m
}

// DecodeStrict decodes like Decode but fails on members v does not have.
func (r Reply) DecodeStrict(t testing.TB, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Want fails unless r has status (and code, when not empty).
func Want(t testing.TB, r Reply, status int, code string) {
	t.Helper()
	if r.Status != status || (code != "" && r.Code() != code) {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Body, status, code)
	}
}
