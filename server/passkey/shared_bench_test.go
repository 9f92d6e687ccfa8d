package passkey

import (
	"context"
	"testing"
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
