//go:build cgo

// The demo page exists only in development builds (cgo, like the TPM
// simulator that `keywarden dev` needs): release builds (CGO_ENABLED=0)
// do not contain it, and development builds serve it only in dev mode.

package main

import (
	"context"
	"fmt"

	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/demo"
)

// wireDemo serves the passkey demo page at /demo/ in dev mode, with its
// dev-only session endpoint (see package demo).
func wireDemo(_ context.Context, a *appliance, opts *server.Options) error {
	if !a.cfg.Dev || a.cfg.Passkey.RPID == "" || opts.Sessions == nil {
		return nil
	}
	d, err := demo.New(demo.Options{Sessions: opts.Sessions, Origins: a.cfg.Passkey.Origins, Audit: opts.Audit, TTL: a.cfg.Session.TTL})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	opts.Demo = d
	a.log.Warn("dev mode: passkey demo page at <origin>/demo/ (its /demo/session mints session tokens for any user id; dev only)",
		"origins", a.cfg.Passkey.Origins)
	return nil
}
