package server

import (
	"fmt"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
)

// TestTrustedProxiesXForwardedFor: the client address that per-address
// limits use comes from X-Forwarded-For only when the direct peer is in
// listen.trusted_proxies, and then it is the right-most address the trusted
// proxy appended, not whatever the client wrote to the left of it.
func TestTrustedProxiesXForwardedFor(t *testing.T) {
	limited := func(h *harness, tok, xff string) bool {
		return h.Bearer("GET", "/v1/firebase/key", tok, nil, "X-Forwarded-For", xff).Status == 429
	}
	t.Run("trusted proxy: clients behind it are limited separately", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config, _ *Options) {
			c.Listen.TrustedProxies = []string{"127.0.0.1"}
			c.Limits.RatePerSecond, c.Limits.RateBurst = 0.001, 3
		})
		tok := h.issuer.Mint(nil)
		for i := range 3 {
			// A client behind the proxy cannot escape its bucket by
			// writing its own X-Forwarded-For entries: the proxy appends
			// the real address on the right.
			if limited(h, tok, fmt.Sprintf("10.9.9.%d, 198.51.100.1", i)) {
				t.Fatalf("request %d of 198.51.100.1 limited within its burst", i+1)
			}
		}
		if !limited(h, tok, "10.9.9.99, 198.51.100.1") {
			t.Fatal("198.51.100.1 spent its burst but was not limited: spoofed left-most X-Forwarded-For entries were believed")
		}
		if limited(h, tok, "198.51.100.2") {
			t.Fatal("198.51.100.2 was limited by another client's requests: every client shares the proxy's bucket")
		}
	})
	t.Run("IPv6 clients are limited per /64", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config, _ *Options) {
			c.Listen.TrustedProxies = []string{"127.0.0.1"}
			c.Limits.RatePerSecond, c.Limits.RateBurst = 0.001, 3
		})
		tok := h.issuer.Mint(nil)
		for i := range 3 {
			if limited(h, tok, fmt.Sprintf("2001:db8:0:7::%x", i+1)) {
				t.Fatalf("request %d limited within the /64's burst", i+1)
			}
		}
		if !limited(h, tok, "2001:db8:0:7:ffff::9") {
			t.Fatal("a new address in the same /64 got a fresh bucket: one host could rotate addresses forever")
		}
		if limited(h, tok, "2001:db8:0:8::1") {
			t.Fatal("another /64 was limited by its neighbour's requests")
		}
	})
	t.Run("untrusted peer: X-Forwarded-For is ignored", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config, _ *Options) {
			c.Limits.RatePerSecond, c.Limits.RateBurst = 0.001, 3
		})
		tok := h.issuer.Mint(nil)
		for i := range 3 {
			if limited(h, tok, fmt.Sprintf("198.51.100.%d", i+10)) {
				t.Fatalf("request %d limited within the peer's burst", i+1)
			}
		}
		if !limited(h, tok, "198.51.100.99") {
			t.Fatal("a new X-Forwarded-For from an untrusted peer got a fresh bucket: the header was believed")
		}
	})
}
