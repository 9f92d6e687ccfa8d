// Package netcheck holds the one rule for URLs of the services Keywarden
// calls (Vault, Portal's API, Google's certificates): https, or plain http
// to this host only. Credentials and secrets travel on those connections,
// so plain http is allowed only where nothing can listen on the way.
package netcheck

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// LoopbackHost reports whether h, a URL's Hostname(), names this host:
// "localhost", an address in 127.0.0.0/8, or ::1. Names that merely start
// like one ("127.0.0.1.example", "localhost.example") are not: a resolver
// may send them anywhere.
func LoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ServiceURL checks that raw is an absolute http(s) URL with a host, and
// that plain http goes to a loopback host only. The error does not name the
// setting: callers prefix it with their field name.
func ServiceURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q is not an http(s) URL", raw)
	}
	if u.Scheme == "http" && !LoopbackHost(u.Hostname()) {
		return fmt.Errorf("%q: plain http is allowed only to a loopback address (127.0.0.0/8, ::1, localhost): credentials would travel in the clear; use https", raw)
	}
	return nil
}
