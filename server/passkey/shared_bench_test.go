package passkey

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// BenchmarkCeremonyRoundTrip is what keeping a ceremony costs between
// begin and finish on one node (bbolt: the in-memory Ephemeral; the state
// is encoded, not sealed): count it against the caps, store, take, decode.
func BenchmarkCeremonyRoundTrip(b *testing.B) {
	v := newEnv(b, nil)
	ctx := context.Background()
	out, err := v.svc.BeginAuthentication(ctx, AuthenticationRequest{Subject: &Subject{Owner: "user:alice", UserID: "alice"}, ClientAddr: testAddr})
	if err != nil {
		b.Fatal(err)
	}
	c, err := v.svc.takeCeremony(ctx, v.svc.now(), out.CeremonyID, kindAuthentication)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := v.svc.addCeremony(ctx, c); err != nil {
			b.Fatal(err)
		}
		if _, err := v.svc.takeCeremony(ctx, v.svc.now(), c.id, kindAuthentication); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPasskeyReleaseEtcd is BenchmarkPasskeyRelease/plain on a store
// in a one-member etcd embedded in the process: the ceremony is put at
// begin and taken at finish, and the step-up proof put, all in etcd (three
// etcd writes), beside the credential and key reads.
func BenchmarkPasskeyReleaseEtcd(b *testing.B) {
	c := etcddev.Embedded(b)
	v := newEnvOn(b, func(o *Options) { o.AddressFailureBurst = -1 },
		[]apptest.CoreOption{apptest.NoTPM(), apptest.StoreBackend(c.SharedBackend(etcdstore.Options{}))},
		firebasetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)))
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	begin := map[string]any{"userId": "alice"}
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
}
