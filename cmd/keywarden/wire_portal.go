package main

import (
	"context"
	"fmt"

	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/portal"
)

// wirePortal adds the Portal SDK drop-in (server/portal) when
// portal.custodian_id is set: the TBS routes (over the server's Firebase
// key operations), the /passkeys/* routes (over the passkey service wired
// before, when passkeys are configured) and the custodian webhooks (over
// the custodian share service wired before, when Vault is configured).
// startAppliance runs it after wireCustodian and wirePasskey.
func wirePortal(_ context.Context, a *appliance, opts *server.Options) error {
	po, on, err := portalOptions(a.cfg)
	if err != nil {
		return err
	}
	p := a.cfg.Portal
	if !on {
		a.log.Info("Portal SDK drop-in is off: portal.custodian_id is not set")
		return nil
	}
	ks := opts.Keys // wireKeys, before
	deps := portal.Deps{Passkey: a.passkey, Logger: a.log, Keys: ks, Firebase: opts.Firebase, Audit: opts.Audit, Custody: opts.Custody}
	if svc, err := custodianService(opts); svc != nil {
		deps.Shares = svc
	} else if len(p.WebhookSecrets) > 0 {
		a.log.Warn("Portal custodian webhooks answer 503 until Vault is configured and reachable at start", "reason", portalReason(err))
	}
	if a.passkey == nil {
		a.log.Info("Portal /passkeys routes answer 503: passkey.rp_id is not set")
	}
	ad, err := portal.New(po, deps)
	if err != nil {
		return fmt.Errorf("portal: %w", err)
	}
	opts.Portal = ad
	registerPortalMetrics(a.metrics, ad.Resolver())
	a.log.Info("Portal SDK drop-in on", "api_url", ad.Resolver().APIURL(), "custodian_id", p.CustodianID,
		"passkeys", a.passkey != nil, "webhooks", deps.Shares != nil && len(p.WebhookSecrets) > 0)
	return nil
}

func portalReason(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// registerPortalMetrics exports the identity cache's counters: lookups
// against hits shows whether releases pay a round trip to Portal.
func registerPortalMetrics(m *metrics.Metrics, r *portal.Resolver) {
	stat := func(f func(portal.ResolverStats) float64) func() float64 {
		return func() float64 { return f(r.Stats()) }
	}
	m.CounterFunc("keywarden_portal_identity_hits_total", "Portal client credentials answered from the cache.",
		stat(func(s portal.ResolverStats) float64 { return float64(s.Hits) }))
	m.CounterFunc("keywarden_portal_identity_lookups_total", "Calls made to Portal's GET /api/v3/clients/me.",
		stat(func(s portal.ResolverStats) float64 { return float64(s.Lookups) }))
	m.CounterFunc("keywarden_portal_identity_failures_total", "Look-ups that got no usable answer (Portal down, 5xx, 429, timeout, malformed).",
		stat(func(s portal.ResolverStats) float64 { return float64(s.Failures) }))
	m.CounterFunc("keywarden_portal_identity_stale_total", "Credentials honoured past their TTL while Portal failed.",
		stat(func(s portal.ResolverStats) float64 { return float64(s.Stale) }))
	m.CounterFunc("keywarden_portal_identity_limited_total", "Look-ups of unknown credentials refused by the per-address limit.",
		stat(func(s portal.ResolverStats) float64 { return float64(s.Limited) }))
	m.CounterFunc("keywarden_portal_identity_busy_total", "Look-ups refused because the cap of calls in flight was reached.",
		stat(func(s portal.ResolverStats) float64 { return float64(s.Busy) }))
	m.GaugeFunc("keywarden_portal_identity_cache_entries", "Entries in the Portal identity cache.",
		stat(func(s portal.ResolverStats) float64 { return float64(s.Entries) }))
}
