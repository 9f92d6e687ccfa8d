package main

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/passkey"
)

func wirePasskey(ctx context.Context, a *appliance, opts *server.Options) error {
	if a.cfg.Passkey.RPID == "" {
		return nil
	}
	ks := opts.Keys // wireKeys, before
	svc, err := passkey.NewService(passkeyOptions(a.cfg.Passkey), passkey.Deps{DB: a.db, Custody: opts.Custody, Audit: opts.Audit, Logger: a.log, Keys: ks})
	if err != nil {
		return fmt.Errorf("passkey: %w", err)
	}
	h := &passkey.Handler{Service: svc, Sessions: opts.Sessions, MaxBodyBytes: a.cfg.Limits.MaxBodyBytes,
		Actor: httpx.Actor}
	opts.Passkey = h
	opts.Users = append(opts.Users, passkeyUsers{svc})
	a.passkey = svc
	registerPasskeyMetrics(a, svc)
	return nil
}

// passkeyUsers lists and deletes a user's passkeys with the user.
type passkeyUsers struct{ svc *passkey.Service }

func (passkeyUsers) Name() string { return "passkeys" }

func (u passkeyUsers) DescribeUser(ctx context.Context, userID string) (any, error) {
	ps, err := u.svc.ListPasskeys(ctx, enclave.UserOwner(userID))
	if err != nil || len(ps) == 0 {
		return nil, err
	}
	return ps, nil
}

func (u passkeyUsers) DeleteUser(ctx context.Context, userID string) error {
	_, err := u.svc.DeleteOwner(ctx, enclave.UserOwner(userID))
	return err
}

// passkeyCollector exports the service's ceremony counters; begun minus
// finished per RP counts ceremonies that never completed (decisions/34).
type passkeyCollector struct {
	svc                       *passkey.Service
	begun, finished, open, re *prometheus.Desc
}

func registerPasskeyMetrics(a *appliance, svc *passkey.Service) {
	a.metrics.Registry.MustRegister(&passkeyCollector{
		svc:      svc,
		begun:    prometheus.NewDesc("keywarden_passkey_ceremonies_begun_total", "Passkey ceremonies begun, by relying party.", []string{"rp_id"}, nil),
		finished: prometheus.NewDesc("keywarden_passkey_ceremonies_finished_total", "Passkey ceremonies finished successfully, by relying party.", []string{"rp_id"}, nil),
		open:     prometheus.NewDesc("keywarden_passkey_ceremonies_open", "Passkey ceremonies held in memory.", nil, nil),
		re:       prometheus.NewDesc("keywarden_passkey_refusals_total", "Passkey refusals by reason.", []string{"reason"}, nil),
	})
}

func (p *passkeyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.begun
	ch <- p.finished
	ch <- p.open
	ch <- p.re
}

func (p *passkeyCollector) Collect(ch chan<- prometheus.Metric) {
	st := p.svc.Stats()
	for rp, n := range st.Begun {
		ch <- prometheus.MustNewConstMetric(p.begun, prometheus.CounterValue, float64(n), rp)
	}
	for rp, n := range st.Finished {
		ch <- prometheus.MustNewConstMetric(p.finished, prometheus.CounterValue, float64(n), rp)
	}
	ch <- prometheus.MustNewConstMetric(p.open, prometheus.GaugeValue, float64(st.Open))
	for r, n := range st.Refusals {
		ch <- prometheus.MustNewConstMetric(p.re, prometheus.CounterValue, float64(n), r)
	}
}
