package apptest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Client sends test requests to an appliance at URL.
type Client struct {
	T        testing.TB
	URL      string       // base URL, no trailing slash
	HTTP     *http.Client // nil: http.DefaultClient
	AdminKey string       // what Admin sends; "" means AdminKey
	Header   http.Header  // set on every request, before the call's own headers
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
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.T.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.URL+path, rd)
	if err != nil {
		c.T.Fatal(err)
	}
	for k, vs := range c.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
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
	return Reply{resp.StatusCode, resp.Header, b}
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
