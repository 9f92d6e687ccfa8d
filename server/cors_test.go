package server

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
)

// TestCORSExactOrigins: only the listed origins (or, with none listed, the
// https passkey origins) get Access-Control-Allow-Origin; a subdomain or a
// look-alike of an allowed origin does not.
func TestCORSExactOrigins(t *testing.T) {
	preflight := func(h *harness, origin string) string {
		r := h.Do("OPTIONS", "/v1/firebase/key", nil, "Origin", origin, "Access-Control-Request-Method", "GET")
		return r.Header.Get("Access-Control-Allow-Origin")
	}
	t.Run("listed origins", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config, _ *Options) {
			c.Listen.CORSOrigins = []string{"https://app.example.com"}
		})
		if got := preflight(h, "https://app.example.com"); got != "https://app.example.com" {
			t.Errorf("listed origin: Access-Control-Allow-Origin %q", got)
		}
		for _, o := range []string{"https://evil.app.example.com", "https://app.example.com.evil.test", "http://app.example.com", "null"} {
			if got := preflight(h, o); got != "" {
				t.Errorf("origin %q allowed (%q): only exact matches may be", o, got)
			}
		}
	})
	t.Run("default: the https passkey origins", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config, _ *Options) {
			c.Listen.CORSOrigins = nil
			c.Passkey.Origins = []string{"https://wallet.example.com/", "http://localhost:9999", "android:apk-key-hash:AAAA"}
		})
		if got := preflight(h, "https://wallet.example.com"); got != "https://wallet.example.com" {
			t.Errorf("https passkey origin not allowed by default: %q", got)
		}
		for _, o := range []string{"http://localhost:9999", "android:apk-key-hash:AAAA", "https://other.example.com"} {
			if got := preflight(h, o); got != "" {
				t.Errorf("origin %q allowed by default (%q)", o, got)
			}
		}
	})
}

// TestCORSAllowsProofHeaders: a web app on an allowed origin can send every
// proof header GET /v1/me/events documents (a preflight that leaves one out
// makes the browser refuse that proof).
func TestCORSAllowsProofHeaders(t *testing.T) {
	h := newHarness(t, func(c *config.Config, _ *Options) {
		c.Listen.CORSOrigins = []string{"https://app.example.com"}
	})
	for _, hd := range []string{"Authorization", "X-Passkey-Proof", "X-Firebase-Token"} {
		r := h.Do("OPTIONS", "/v1/me/events", nil, "Origin", "https://app.example.com",
			"Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", strings.ToLower(hd))
		if !strings.Contains(strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), strings.ToLower(hd)) {
			t.Errorf("preflight for %s: Access-Control-Allow-Headers %q", hd, r.Header.Get("Access-Control-Allow-Headers"))
		}
	}
}
