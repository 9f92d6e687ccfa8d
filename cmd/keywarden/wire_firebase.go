package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/sysclock"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/firebase"
)

// wireFirebase builds the native Firebase key handlers (server/firebase,
// over the keys service and the block list) and, when
// firebase.project_ids is set, starts the ID-token verifier (it fetches
// Google's certificates) and reports stale certificates in /readyz as
// degraded. Without a verifier the routes answer 503
// firebase_not_configured.
func wireFirebase(ctx context.Context, a *appliance, opts *server.Options) error {
	ho := firebase.HTTPOptions{Keys: opts.Keys, Blocked: opts.BlockList.Has, OverwriteMaxAuthAge: a.cfg.Firebase.OverwriteMaxAuthAge,
		Events: audit.NewOwnerIndex(a.cfg.Audit.Dir)} // GET /v1/me/events reads the log itself
	if len(a.cfg.Firebase.ProjectIDs) == 0 {
		return newFirebaseHTTP(ho, opts)
	}
	v, err := firebase.New(ctx, firebaseOptions(a.cfg.Firebase))
	if err != nil {
		return fmt.Errorf("firebase: %w", err)
	}
	a.closers = append(a.closers, v.Close)
	a.firebase = v
	ho.Verifier = v
	if err := newFirebaseHTTP(ho, opts); err != nil {
		return err
	}
	opts.Degraded = append(opts.Degraded, server.Check{Name: "firebase_keys", Run: func(context.Context) error {
		if st := v.KeySetStatus(); st.Degraded {
			return errors.New("google's certificates are stale or unavailable")
		}
		return nil
	}})
	return nil
}

func newFirebaseHTTP(o firebase.HTTPOptions, opts *server.Options) error {
	h, err := firebase.NewHTTP(o)
	if err != nil {
		return fmt.Errorf("firebase: %w", err)
	}
	opts.Firebase = h
	return nil
}

// wireClockCheck reports a wrong system clock in /readyz: against Google's
// Date header when the Firebase verifier runs (wireFirebase, before it).
func wireClockCheck(_ context.Context, a *appliance, opts *server.Options) error {
	var clockSkew func() (time.Duration, time.Time, bool)
	if a.firebase != nil {
		clockSkew = a.firebase.ClockSkew
	}
	opts.Degraded = append(opts.Degraded, server.ClockCheck(sysclock.Read, clockSkew, a.cfg.Firebase.Leeway))
	return nil
}
