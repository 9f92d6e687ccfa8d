package apptest

import (
	"io"
	"net/http"
	"net/http/httptest"
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
		"network":    {T: t, URL: hs.URL},
		"in process": {T: t, Handler: http.HandlerFunc(echoHandler)},
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
	c := &Client{T: t, Handler: http.HandlerFunc(echoHandler), Prepare: func(r *http.Request) { r.RemoteAddr = "192.0.2.1:1" }}
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
