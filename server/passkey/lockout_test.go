package passkey

import (
	"bytes"
	"encoding/base64"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// TestStrangersCannotLockOwnerOut: begin hands anyone Alice's credential
// ids. A stranger sends 50 assertions naming her real credential id but
// signed with another key (and a few with a wrong origin or RP ID hash),
// from several addresses, IPv4 and IPv6. None of that is attributable to
// the holder of her passkey, so none of it spends her per-user budget:
// her genuine assertion from a fresh address still releases her key.
func TestStrangersCannotLockOwnerOut(t *testing.T) {
	v := newEnv(t, nil) // default limits: 5 failures per user, 20 per address
	f := setup(v)
	mallory := softauthn.New([16]byte{0x66})
	_, opts := v.beginRegistration("zed", nil)
	_, forged, err := mallory.Create(opts, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	forged.ID = bytes.Clone(f.alice.ID) // her id, mallory's key
	addrs := []string{"203.0.113.5", "2001:db8:66:1::1", "2001:db8:66:2::1", "198.51.100.66", "::ffff:192.0.2.66"}
	for i := range 50 {
		a := addrs[i%len(addrs)]
		o, origin := softauthn.GetOptions{CredentialID: f.alice.ID, UserHandle: softauthn.UserHandleAbsent}, testOrigin
		switch i % 10 {
		case 7:
			origin = "https://evil.example"
		case 8:
			o.RPIDHash = make([]byte, 32)
		}
		r := v.assert(mallory, v.beginAuth(user("alice"), fromAddr(a)), origin, o, nil, fromAddr(a))
		if r.Status != 401 {
			t.Fatalf("forgery %d from %s: %d %s", i, a, r.Status, r.Body)
		}
	}
	fresh := "2001:db8:a11c::1"
	r := v.assert(nil, v.beginAuth(user("alice"), fromAddr(fresh)), testOrigin, softauthn.GetOptions{}, nil, fromAddr(fresh))
	if r.Status != 200 {
		t.Fatalf("alice after 50 forgeries: %d %s", r.Status, r.Body)
	}
	if got := r.Map(t)["key"]; got != base64.StdEncoding.EncodeToString(aliceKey) {
		t.Fatalf("released %v", got)
	}
}

// TestCounterRegressionSpendsUserBudget: a counter that goes backwards on
// a valid signature can only come from a holder of the private key (a
// cloned authenticator): it is the failure that spends the per-user
// budget, and then the credential is slowed down whoever holds it.
func TestCounterRegressionSpendsUserBudget(t *testing.T) {
	v := newEnv(t, func(o *Options) {
		o.UserFailureBurst = 2
		o.UserFailureInterval = time.Minute
		o.AddressFailureBurst = -1
	})
	setup(v)
	for range 2 {
		if r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(1)}, nil); r.Code() != "counter_regressed" {
			t.Fatalf("regressed counter: %d %s", r.Status, r.Body)
		}
	}
	r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
	if r.Status != 429 || r.Code() != "rate_limited" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("after two regressions: %d %s", r.Status, r.Body)
	}
	v.clock.Advance(time.Minute)
	if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, aliceKey) {
		t.Fatal("not released after the interval")
	}
}
