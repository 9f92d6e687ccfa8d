package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/testutil/apptest"
)

// maxMiddlewareAllocs bounds the allocations of a request through the
// public listener's middleware (request id, panic recovery, metrics,
// concurrency cap, body limit, per-address rate limit) to a handler that
// does nothing, the recorder's own included. Every release pays them.
const maxMiddlewareAllocs = 13

// TestMiddlewareAllocations counts what the middleware costs a client
// route: no closures, maps or label look-ups made per request.
func TestMiddlewareAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations of its own")
	}
	h := newHarnessOn(t, []apptest.CoreOption{apptest.Receipts()})
	mount(h.srv.Public, h.srv.client, []Route{{Method: http.MethodGet, Path: "/v1/test-noop", Handler: func(c echo.Context) error {
		return c.NoContent(http.StatusNoContent)
	}}})
	req := httptest.NewRequest(http.MethodGet, "/v1/test-noop", nil)
	req.RemoteAddr = "192.0.2.7:4711"
	serve := func() {
		rec := httptest.NewRecorder()
		h.srv.Public.ServeHTTP(rec, req)
		if rec.Code != http.StatusNoContent || rec.Header().Get("X-Request-Id") == "" {
			t.Fatalf("noop: %d, request id %q", rec.Code, rec.Header().Get("X-Request-Id"))
		}
	}
	serve()
	n := testing.AllocsPerRun(200, serve)
	t.Logf("%.0f allocations per request", n)
	if n > maxMiddlewareAllocs {
		t.Errorf("a request through the middleware costs %.0f allocations, want at most %d", n, maxMiddlewareAllocs)
	}
}
