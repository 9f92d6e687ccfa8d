//go:build !cgo

package main

import (
	"context"

	"github.com/keywarden/keywarden/server"
)

// Release builds (CGO_ENABLED=0) contain neither the demo page nor the
// profiler: their wire steps do nothing there (see wire_demo.go and
// wire_pprof.go).

func wireDemo(context.Context, *appliance, *server.Options) error  { return nil }
func wirePprof(context.Context, *appliance, *server.Options) error { return nil }
