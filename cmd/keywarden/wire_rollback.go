package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/server"
)

// wireRollback opens the rollback counter before the server serves (and
// before anything else writes the store): a store older than the counter
// (ErrRolledBack) or whose records are not the ones its rollback record
// vouches for (ErrRecordsAltered) does not start unless acceptRollback
// (serve's -accept-rollback), which is audited. From then on every store
// write advances the generation in its own transaction. The Rollback is
// closed (pending increment flushed) at shutdown.
func wireRollback(acceptRollback bool) wireStep {
	return func(ctx context.Context, a *appliance, opts *server.Options) error {
		return rollbackWireStep(ctx, a, opts, acceptRollback)
	}
}

func rollbackWireStep(ctx context.Context, a *appliance, opts *server.Options, acceptRollback bool) error {
	rb, err := openApplianceRollback(ctx, a, acceptRollback)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, func() {
		if err := rb.Close(); err != nil {
			a.log.Error("rollback counter: final increment failed (the next start catches it up)", "err", err)
		}
	})
	opts.Degraded = append(opts.Degraded, server.Check{Name: "rollback_counter", Run: func(context.Context) error {
		if st := rb.Status(); !st.Available {
			return errors.New("the TPM rollback counter is unavailable: a restored old store would not be detected")
		}
		return nil
	}})
	opts.Degraded = append(opts.Degraded, server.Check{Name: "rollback_records", Run: func(context.Context) error {
		if st := rb.Status(); st.Altered != "" {
			return fmt.Errorf("serving stopped: %s; restore the newest backup, or accept this store with `keywarden rollback accept`", st.Altered)
		}
		return nil
	}})
	if !a.cfg.Dev {
		if _, err := enclave.LoadRecovery(ctx, a.db); errors.Is(err, enclave.ErrNoRecoveryRecord) {
			a.log.Error("this store has NO recovery shares: a dead TPM would lose every key; run `keywarden recovery reshare`")
			opts.Degraded = append(opts.Degraded, server.Check{Name: "recovery_shares", Run: func(context.Context) error {
				return errors.New("no recovery shares recorded: run `keywarden recovery reshare`")
			}})
		}
	}
	if a.metrics != nil {
		a.metrics.CounterFunc("keywarden_rollback_nv_increments_total", "Increments of the TPM's rollback NV counter (at most one per rollback.min_interval; NV writes wear the TPM).", func() float64 { return float64(rb.Increments()) })
	}
	opts.Rollback = rb
	return nil
}

// openApplianceRollback runs OpenRollback for serve and audits an override.
func openApplianceRollback(ctx context.Context, a *appliance, accept bool) (*enclave.Rollback, error) {
	rb, err := enclave.OpenRollback(ctx, a.tpm, a.db, a.root, enclave.RollbackOptions{AcceptRollback: accept, Dev: a.cfg.Dev, Logger: a.log, Interval: a.cfg.Rollback.MinInterval, Node: a.cfg.Rollback.Node})
	if err != nil {
		return nil, fmt.Errorf("rollback check: %w", err)
	}
	st := rb.Status()
	a.log.Info("rollback counter", "event", st.Event, "generation", st.Generation, "counter", st.Counter, "available", st.Available, "records", st.Records, "checking", st.Checking, "node", st.Node, "cluster_generation", st.ClusterGeneration, "detail", st.Detail)
	if ev := rollbackAudit(st); ev != nil {
		if a.audit == nil {
			_ = rb.Close()
			return nil, errors.New("rollback check: cannot audit the rollback override")
		}
		if err := a.audit.Record(ctx, *ev); err != nil {
			_ = rb.Close()
			return nil, fmt.Errorf("rollback check: audit the override: %w", err)
		}
	}
	return rb, nil
}
