package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/pin"
)

// wirePIN builds the PIN release routes (server/pin) when pin.enabled:
// over the keys service, the Firebase verifier (wireFirebase) and session
// tokens for the owner proof, and the rollback counter (wireRollback,
// before it), which every guess waits for.
func wirePIN(_ context.Context, a *appliance, opts *server.Options) error {
	if !a.cfg.PIN.Enabled {
		return nil
	}
	rb, ok := opts.Rollback.(pin.Counter)
	if !ok || rb == nil {
		return errors.New("pin: the rollback counter is required (wireRollback runs first)")
	}
	svc, err := pin.New(pinOptions(a.cfg.PIN), pin.Deps{DB: a.db, Custody: opts.Custody, Keys: opts.Keys, Rollback: rb, Logger: a.log})
	if err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	h, err := pin.NewHandler(pin.HandlerOptions{Service: svc, Firebase: opts.Firebase, Sessions: opts.Sessions, MaxBodyBytes: a.cfg.Limits.MaxBodyBytes})
	if err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	opts.PIN = h
	opts.Users = append(opts.Users, pin.Users{Service: svc})
	return nil
}

// pinOptions maps the pin section onto the service's options.
func pinOptions(c config.PIN) pin.Options {
	return pin.Options{DefaultGuessLimit: c.DefaultGuessLimit, PendingTTL: c.PendingTTL, RecoveryTTL: c.RecoveryTTL}
}
