package passkey

import (
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// BenchmarkPasskeyRelease is the full release path through the handlers,
// in process: authentication/begin, then authentication/finish with a real
// ES256 assertion (signature verification, durable audit line with fsync,
// key opened from custody; no store write: the passkey keeps no counter).
// The client's signing is not timed.
func BenchmarkPasskeyRelease(b *testing.B) {
	x, _ := hpke.DHKEM(ecdh.X25519()).GenerateKey()
	m, _ := hpke.MLKEM768X25519().GenerateKey()
	for _, bc := range []struct {
		name      string
		recipient []byte
	}{
		{"plain", nil},
		{"hpke-x25519", x.PublicKey().Bytes()},
		{"hpke-mlkem768x25519", m.PublicKey().Bytes()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			v := newEnv(b, func(o *Options) { o.AddressFailureBurst = -1 })
			v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
			begin := map[string]any{"userId": "alice"}
			if bc.recipient != nil {
				begin["recipientPublicKey"] = base64.StdEncoding.EncodeToString(bc.recipient)
			}
			b.ResetTimer()
			for b.Loop() {
				r := v.Send("POST", "/v1/passkeys/authentication/begin", begin)
				var bg begun
				if err := json.Unmarshal(r.Body, &bg); err != nil || r.Status != 200 {
					b.Fatalf("begin: %d %s", r.Status, r.Body)
				}
				b.StopTimer()
				cred, err := v.auth.Get(bg.PublicKey, testOrigin)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := json.Marshal(map[string]any{"ceremonyId": bg.CeremonyID, "credential": json.RawMessage(cred)})
				b.StartTimer()
				if r := v.Send("POST", "/v1/passkeys/authentication/finish", body); r.Status != 200 {
					b.Fatalf("finish: %d %s", r.Status, r.Body)
				}
			}
		})
	}
}

// BenchmarkPasskeyReleaseParallel runs releases of different users
// concurrently: their audit lines share fsyncs (group commit).
func BenchmarkPasskeyReleaseParallel(b *testing.B) {
	v := newEnv(b, func(o *Options) { o.AddressFailureBurst = -1; o.MaxCeremoniesPerAddress = 1000 })
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := v.Send("POST", "/v1/passkeys/authentication/begin", map[string]any{"userId": "alice"})
			var bg begun
			if err := json.Unmarshal(r.Body, &bg); err != nil || r.Status != 200 {
				b.Errorf("begin: %d %s", r.Status, r.Body)
				return
			}
			cred, _ := v.auth.Get(bg.PublicKey, testOrigin)
			if r := v.Send("POST", "/v1/passkeys/authentication/finish", map[string]any{"ceremonyId": bg.CeremonyID, "credential": json.RawMessage(cred)}); r.Status != 200 {
				b.Errorf("finish: %d %s", r.Status, r.Body)
				return
			}
		}
	})
}
