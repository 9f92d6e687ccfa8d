package main

import (
	"context"
	"log/slog"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
)

// openAppliance runs startAppliance's opening steps (TPM, store, PCR
// policy, root key, audit log), in its order, without wiring any
// capability: for tests that wire one themselves.
func openAppliance(ctx context.Context, cfg config.Config, log *slog.Logger) (*appliance, error) {
	a := &appliance{cfg: cfg, log: log, metrics: metrics.New()}
	for _, step := range []func() error{
		func() error { return a.openTPM(ctx) },
		func() error { return a.openStore(ctx) },
		func() error { return a.checkPCRPolicy(ctx) },
		func() error { return a.unsealRoot(ctx) },
		func() error { a.startSigningKey(ctx); return nil },
		func() error { return a.openAudit(ctx) },
	} {
		if err := step(); err != nil {
			a.Close()
			return nil, err
		}
	}
	return a, nil
}
