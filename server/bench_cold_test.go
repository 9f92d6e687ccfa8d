package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// BenchmarkFirebaseReleaseColdHTTP is the production case of a release
// over HTTP: a distinct user and a never-seen ID token per request (each
// user's key was stored with another token first, outside the timing), so
// the verified-token cache misses every time. Server in process, real
// RS256 verification, keys service, audit line written and fsynced in the
// background as serve does. cpu-ns/op is the process's CPU per release
// (server and client together; the client's share is the same before and
// after a server change).
//
// Minting is one RSA signature per token (two per user), so fix the count:
//
//	go test -run '^$' -bench FirebaseReleaseColdHTTP -benchtime 2000x ./server/
func BenchmarkFirebaseReleaseColdHTTP(b *testing.B) {
	core := []apptest.CoreOption{apptest.AuditOptions(func(o *audit.Options) {
		o.WrittenActions = []string{audit.ActionRelease}
		o.WrittenSyncDelay = 5 * time.Millisecond
	})}
	h := newHarnessOn(b, core)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	url := h.URL + "/v1/firebase/key"
	body, _ := json.Marshal(keyRequest{Key: b64([]byte("0123456789abcdef0123456789abcdef"))})
	now := h.issuer.Clock().Now().Unix()

	// Two tokens per user (different bytes: different iat), minted and
	// stored on both cores.
	read := make([]string, b.N)
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				sub := fmt.Sprintf("cold-%d-%07d", b.N, i)
				put := h.issuer.Mint(firebasetest.Claims{"sub": sub, "user_id": sub, "iat": now - 1})
				read[i] = h.issuer.Mint(firebasetest.Claims{"sub": sub, "user_id": sub})
				req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+put)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					panic(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 201 {
					panic(fmt.Sprintf("put: %d", resp.StatusCode))
				}
			}
		}()
	}
	wg.Wait()

	var taken atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32) // 64 clients on 2 cores, as wrk -c64
	b.ResetTimer()
	cpu0 := benchCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tok := read[taken.Add(1)-1]
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				panic(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				panic(fmt.Sprintf("release: %d", resp.StatusCode))
			}
		}
	})
	b.ReportMetric(float64((benchCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}
