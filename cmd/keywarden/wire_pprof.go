//go:build cgo

package main

import (
	"context"
	"net/http/pprof"

	"github.com/keywarden/keywarden/server"
	"github.com/labstack/echo/v4"
)

// wirePprof serves Go's profiler under /v1/admin/debug/pprof/ in dev mode
// only (dev builds, loopback, behind the admin key): for developers
// profiling a release path under load (docs/BENCHMARKS.md).
func wirePprof(_ context.Context, a *appliance, opts *server.Options) error {
	if a.cfg.Dev {
		opts.Pprof = pprofHandler{}
	}
	return nil
}

// pprofHandler is net/http/pprof as echo handlers.
type pprofHandler struct{}

// Profile is GET /v1/admin/debug/pprof/profile.
func (pprofHandler) Profile(c echo.Context) error {
	pprof.Profile(c.Response(), c.Request())
	return nil
}

// Named is GET /v1/admin/debug/pprof/:name.
func (pprofHandler) Named(c echo.Context) error {
	pprof.Handler(c.Param("name")).ServeHTTP(c.Response(), c.Request())
	return nil
}
