//go:build cgo

package main

import (
	"context"
	"net/http"
	"net/http/pprof"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/server"
)

// wirePprof serves Go's profiler under /v1/admin/debug/pprof/ in dev mode
// only (dev builds, loopback, behind the admin key): for developers
// profiling a release path under load (docs/BENCHMARKS.md).
func wirePprof(_ context.Context, a *appliance, opts *server.Options) error {
	if !a.cfg.Dev {
		return nil
	}
	opts.Routes = append(opts.Routes, pprofRoutes{})
	return nil
}

type pprofRoutes struct{}

func (pprofRoutes) RegisterRoutes(_ *server.Server, _, admin *echo.Group) {
	admin.GET("/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile)))
	admin.GET("/debug/pprof/:name", func(c echo.Context) error {
		pprof.Handler(c.Param("name")).ServeHTTP(c.Response(), c.Request())
		return nil
	})
}
