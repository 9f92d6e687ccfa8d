package keys

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
)

// BenchmarkStoreDurable is a durable Firebase store of a new user, as
// serve runs it (audit line and record both durable before the answer),
// with 16 writers: docs/BENCHMARKS.md "Durable stores with 16 writers".
// It reports the audit fsyncs and store commits per store and the CPU per
// store (all goroutines).
//
//	go test -run '^$' -bench StoreDurable -benchtime 20000x ./server/keys/
func BenchmarkStoreDurable(b *testing.B) {
	core := apptest.NewCore(b, apptest.NoTPM())
	s, err := New(Options{Custody: enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{}), Audit: core.Audit, Metrics: metrics.New()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	key := []byte("0123456789abcdef0123456789abcdef")
	var next atomic.Int64
	a0, c0 := core.Audit.Stats().Fsyncs, core.DB.Stats().Commits
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0))) // 16 writers
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			owner := enclave.Owner(fmt.Sprintf("firebase:proj-a//user-%d", next.Add(1)))
			if _, err := s.Store(ctx, Request{Actor: "firebase:x"}, owner, "FIREBASE", key, enclave.PutOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/n, "cpu-ns/op")
	b.ReportMetric(float64(core.Audit.Stats().Fsyncs-a0)/n, "audit-fsyncs/op")
	b.ReportMetric(float64(core.DB.Stats().Commits-c0)/n, "commits/op")
}
