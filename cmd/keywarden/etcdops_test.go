package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// metricValue is the value of the series name (with label op=op when op
// is not ""), a histogram's sample count; -1 when absent.
func metricValue(t *testing.T, m *metrics.Metrics, name, op string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if op != "" && !hasLabel(s, "op", op) {
				continue
			}
			switch {
			case s.Counter != nil:
				return s.Counter.GetValue()
			case s.Gauge != nil:
				return s.Gauge.GetValue()
			case s.Histogram != nil:
				return float64(s.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

func hasLabel(s *dto.Metric, name, value string) bool {
	for _, l := range s.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestEtcdMetricsMove: the etcd metrics follow a real 3-member cluster.
// Transactions fill the latency histogram by op; a transaction that loses
// to another node's commit counts a conflict; stopping the leader counts a
// leader change once a new leader is sampled (fewer endpoints reachable,
// members still 3); stopping a second member leaves no leader, the
// readiness check degraded, and a View counted as unavailable.
func TestEtcdMetricsMove(t *testing.T) {
	ctx := context.Background()
	c := etcddev.EmbeddedCluster(t, 3)
	open := func() *etcdstore.Store {
		s, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "kw-metrics", TxTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	es := open()
	m := metrics.New()
	w := newEtcdWatch(m, es, slog.New(slog.NewTextHandler(io.Discard, nil)))
	db, err := store.New(es, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if metricValue(t, m, "keywarden_etcd_txn_duration_seconds", "update") < 1 {
		t.Fatal("the migrations' updates are not in the latency histogram")
	}
	views := metricValue(t, m, "keywarden_etcd_txn_duration_seconds", "view")
	if err := db.View(ctx, func(tx *store.Tx) error { _, err := tx.GetMeta(store.MetaRollback); return ignoreNotFound(err) }); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, m, "keywarden_etcd_txn_duration_seconds", "view"); got != views+1 {
		t.Fatalf("view histogram count %v, want %v", got, views+1)
	}

	// A conflict: another node commits while this one's function runs.
	other := open()
	defer other.Close()
	runs := 0
	err = es.Update(ctx, func(tx store.BackendTx) error {
		runs++
		if _, err := tx.Get(store.BucketKeys, []byte("k")); ignoreNotFound(err) != nil {
			return err
		}
		if runs == 1 {
			if err := other.Update(ctx, func(tx store.BackendTx) error { return tx.Put(store.BucketKeys, []byte("k"), []byte("other")) }); err != nil {
				return err
			}
		}
		return tx.Put(store.BucketKeys, []byte("k"), []byte("mine"))
	})
	if err != nil || runs != 2 {
		t.Fatalf("conflicting update: %v after %d runs", err, runs)
	}
	// At least the one conflict forced here (attempts from a serializable
	// snapshot may count more before the retry that commits).
	if got := metricValue(t, m, "keywarden_etcd_txn_conflicts_total", ""); got < 1 {
		t.Fatalf("conflicts %v, want at least the one forced", got)
	}

	// check samples at most once a second; each check here asks afresh.
	check := func() error {
		w.checkMu.Lock()
		w.checked = time.Time{}
		w.checkMu.Unlock()
		return w.check(ctx)
	}
	cs, err := w.sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"keywarden_etcd_has_leader": 1, "keywarden_etcd_members": 3, "keywarden_etcd_endpoints_reachable": 3, "keywarden_etcd_leader_changes_total": 0} {
		if got := metricValue(t, m, name, ""); got != want {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
	}
	if err := check(); err != nil {
		t.Fatalf("readiness check with a healthy cluster: %v", err)
	}
	leader := -1
	for i, e := range cs.Endpoints {
		if e.MemberID == cs.Leader {
			leader = i
		}
	}
	if leader < 0 || cs.Endpoints[leader].Endpoint != c.Endpoint(leader) {
		t.Fatalf("leader %x not among the endpoints", cs.Leader)
	}
	c.Stop(leader)
	// A new leader is elected within a few election timeouts: sample until
	// one is seen (bounded by the number of samples).
	var now etcdstore.ClusterStatus
	for i := 0; i < 100; i++ {
		now, _ = w.sample(ctx)
		if now.Leader != 0 && now.Leader != cs.Leader {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if now.Leader == 0 || now.Leader == cs.Leader {
		t.Fatal("no new leader sampled after the leader stopped")
	}
	for name, want := range map[string]float64{"keywarden_etcd_has_leader": 1, "keywarden_etcd_leader_changes_total": 1, "keywarden_etcd_endpoints_reachable": 2, "keywarden_etcd_members": 3} {
		if got := metricValue(t, m, name, ""); got != want {
			t.Fatalf("after the leader stopped: %s = %v, want %v", name, got, want)
		}
	}
	if err := check(); err == nil || !strings.Contains(err.Error(), "2 of 3") {
		t.Fatalf("readiness check with a member down: %v", err)
	}

	// Quorum lost.
	for i := range 3 {
		if i != leader {
			c.Stop(i)
			break
		}
	}
	for i := 0; i < 100 && metricValue(t, m, "keywarden_etcd_has_leader", "") != 0; i++ {
		_, _ = w.sample(ctx)
		time.Sleep(100 * time.Millisecond)
	}
	if got := metricValue(t, m, "keywarden_etcd_has_leader", ""); got != 0 {
		t.Fatalf("has_leader %v without quorum", got)
	}
	if err := check(); err == nil {
		t.Fatal("readiness check without quorum passed")
	}
	before := metricValue(t, m, "keywarden_etcd_unavailable_total", "")
	if err := db.View(ctx, func(tx *store.Tx) error { _, err := tx.GetMeta(store.MetaRollback); return err }); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("view without quorum: %v", err)
	}
	if got := metricValue(t, m, "keywarden_etcd_unavailable_total", ""); got != before+1 {
		t.Fatalf("unavailable %v, want %v", got, before+1)
	}
}

func ignoreNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// TestEtcdSnapshotBackup: `keywarden backup -etcd-snapshot FILE` against a
// node on etcd writes etcd's maintenance snapshot with its trailing hash
// verified, and the node's /metrics carries the etcd series; against a node
// on bbolt it says the store is not on etcd.
func TestEtcdSnapshotBackup(t *testing.T) {
	ctx := context.Background()
	c := etcddev.Embedded(t)
	t.Setenv("KEYWARDEN_STORE_BACKEND", "etcd")
	t.Setenv("KEYWARDEN_ETCD_ENDPOINTS", c.Endpoint(0))
	t.Setenv("KEYWARDEN_ETCD_PREFIX", "kw-snap")
	dir := t.TempDir()
	const adminKey = "snapshot-admin-key-0123456789"
	url, stop := startDev(t, dir, "5151", adminKey)
	out := filepath.Join(dir, "etcd.snapshot")
	err := cmdBackup(ctx, []string{"-etcd-snapshot", out, "-url", url})
	if err != nil {
		stop()
		t.Fatalf("backup -etcd-snapshot: %v", err)
	}
	if err := cmdBackup(ctx, []string{"-etcd-snapshot", out, "-out", out + ".2", "-url", url}); err == nil {
		t.Error("-out with -etcd-snapshot accepted")
	}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"keywarden_etcd_has_leader 1", "keywarden_etcd_members 1", `keywarden_etcd_txn_duration_seconds_count{op="update"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	t.Setenv("KEYWARDEN_STORE_BACKEND", "bbolt")
	url, stop = startDev(t, t.TempDir(), "5152", adminKey)
	defer stop()
	if err := cmdBackup(ctx, []string{"-etcd-snapshot", filepath.Join(dir, "none"), "-url", url}); err == nil || !strings.Contains(err.Error(), "not on etcd") {
		t.Fatalf("backup -etcd-snapshot from a node on bbolt: %v", err)
	}
}
