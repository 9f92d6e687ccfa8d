// Package metrics holds Keywarden's Prometheus collectors, served on the
// admin listener's /metrics. Labels never carry user ids or secrets: routes
// are echo's route patterns, reasons are stable error codes.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the set of collectors. Packages add their own through Registry.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, method, status
	RequestDuration *prometheus.HistogramVec // route
	Releases        *prometheus.HistogramVec // method (backup method), outcome
	Refusals        *prometheus.CounterVec   // reason
	Stores          *prometheus.CounterVec   // method, outcome
	InFlight        prometheus.Gauge
}

// New registers the collectors on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keywarden_http_requests_total", Help: "HTTP requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keywarden_http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		Releases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keywarden_release_duration_seconds", Help: "Key release latency by backup method and outcome.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"method", "outcome"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keywarden_refusals_total", Help: "Refused requests by stable reason code (origin_mismatch, token_expired, wrong_audience, …).",
		}, []string{"reason"}),
		Stores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keywarden_key_stores_total", Help: "Key stores by backup method and outcome.",
		}, []string{"method", "outcome"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keywarden_http_in_flight_requests", Help: "Requests being served.",
		}),
	}
	r.MustRegister(m.Requests, m.RequestDuration, m.Releases, m.Refusals, m.Stores, m.InFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// GaugeFunc registers a gauge read from f at scrape time.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// CounterFunc registers a counter read from f at scrape time.
func (m *Metrics) CounterFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}
