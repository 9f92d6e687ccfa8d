package passkey

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// BenchmarkPasskeyReleaseHTTP64 is the release as the load generator drives
// it (passkeybench load -c 64), in process: 64 users, each with its own
// software authenticator (ES256, real signatures), looping begin → sign →
// finish over HTTP on loopback (a real net/http server and client) from 64
// goroutines. cpu-ns/op is the process's CPU time per release: server and
// client (the client's signing and JSON included, the same in every
// build), steadier than wall time on a shared machine.
func BenchmarkPasskeyReleaseHTTP64(b *testing.B) {
	const users = 64
	v := newEnv(b, func(o *Options) { o.AddressFailureBurst = -1; o.MaxCeremoniesPerAddress = 4 * users })
	auths := make([]*softauthn.Authenticator, users)
	for i := range auths {
		auths[i] = softauthn.New([16]byte{byte(i)})
		v.register(auths[i], fmt.Sprintf("user%02d", i), testKey(byte(i)), softauthn.CreateOptions{})
	}
	srv := httptest.NewServer(v.e)
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * users}}
	post := func(path string, body []byte) ([]byte, error) {
		r, err := hc.Post(srv.URL+path, "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer r.Body.Close()
		out, err := io.ReadAll(r.Body)
		if err == nil && r.StatusCode != 200 {
			err = fmt.Errorf("%s: %d %s", path, r.StatusCode, out)
		}
		return out, err
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism((users + 1) / 2) // 64 goroutines on 2 cores
	cpu0 := benchCPUTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)-1) % users
		a := auths[i]
		beginBody := []byte(fmt.Sprintf(`{"userId":"user%02d"}`, i))
		for pb.Next() {
			out, err := post("/v1/passkeys/authentication/begin", beginBody)
			if err != nil {
				b.Error(err)
				return
			}
			var bg begun
			if err := json.Unmarshal(out, &bg); err != nil {
				b.Error(err)
				return
			}
			cred, err := a.Get(bg.PublicKey, testOrigin)
			if err != nil {
				b.Error(err)
				return
			}
			body, _ := json.Marshal(map[string]any{"ceremonyId": bg.CeremonyID, "credential": json.RawMessage(cred)})
			if _, err := post("/v1/passkeys/authentication/finish", body); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((benchCPUTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// benchCPUTime is the process's user and system CPU time so far.
func benchCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
