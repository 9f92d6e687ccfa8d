package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/clientshares"
	"github.com/keywarden/keywarden/server/custodianapi"
)

// wireCustodian adds the client-share routes (always: they need no Vault)
// and the custodian-share routes. With vault.addr set it builds the Vault
// client and the share service, resumes unfinished rewrap jobs, reports
// Vault in /readyz as a degraded check (never failing readiness,
// decisions/20) and exports Vault and rewrap metrics. Without Vault the custodian
// routes answer 503 custodian_not_configured.
//
// A Vault that refuses the configuration at start (credentials, key not
// derived) does not stop the appliance: passkey and Firebase releases go
// on, the refusal is logged and shown in /readyz, and the custodian routes
// answer it until a restart with a fixed configuration. An invalid vault
// section (or an unreadable CA file) stops start-up.
func wireCustodian(ctx context.Context, a *appliance, opts *server.Options) error {
	cs, err := clientshares.New(clientshares.Options{DB: a.db, Root: a.root, VersionRetention: a.cfg.Keys.VersionRetention})
	if err != nil {
		return fmt.Errorf("client shares: %w", err)
	}
	csh, err := clientshares.NewHandler(cs, opts.Audit)
	if err != nil {
		return err
	}
	opts.ClientShares = csh
	opts.Users = append(opts.Users, csh)

	hopts := custodianapi.Options{DB: a.db, Audit: opts.Audit, Registry: a.metrics.Registry}
	if a.cfg.Vault.Addr == "" {
		a.log.Info("custodian shares are off: vault.addr is not set")
	} else {
		svc, startErr, err := startCustodian(ctx, a)
		if err != nil {
			return err
		}
		if svc != nil {
			hopts.Service = svc
			client := svc.Vault()
			opts.Degraded = append(opts.Degraded, server.Check{Name: "vault", Run: func(ctx context.Context) error {
				if h := client.Health(ctx); !h.OK() {
					return errors.New(h.Reason)
				}
				return nil
			}})
			registerCustodianMetrics(a.metrics, svc)
		} else {
			hopts.Unavailable = startErr
			msg := startErr.Message
			opts.Degraded = append(opts.Degraded, server.Check{Name: "vault", Run: func(context.Context) error {
				return errors.New(msg + " (at start; fix the configuration and restart)")
			}})
		}
	}
	h, err := custodianapi.New(hopts)
	if err != nil {
		return err
	}
	opts.Custodian = h
	opts.Users = append(opts.Users, h)
	return nil
}

// startCustodian builds the client and the service. A Vault refusal at
// start is returned as startErr with a nil service; err is a configuration
// error that stops start-up.
func startCustodian(ctx context.Context, a *appliance) (svc *custodian.Service, startErr *apierr.Error, err error) {
	o := custodianOptions(a.cfg.Vault)
	o.Logger = a.log
	if o.Auth == custodian.AuthTPMCert {
		key, e := loadVaultClientKey(ctx, a)
		if e != nil {
			// Another machine's store, or no key yet: keep serving the rest.
			a.log.Error("custodian shares unavailable: no usable Vault client key in this TPM", "code", e.Code, "err", e)
			return nil, e, nil
		}
		a.closers = append(a.closers, func() { _ = key.Close() })
		o.TPMCert.Key = key
	}
	client, err := custodian.New(ctx, o)
	if err != nil {
		if e, ok := apierr.As(err); ok {
			// Vault answered, but refused us: keep serving everything else.
			a.log.Error("custodian shares unavailable: Vault refused Keywarden's configuration at start", "code", e.Code, "err", err)
			return nil, e, nil
		}
		return nil, nil, fmt.Errorf("vault: %w", err)
	}
	svc = custodian.NewService(client, a.db, custodian.ServiceOptions{VersionRetention: a.cfg.Keys.VersionRetention, Logger: a.log, Root: a.root})
	// Closers run in reverse: the service (its jobs) stops before the client.
	a.closers = append(a.closers, client.Close, svc.Close)
	if err := svc.ResumeJobs(ctx); err != nil {
		return nil, nil, fmt.Errorf("custodian: resume rewrap jobs: %w", err)
	}
	return svc, nil, nil
}

// custodianService finds the custodian share service among the wired
// routes (for capabilities wired after this one, such as Portal's custodian
// webhooks), or the error its routes answer (custodian_not_configured, or
// Vault's refusal at start).
func custodianService(opts *server.Options) (*custodian.Service, error) {
	if h, ok := opts.Custodian.(*custodianapi.Handler); ok {
		return h.Service()
	}
	return nil, custodianapi.ErrNotConfigured
}

// registerCustodianMetrics exports the Vault client's counters and the
// latest rewrap job's progress.
func registerCustodianMetrics(m *metrics.Metrics, svc *custodian.Service) {
	client := svc.Vault()
	stat := func(f func(custodian.Stats) float64) func() float64 {
		return func() float64 { return f(client.Stats()) }
	}
	m.CounterFunc("keywarden_vault_calls_total", "Vault operations started (a batch is one).",
		stat(func(s custodian.Stats) float64 { return float64(s.Calls) }))
	m.CounterFunc("keywarden_vault_failures_total", "Vault operations that failed after their retries.",
		stat(func(s custodian.Stats) float64 { return float64(s.Failures) }))
	m.CounterFunc("keywarden_vault_retries_total", "Vault calls retried after a retryable failure.",
		stat(func(s custodian.Stats) float64 { return float64(s.Retries) }))
	m.GaugeFunc("keywarden_vault_in_flight", "Vault calls running now (at most vault max_concurrent).",
		stat(func(s custodian.Stats) float64 { return float64(s.InFlight) }))
	m.GaugeFunc("keywarden_vault_waiting", "Vault calls waiting for a slot now.",
		stat(func(s custodian.Stats) float64 { return float64(s.Waiting) }))
	m.GaugeFunc("keywarden_vault_in_flight_peak", "Most Vault calls ever running at once.",
		stat(func(s custodian.Stats) float64 { return float64(s.PeakInFlight) }))
	m.GaugeFunc("keywarden_vault_healthy", "1 while Vault answers and accepts Keywarden's token (checked at most every 2 s).", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		if client.Health(ctx).OK() {
			return 1
		}
		return 0
	})

	job := func(f func(custodian.JobStatus) float64) func() float64 {
		return func() float64 { return f(svc.RewrapProgress()) }
	}
	m.GaugeFunc("keywarden_custodian_rewrap_running", "1 while a custodian rewrap job is running.",
		job(func(j custodian.JobStatus) float64 {
			if j.State == custodian.JobRunning {
				return 1
			}
			return 0
		}))
	m.GaugeFunc("keywarden_custodian_rewrap_total", "Ciphertexts the latest rewrap job set out to visit.",
		job(func(j custodian.JobStatus) float64 { return float64(j.Total) }))
	m.GaugeFunc("keywarden_custodian_rewrap_done", "Ciphertexts the latest rewrap job has visited.",
		job(func(j custodian.JobStatus) float64 { return float64(j.Done) }))
	m.GaugeFunc("keywarden_custodian_rewrap_rewrapped", "Ciphertexts the latest rewrap job rewrapped to the latest key version.",
		job(func(j custodian.JobStatus) float64 { return float64(j.Rewrapped) }))
	m.GaugeFunc("keywarden_custodian_rewrap_failed", "Ciphertexts the latest rewrap job could not rewrap (e.g. below min_decryption_version).",
		job(func(j custodian.JobStatus) float64 { return float64(j.Failed) }))
}
