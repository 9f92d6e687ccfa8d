package pin

import (
	"fmt"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPINEvaluateUnlock: evaluate+unlock pairs with the right PIN
// over HTTP on the whole appliance in process (simulator TPM, bbolt,
// audit log), 64 concurrent clients, each its own owner (a session
// token). Reports pairs/s, TPM commands and NV increments per guess.
// The clients' own OPRF work (blind, finalize) runs in the same process.
//
//	go test -run '^$' -bench BenchmarkPINEvaluateUnlock -benchtime 2000x ./server/pin/
func BenchmarkPINEvaluateUnlock(b *testing.B) {
	const clients = 64
	e := newEnv(b)
	toks := make([]string, clients)
	for i := range toks {
		toks[i], _ = e.Sessions.Mint(fmt.Sprintf("bench-%d", i), time.Hour)
		if r := e.register(toks[i], "314159", nil); r.Status != http.StatusCreated {
			b.Fatalf("register: %d %s", r.Status, r.Body)
		}
	}
	var next atomic.Int64
	b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	cmds0, inc0 := e.TPM.Count(), e.rb.Increments()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		tok := toks[int(next.Add(1)-1)%clients]
		for pb.Next() {
			if r := e.try(tok, "314159"); r.Status != http.StatusOK {
				b.Errorf("pair: %d %s", r.Status, r.Body)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/elapsed.Seconds(), "pairs/s")
	b.ReportMetric(float64(e.TPM.Count()-cmds0)/n, "tpm_cmds/guess")
	b.ReportMetric(float64(e.rb.Increments()-inc0)/n, "nv_incs/guess")
}
