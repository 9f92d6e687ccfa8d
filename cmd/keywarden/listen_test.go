package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// serveRemoteAddr serves, on a listenTCP listener, the remote address each
// request arrived from.
func serveRemoteAddr(t *testing.T, trusted []string) string {
	t.Helper()
	ln, err := listenTCP("127.0.0.1:0", trusted, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	}), ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// askRemoteAddr sends one request on a fresh connection, optionally
// preceded by a PROXY header (version 1 or 2) claiming client, and returns
// the address the server saw, or the error.
func askRemoteAddr(addr string, version byte, client string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if version != 0 {
		h := &proxyproto.Header{
			Version: version, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr:      &net.TCPAddr{IP: net.ParseIP(client), Port: 40000},
			DestinationAddr: c.RemoteAddr().(*net.TCPAddr),
		}
		if _, err := h.WriteTo(c); err != nil {
			return "", err
		}
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b)), err
}

func TestListenProxyProtocol(t *testing.T) {
	t.Run("trusted source: v1 and v2 headers name the client", func(t *testing.T) {
		addr := serveRemoteAddr(t, []string{"127.0.0.1/32"})
		for _, v := range []byte{1, 2} {
			got, err := askRemoteAddr(addr, v, "203.0.113.7")
			if err != nil || got != "203.0.113.7" {
				t.Errorf("PROXY v%d from a trusted source: server saw %q (%v), want the header's client 203.0.113.7", v, got, err)
			}
		}
	})
	t.Run("trusted source without a header is its own address", func(t *testing.T) {
		addr := serveRemoteAddr(t, []string{"127.0.0.1"})
		if got, err := askRemoteAddr(addr, 0, ""); err != nil || got != "127.0.0.1" {
			t.Errorf("no header: server saw %q (%v), want 127.0.0.1", got, err)
		}
	})
	for _, trusted := range [][]string{nil, {"127.0.0.2/32"}, {"10.0.0.0/8"}} {
		t.Run(fmt.Sprintf("untrusted source with a header is refused (trusted %v)", trusted), func(t *testing.T) {
			addr := serveRemoteAddr(t, trusted)
			for _, v := range []byte{1, 2} {
				if got, err := askRemoteAddr(addr, v, "203.0.113.7"); err == nil {
					t.Errorf("PROXY v%d from an untrusted source was served (server saw %q); it must be refused", v, got)
				}
			}
			// The same source without a header is served as itself.
			if got, err := askRemoteAddr(addr, 0, ""); err != nil || got != "127.0.0.1" {
				t.Errorf("no header: server saw %q (%v), want 127.0.0.1", got, err)
			}
		})
	}
	t.Run("a bad trusted range is an error naming the setting", func(t *testing.T) {
		_, err := listenTCP("127.0.0.1:0", []string{"not-an-ip"}, time.Second)
		if err == nil || !strings.Contains(err.Error(), "listen.trusted_proxies") {
			t.Fatalf("err = %v, want one naming listen.trusted_proxies", err)
		}
	})
}
