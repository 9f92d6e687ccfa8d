package passkey

import (
	"fmt"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// TestCeremonyFloodFromOneNetwork: an attacker who holds an IPv6 /64 (or a
// whole /48) and rotates through its addresses cannot take the ceremonies
// everyone else needs: addresses are grouped by /64 for the per-address
// cap, and no /48 (IPv4: /24) may hold more than a fraction of the global
// cap.
func TestCeremonyFloodFromOneNetwork(t *testing.T) {
	opts := func(o *Options) { o.MaxCeremonies = 64; o.MaxCeremoniesPerAddress = 4 }
	t.Run("one /64", func(t *testing.T) {
		v := newEnv(t, opts)
		ok := 0
		for i := range 200 {
			r := v.Send("POST", "/v1/passkeys/authentication/begin", user(fmt.Sprintf("u%d", i)), fromAddr(fmt.Sprintf("2001:db8:bad:1:%x:%x::1", i, i*7)))
			if r.Status == 200 {
				ok++
			} else if r.Status != 429 || r.Code() != "too_many_ceremonies" {
				t.Fatalf("flood answer %d: %d %s", i, r.Status, r.Body)
			}
		}
		if ok != 4 {
			t.Fatalf("one /64 got %d ceremonies, want the per-address cap 4", ok)
		}
		for _, a := range []string{"2001:db8:600d::1", "198.51.100.20", "::ffff:192.0.2.1"} {
			if r := v.Send("POST", "/v1/passkeys/authentication/begin", user("alice"), fromAddr(a)); r.Status != 200 {
				t.Fatalf("%s after the flood: %d %s", a, r.Status, r.Body)
			}
		}
	})
	t.Run("one /48", func(t *testing.T) {
		v := newEnv(t, opts)
		ok := 0
		for i := range 200 {
			r := v.Send("POST", "/v1/passkeys/authentication/begin", user(fmt.Sprintf("u%d", i)), fromAddr(fmt.Sprintf("2001:db8:bad:%x::%x", i, i)))
			if r.Status == 200 {
				ok++
			}
		}
		if ok > 64/8 {
			t.Fatalf("one /48 got %d of 64 ceremonies", ok)
		}
		if r := v.Send("POST", "/v1/passkeys/authentication/begin", user("alice"), fromAddr("2001:db8:600d::1")); r.Status != 200 {
			t.Fatalf("another network after the flood: %d %s", r.Status, r.Body)
		}
	})
	t.Run("IPv4-mapped is the IPv4 address", func(t *testing.T) {
		v := newEnv(t, opts)
		for range 4 {
			v.beginAuth(user("alice"), fromAddr("192.0.2.1"))
		}
		if r := v.Send("POST", "/v1/passkeys/authentication/begin", user("alice"), fromAddr("::ffff:192.0.2.1")); r.Status != 429 {
			t.Fatalf("mapped form of a capped address: %d %s", r.Status, r.Body)
		}
	})
}

// TestFailureLimitPerIPv6Network: failed finishes from addresses that
// rotate inside one /64 share one bucket.
func TestFailureLimitPerIPv6Network(t *testing.T) {
	v := newEnv(t, func(o *Options) { o.AddressFailureBurst = 3; o.AddressFailureInterval = time.Minute })
	setup(v)
	for i := range 3 {
		a := fmt.Sprintf("2001:db8:77:1::%x", i+1)
		b := v.beginAuth(user("alice"), fromAddr(a))
		b.CeremonyID = newCeremonyID()
		if r := v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil, fromAddr(a)); r.Code() != "ceremony_unknown" {
			t.Fatalf("failure %d: %d %s", i, r.Status, r.Body)
		}
	}
	a := "2001:db8:77:1:ffff:1:2:3"
	r := v.assert(nil, v.beginAuth(user("alice"), fromAddr(a)), testOrigin, softauthn.GetOptions{}, nil, fromAddr(a))
	if r.Status != 429 || r.Code() != "rate_limited" {
		t.Fatalf("another address of the limited /64: %d %s", r.Status, r.Body)
	}
	a = "2001:db8:77:2::1"
	if r := v.assert(nil, v.beginAuth(user("alice"), fromAddr(a)), testOrigin, softauthn.GetOptions{}, nil, fromAddr(a)); r.Status != 200 {
		t.Fatalf("the next /64: %d %s", r.Status, r.Body)
	}
}
