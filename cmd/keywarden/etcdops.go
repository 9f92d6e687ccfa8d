package main

// The etcd backend's operations: its metrics and cluster-status sampler,
// and the maintenance snapshot on the admin API (wireEtcd), and the
// client side of `keywarden backup -etcd-snapshot FILE`.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// etcdSampleEvery is how often the cluster status is sampled (and at each
// readiness check).
const etcdSampleEvery = 5 * time.Second

// wireEtcd, on the etcd backend only: the etcd metrics with their status
// sampler (every etcdSampleEvery, and in the admin readiness as the
// private degraded check etcd_cluster), and the maintenance snapshot route.
func wireEtcd(ctx context.Context, a *appliance, opts *server.Options) error {
	es, ok := a.db.Backend().(*etcdstore.Store)
	if !ok {
		return nil
	}
	w := newEtcdWatch(a.metrics, es, a.log)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); w.run(sctx, etcdSampleEvery) }()
	a.closers = append(a.closers, func() { cancel(); <-done })
	opts.Degraded = append(opts.Degraded, server.Check{Name: "etcd_cluster", Run: w.check, Private: true})
	opts.EtcdSnapshot = es
	return nil
}

// etcdWatch keeps the etcd backend's metrics:
//
//	keywarden_etcd_txn_duration_seconds{op="view"|"update"}  histogram of each View / Update (all attempts)
//	keywarden_etcd_txn_conflicts_total                       Update attempts run again after a conflict
//	keywarden_etcd_unavailable_total                         Views and Updates failed as unavailable
//	keywarden_etcd_has_leader                                1 when a reachable endpoint knows a leader
//	keywarden_etcd_leader_changes_total                      changes of leader seen between samples
//	keywarden_etcd_members                                   the cluster's member count (last read)
//	keywarden_etcd_endpoints_reachable                       endpoints that answered their status
//
// The op label is one of two constants; no label takes any other value.
type etcdWatch struct {
	s   *etcdstore.Store
	log *slog.Logger

	hasLeader, members, reachable prometheus.Gauge
	leaderChanges                 prometheus.Counter

	mu     sync.Mutex
	leader uint64 // the last leader seen (0: none yet)

	checkMu   sync.Mutex // readiness: at most one sample per etcdCheckEvery
	checked   time.Time
	checkErr  error
	checkedCS etcdstore.ClusterStatus
}

// etcdCheckEvery bounds how often readiness probes (several load
// balancers, each every second) sample the cluster.
const etcdCheckEvery = time.Second

func newEtcdWatch(m *metrics.Metrics, s *etcdstore.Store, log *slog.Logger) *etcdWatch {
	w := &etcdWatch{
		s: s, log: log,
		hasLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keywarden_etcd_has_leader", Help: "1 when an etcd endpoint this node talks to knows a leader (sampled)."}),
		members:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "keywarden_etcd_members", Help: "Members of the etcd cluster (the last member list read; sampled)."}),
		reachable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keywarden_etcd_endpoints_reachable", Help: "etcd endpoints of etcd.endpoints that answered their status (sampled)."}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "keywarden_etcd_leader_changes_total",
			Help: "Changes of the etcd leader seen between two samples of the cluster status."}),
	}
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keywarden_etcd_txn_duration_seconds", Help: "etcd store transaction latency by operation (view, update: all attempts of one).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"op"})
	view, update := dur.WithLabelValues("view"), dur.WithLabelValues("update")
	s.SetObserver(func(op string, d time.Duration, _ error) {
		if op == "view" {
			view.Observe(d.Seconds())
		} else {
			update.Observe(d.Seconds())
		}
	})
	m.Registry.MustRegister(dur, w.hasLeader, w.members, w.reachable, w.leaderChanges)
	m.CounterFunc("keywarden_etcd_txn_conflicts_total", "etcd store Update attempts run again because another transaction committed first.", func() float64 { return float64(s.Conflicts()) })
	m.CounterFunc("keywarden_etcd_unavailable_total", "etcd store Views and Updates that failed because the cluster could not answer (no leader, no quorum, no member reachable, deadline).", func() float64 { return float64(s.Unavailable()) })
	return w
}

// sample asks the endpoints for the cluster status and updates the gauges.
func (w *etcdWatch) sample(ctx context.Context) (etcdstore.ClusterStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cs, err := w.s.ClusterStatus(cctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reachable.Set(float64(cs.Reachable()))
	// The member list needs a leader and may miss one sample after a
	// member stops: keep the last count read until a new one is.
	if cs.Members > 0 {
		w.members.Set(float64(cs.Members))
	}
	if cs.Leader == 0 {
		w.hasLeader.Set(0)
	} else {
		w.hasLeader.Set(1)
		if w.leader != 0 && cs.Leader != w.leader {
			w.leaderChanges.Inc()
		}
		w.leader = cs.Leader
	}
	return cs, err
}

// run samples every interval until ctx ends.
func (w *etcdWatch) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_, _ = w.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check samples for readiness: degraded while no leader is known or an
// endpoint does not answer.
func (w *etcdWatch) check(ctx context.Context) error {
	w.checkMu.Lock()
	if time.Since(w.checked) >= etcdCheckEvery {
		w.checkedCS, w.checkErr = w.sample(ctx)
		w.checked = time.Now()
	}
	cs, err := w.checkedCS, w.checkErr
	w.checkMu.Unlock()
	if err != nil {
		return err
	}
	if cs.Leader == 0 {
		return errors.New("no etcd endpoint knows a leader")
	}
	if n := cs.Reachable(); n < len(cs.Endpoints) {
		return fmt.Errorf("%d of %d etcd endpoints answer", n, len(cs.Endpoints))
	}
	return nil
}

// downloadEtcdSnapshot is `keywarden backup -etcd-snapshot FILE`: etcd's
// maintenance snapshot through the admin API, written to a temporary file,
// its trailing SHA-256 (which etcdutl snapshot restore checks) verified,
// then renamed to FILE.
func downloadEtcdSnapshot(ctx context.Context, api *adminAPI, out string) error {
	resp, err := api.do(ctx, http.MethodGet, "/v1/admin/backup/etcd-snapshot", 30*time.Minute)
	if err != nil {
		return fmt.Errorf("backup -etcd-snapshot: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errors.New("backup -etcd-snapshot: the server's store is not on etcd (404); use `keywarden backup -out FILE`")
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("backup -etcd-snapshot: server answered %s: %s", resp.Status, b)
	}
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	tail := &tailWriter{n: sha256.Size}
	n, err := io.Copy(io.MultiWriter(f, tail), resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = hashAllButTail(tmp, n, h)
	}
	if err == nil && !bytes.Equal(h.Sum(nil), tail.b) {
		err = errors.New("the snapshot's trailing SHA-256 does not match (cut short or damaged)")
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup -etcd-snapshot: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "backup: etcd snapshot of %d bytes written to %s, SHA-256 verified (restore the cluster with `etcdutl snapshot restore`)\n", n, out)
	return nil
}

// tailWriter keeps the last n bytes written.
type tailWriter struct {
	n int
	b []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.n {
		t.b = append(t.b[:0], t.b[len(t.b)-t.n:]...)
	}
	return len(p), nil
}

// hashAllButTail hashes the file's first size-32 bytes into h.
func hashAllButTail(path string, size int64, h io.Writer) error {
	if size < sha256.Size {
		return fmt.Errorf("a snapshot of %d bytes", size)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(h, f, size-sha256.Size)
	return err
}
