package passkey

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// BenchmarkPasskeyReleaseHandlers is one release through the echo handlers
// in process (no network, no API-document check), the client's signing not
// counted: allocs/op, B/op and cpu-ns/op (the process's CPU time during
// begin and finish, the audit writer's included) are the server's work per
// release (begin and finish, the audit line and the step-up proof
// included).
func BenchmarkPasskeyReleaseHandlers(b *testing.B) {
	v := newEnv(b, func(o *Options) { o.AddressFailureBurst = -1 })
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	serve := func(path string, body []byte) []byte {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = testAddr + ":40000"
		w := httptest.NewRecorder()
		v.e.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("%s: %d %s", path, w.Code, w.Body.Bytes())
		}
		return w.Body.Bytes()
	}
	beginBody := []byte(`{"userId":"alice"}`)
	b.ReportAllocs()
	var cpu time.Duration
	for b.Loop() {
		c0 := benchCPUTime()
		out := serve("/v1/passkeys/authentication/begin", beginBody)
		cpu += benchCPUTime() - c0
		b.StopTimer()
		var bg begun
		if err := json.Unmarshal(out, &bg); err != nil {
			b.Fatal(err)
		}
		cred, err := v.auth.Get(bg.PublicKey, testOrigin)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{"ceremonyId": bg.CeremonyID, "credential": json.RawMessage(cred)})
		b.StartTimer()
		c0 = benchCPUTime()
		serve("/v1/passkeys/authentication/finish", body)
		cpu += benchCPUTime() - c0
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkParseAssertion is the decoding of an assertion response (the
// user handle taken out, go-webauthn's parse), beside the decoding through
// go-webauthn's own types (parseAssertionReference, as it was).
func BenchmarkParseAssertion(b *testing.B) {
	v := newEnv(b, nil)
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	bg := v.beginAuth(user("alice"))
	cred, err := v.auth.Get(bg.PublicKey, testOrigin)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		parse func([]byte) (*protocol.ParsedCredentialAssertionData, *string, error)
	}{{"go-webauthn-types", parseAssertionReference}, {"now", parseAssertion}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := benchCPUTime()
			for b.Loop() {
				if _, _, err := bc.parse(cred); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((benchCPUTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkLoadCredentials is the credential reads of a release: the
// owner's list at begin, the asserted credential at finish.
func BenchmarkLoadCredentials(b *testing.B) {
	v := newEnv(b, nil)
	c := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	ctx := context.Background()
	b.Run("owner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if cs, err := v.svc.loadOwnerCredentials(ctx, "user:alice", testRPID); err != nil || len(cs) != 1 {
				b.Fatal(err)
			}
		}
	})
	b.Run("one", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.svc.loadCredential(ctx, c.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
}
