// Package metrics holds Keywarden's Prometheus collectors, served on the
// admin listener's /metrics. Labels never carry user ids or secrets, and no
// label takes a value a client chose: every series costs memory for the
// life of the process and a line in every scrape, so a client that could
// pick label values could grow both without bound. Each label comes from a
// closed set fixed by the code:
//
//   - route: echo's route pattern (c.Path()), or RouteUnmatched; never the
//     raw request path. The patterns are registered at start.
//   - method (HTTP): MethodLabel maps the request method onto GET, HEAD,
//     POST, PUT, DELETE, OPTIONS, PATCH or "other".
//   - status: the status code the server answered with.
//   - reason / outcome: stable error codes, constants in the code
//     (apierr.New with a literal code), never text from a request.
//   - method (backup method), op, rp_id: constants or configured values.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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

	// requests caches Requests' and RequestDuration's children by label
	// values (ObserveRequest): copy on write, so a request reads it
	// without a lock and without hashing its labels into the vectors.
	requests   atomic.Pointer[map[requestKey]requestChildren]
	requestsMu sync.Mutex
}

type requestKey struct {
	route, method string
	status        int
}

type requestChildren struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// ObserveRequest counts one answered request in Requests and its latency
// in RequestDuration. route and method must already be labels
// (RouteLabel, MethodLabel): closed sets, so the cache behind this stays
// small (routes × methods × statuses seen).
func (m *Metrics) ObserveRequest(route, method string, status int, d time.Duration) {
	k := requestKey{route, method, status}
	var c requestChildren
	if p := m.requests.Load(); p != nil {
		c = (*p)[k]
	}
	if c.count == nil {
		c = m.requestChildren(k)
	}
	c.count.Inc()
	c.duration.Observe(d.Seconds())
}

// requestChildren resolves k's children and adds them to the cache.
func (m *Metrics) requestChildren(k requestKey) requestChildren {
	m.requestsMu.Lock()
	defer m.requestsMu.Unlock()
	old := m.requests.Load()
	if old != nil {
		if c, ok := (*old)[k]; ok {
			return c
		}
	}
	c := requestChildren{
		count:    m.Requests.WithLabelValues(k.route, k.method, strconv.Itoa(k.status)),
		duration: m.RequestDuration.WithLabelValues(k.route),
	}
	next := make(map[requestKey]requestChildren, 1+lenOf(old))
	if old != nil {
		for ok, oc := range *old {
			next[ok] = oc
		}
	}
	next[k] = c
	m.requests.Store(&next)
	return c
}

func lenOf(p *map[requestKey]requestChildren) int {
	if p == nil {
		return 0
	}
	return len(*p)
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

// RouteUnmatched is the route label of a request that matched no route
// pattern at all.
const RouteUnmatched = "unmatched"

// MethodOther is the method label of every method outside the closed set.
const MethodOther = "other"

// MethodLabel maps an HTTP request method onto the closed set of method
// labels. Methods are case-sensitive (RFC 9110), so "get" is "other".
func MethodLabel(method string) string {
	switch method {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH":
		return method
	}
	return MethodOther
}

// RouteLabel is the route label of a request whose matched route pattern
// is pattern (echo's c.Path(); "" when nothing matched).
func RouteLabel(pattern string) string {
	if pattern == "" {
		return RouteUnmatched
	}
	return pattern
}

// GaugeFunc registers a gauge read from f at scrape time.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// CounterFunc registers a counter read from f at scrape time.
func (m *Metrics) CounterFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}
