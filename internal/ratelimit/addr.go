package ratelimit

import (
	"net/netip"
	"strings"
)

// IPv6 prefixes that group addresses for limiting. A /64 is what one
// subscriber, host or virtual machine gets (SLAAC and privacy addresses
// rotate inside it at will), so limits keyed by the full IPv6 address cost
// an attacker nothing; a /48 is the usual assignment of one site.
const (
	IPv6AddrBits    = 64
	IPv6NetworkBits = 48
	IPv4NetworkBits = 24
)

// maxRawKey bounds a key made from something that is not an IP address
// (it is used as given, so it must not grow memory without bound).
const maxRawKey = 64

// AddrKey maps a client address to the key it is limited under: an IPv4
// address as is, an IPv6 address masked to its /64 ("2001:db8:1:2::/64"),
// an IPv4-mapped IPv6 address ("::ffff:192.0.2.1") as its IPv4 address.
// A zone is dropped, and an "[addr]" or "addr:port" form is accepted. A
// value that is not an IP address (tests, a Unix socket) is its own key,
// cut to 64 bytes; "" stays "".
func AddrKey(addr string) string {
	ip, ok := parseAddr(addr)
	if !ok {
		return raw(addr)
	}
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, IPv6AddrBits).Masked().String()
}

// AppendAddrKey appends AddrKey(addr) to dst: the same key, without
// allocating when dst has room (the per-request limiter looks it up with
// [Limiter.TakeBytes]).
func AppendAddrKey(dst []byte, addr string) []byte {
	ip, ok := parseAddr(addr)
	if !ok {
		return append(dst, raw(addr)...)
	}
	if ip.Is4() {
		return ip.AppendTo(dst)
	}
	return netip.PrefixFrom(ip, IPv6AddrBits).Masked().AppendTo(dst)
}

// NetworkKey maps a client address to the wider network it belongs to, for
// caps that one site with many subscriber prefixes must not exhaust: IPv4
// masked to /24, IPv6 to /48 (IPv4-mapped IPv6 as IPv4). Non-addresses are
// handled as in AddrKey.
func NetworkKey(addr string) string {
	ip, ok := parseAddr(addr)
	if !ok {
		return raw(addr)
	}
	bits := IPv6NetworkBits
	if ip.Is4() {
		bits = IPv4NetworkBits
	}
	return netip.PrefixFrom(ip, bits).Masked().String()
}

func parseAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if strings.Count(s, ":") == 1 {
		// "v4:port" (a failed ParseAddr would allocate its error).
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr().WithZone("").Unmap(), true
		}
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		// "[v6]", "[v6]:port", "v4:port".
		ap, err2 := netip.ParseAddrPort(s)
		if err2 != nil {
			if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
				if ip, err = netip.ParseAddr(s[1 : len(s)-1]); err == nil {
					return ip.WithZone("").Unmap(), true
				}
			}
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	return ip.WithZone("").Unmap(), true
}

func raw(s string) string {
	if len(s) > maxRawKey {
		return s[:maxRawKey]
	}
	return s
}
