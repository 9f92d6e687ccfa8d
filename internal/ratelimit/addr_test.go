package ratelimit

import "testing"

func TestAddrKey(t *testing.T) {
	tests := []struct{ in, addr, net string }{
		{"192.0.2.7", "192.0.2.7", "192.0.2.0/24"},
		{"192.0.2.7:443", "192.0.2.7", "192.0.2.0/24"},
		{"::ffff:192.0.2.7", "192.0.2.7", "192.0.2.0/24"},
		{"[::ffff:192.0.2.7]:80", "192.0.2.7", "192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", "2001:db8:1::/48"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::/64", "2001:db8:1::/48"},
		{"2001:DB8:1:2::1", "2001:db8:1:2::/64", "2001:db8:1::/48"},
		{"[2001:db8:1:2::1]", "2001:db8:1:2::/64", "2001:db8:1::/48"},
		{"[2001:db8:1:2::1]:8443", "2001:db8:1:2::/64", "2001:db8:1::/48"},
		{"fe80::1%eth0", "fe80::/64", "fe80::/48"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64", "2001:db8:1::/48"},
		{"", "", ""},
		{"not an address", "not an address", "not an address"},
		{string(make([]byte, 200)), string(make([]byte, 64)), string(make([]byte, 64))},
	}
	for _, tc := range tests {
		if got := AddrKey(tc.in); got != tc.addr {
			t.Errorf("AddrKey(%q) = %q, want %q", tc.in, got, tc.addr)
		}
		if got := string(AppendAddrKey([]byte("x"), tc.in)); got != "x"+tc.addr {
			t.Errorf("AppendAddrKey(%q) = %q, want %q", tc.in, got, "x"+tc.addr)
		}
		if got := NetworkKey(tc.in); got != tc.net {
			t.Errorf("NetworkKey(%q) = %q, want %q", tc.in, got, tc.net)
		}
	}
	// The attacker's view: every address of one /64 is one key, so
	// rotating through them buys nothing.
	l := New(3, 1e9, 100)
	for i := range 3 {
		if ok, _ := l.Take(AddrKey("2001:db8:9:9::"+string(rune('a'+i))), t0); !ok {
			t.Fatal("refused within the burst")
		}
	}
	if ok, _ := l.Take(AddrKey("2001:db8:9:9:dead:beef:1:1"), t0); ok {
		t.Fatal("another address of the same /64 has its own bucket")
	}
	if ok, _ := l.Take(AddrKey("2001:db8:9:a::1"), t0); !ok {
		t.Fatal("the next /64 was refused")
	}
}
