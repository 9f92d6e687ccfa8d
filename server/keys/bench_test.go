package keys

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
)

// BenchmarkRelease is the keys service's release of a Firebase key as
// serve runs it (audit lines of releases written, fsynced in the
// background), without and with receipts (signed anchors, a receipt per
// release: statement, Merkle batch, one Ed25519 signature per group
// commit). docs/BENCHMARKS.md records the figures; the bar is that
// receipts cost the release at most 5 %.
//
//	go test -run '^$' -bench Release -benchtime 3s ./server/keys/
//
// Plain and receipts alternate (rounds 1–3): on a shared machine the
// neighbours' load drifts, so compare the rounds side by side.
func BenchmarkRelease(b *testing.B) {
	for _, par := range []bool{false, true} {
		for round := 1; round <= 3; round++ {
			for _, receipts := range []bool{false, true} {
				name := fmt.Sprintf("%s/%d/%s", map[bool]string{false: "serial", true: "parallel"}[par], round, map[bool]string{false: "plain", true: "receipts"}[receipts])
				b.Run(name, func(b *testing.B) { benchRelease(b, par, receipts) })
			}
		}
	}
}

func benchRelease(b *testing.B, parallel, receipts bool) {
	opts := []apptest.CoreOption{apptest.AuditOptions(func(o *audit.Options) {
		o.WrittenActions = []string{audit.ActionRelease}
		o.WrittenSyncDelay = 5 * time.Millisecond
	})}
	if receipts {
		opts = append(opts, apptest.Receipts())
	}
	core := apptest.NewCore(b, opts...)
	s, err := New(Options{Custody: enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{}), Audit: core.Audit, Metrics: metrics.New()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	owner := enclave.Owner("firebase:proj-a//user-1")
	if _, err := s.Store(ctx, Request{Actor: "firebase:x"}, owner, "FIREBASE", []byte("0123456789abcdef0123456789abcdef"), enclave.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	release := func() {
		rctx := ctx
		var slot *audit.ReceiptSlot
		if receipts {
			rctx, slot = audit.WithReceiptSlot(ctx) // as the server's request middleware does
		}
		key, _, err := s.Release(rctx, Request{Actor: "firebase:x", RequestID: "bench"}, owner, "FIREBASE", enclave.Access{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		key.Wipe()
		if receipts && slot.Encoded() == "" { // the header value, as the server sends it
			b.Fatal("no receipt")
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	defer func() {
		// CPU time per release (all goroutines, the writer and the
		// receipt signer included): on a shared machine, where wall time
		// moves with the neighbours' load, it is what bounds throughput
		// once the cores are saturated (wrk -c64 against serve).
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		if st := core.Audit.Stats(); st.ReceiptBatches > 0 {
			b.ReportMetric(float64(st.Receipts)/float64(st.ReceiptBatches), "receipts/signature")
		}
	}()
	if !parallel {
		for range b.N {
			release()
		}
		return
	}
	b.SetParallelism(32) // 64 goroutines on 2 cores, as wrk -c64 drives serve
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			release()
		}
	})
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
