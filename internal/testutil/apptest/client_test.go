package apptest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// echoHandler answers the request's method, Authorization, Content-Type,
// RemoteAddr and body in an error body, so every part can be checked.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Auth", r.Header.Get("Authorization"))
	w.Header().Set("X-Type", r.Header.Get("Content-Type"))
	w.Header().Set("X-Addr", r.RemoteAddr)
	w.WriteHeader(http.StatusTeapot)
	_, _ = w.Write([]byte(`{"error":{"code":"` + r.Method + `","message":` + string(b) + `}}`))
}

func TestClient(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(echoHandler))
	t.Cleanup(hs.Close)
	for name, c := range map[string]*Client{
		"network":    {T: t, URL: hs.URL, Unchecked: true},
		"in process": {T: t, Handler: http.HandlerFunc(echoHandler), Unchecked: true},
	} {
		t.Run(name, func(t *testing.T) {
			r := c.Admin("PUT", "/x", `"hello"`)
			Want(t, r, http.StatusTeapot, "PUT")
			if r.Message() != "hello" || r.Header.Get("X-Auth") != "Bearer "+AdminKey || r.Header.Get("X-Type") != "application/json" {
				t.Fatalf("got %s %v", r.Body, r.Header)
			}
			r = c.Do("GET", "/x", nil, "Authorization", "Basic x")
			if r.Header.Get("X-Auth") != "Basic x" || r.Header.Get("X-Type") != "" {
				t.Fatalf("GET without a body: %v", r.Header)
			}
			r = c.Bearer("POST", "/x", "tok", map[string]string{"a": "b"})
			var got struct {
				Error struct {
					Message map[string]string `json:"message"`
				} `json:"error"`
			}
			r.Decode(t, &got)
			if got.Error.Message["a"] != "b" || r.Header.Get("X-Auth") != "Bearer tok" {
				t.Fatalf("JSON body: %s %v", r.Body, r.Header)
			}
			if m := r.Map(t); m["error"] == nil {
				t.Fatalf("Map: %v", m)
			}
		})
	}
	c := &Client{T: t, Handler: http.HandlerFunc(echoHandler), Unchecked: true, Prepare: func(r *http.Request) { r.RemoteAddr = "192.0.2.1:1" }}
	if r := c.Send("GET", "/", nil); r.Header.Get("X-Addr") != "192.0.2.1:1" {
		t.Fatalf("Prepare not applied: %q", r.Header.Get("X-Addr"))
	}
	if r := c.Send("GET", "/", nil, func(r *http.Request) { r.RemoteAddr = "192.0.2.2:2" }); r.Header.Get("X-Addr") != "192.0.2.2:2" {
		t.Fatalf("a call's change must come after Prepare: %q", r.Header.Get("X-Addr"))
	}
}

func TestReplyNotAnError(t *testing.T) {
	r := Reply{Status: 200, Body: []byte(`{"ok":true}`)}
	if r.Code() != "" || r.Message() != "" {
		t.Fatalf("code %q message %q for a success body", r.Code(), r.Message())
	}
}

// recorder is a testing.TB that keeps what Errorf reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestClientChecksTheWire: a Client fails the test when an exchange is not
// what openapi.yaml describes — an undocumented member, an undocumented
// status, an undocumented route that answers, a request the document
// calls invalid that is accepted — and passes a documented one.
func TestClientChecksTheWire(t *testing.T) {
	answer := func(status int, body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Request-Id", "r1")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		})
	}
	key := `{"hpkePublicKey":"AAAA","suite":"MLKEM768-X25519-HKDF-SHA256-AES-256-GCM"}`
	for _, tc := range []struct {
		name, method, path, body string
		h                        http.Handler
		want                     string // "" : passes
	}{
		{"documented", "GET", "/v1/appliance-key", "", answer(200, key), ""},
		{"documented error", "GET", "/v1/appliance-key", "", answer(429, `{"error":{"code":"rate_limited","message":"m"}}`), ""},
		{"undocumented member", "GET", "/v1/appliance-key", "", answer(200, key[:len(key)-1]+`,"extra":1}`), "does not match"},
		{"undocumented status", "GET", "/v1/appliance-key", "", answer(201, key), "status 201 is not documented"},
		{"code of another status", "GET", "/v1/appliance-key", "", answer(429, `{"error":{"code":"sealed","message":"m"}}`), "does not match"},
		{"undocumented route", "GET", "/v1/nothing", "", answer(200, `{}`), "not in openapi.yaml"},
		{"refused undocumented route", "GET", "/v1/nothing", "", answer(404, `{"error":{"code":"route_not_found","message":"m"}}`), ""},
		{"invalid request accepted", "PUT", "/v1/firebase/key", `{"key":"AAAA","bogus":1}`, answer(201, ``), "calls invalid"},
		{"credential missing, accepted", "DELETE", "/v1/firebase/key", "", answer(204, ``), "calls invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			c := &Client{T: rec, Handler: tc.h}
			var body any
			if tc.body != "" {
				body = tc.body
			}
			if tc.method == "PUT" {
				c.Bearer(tc.method, tc.path, "tok", body)
			} else {
				c.Do(tc.method, tc.path, body)
			}
			got := strings.Join(rec.errs, "\n")
			if tc.want == "" && got != "" {
				t.Fatalf("a documented exchange failed: %s", got)
			}
			if tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("want a failure %q, got %q", tc.want, got)
			}
		})
	}
}
