package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// listenTCP opens a listener on addr that understands the PROXY protocol
// (v1 and v2) from trusted proxies only.
//
// Behind a TCP-passthrough load balancer (needed so that clients reach the
// appliance's own TLS, whose key attestation binds) every connection comes
// from the balancer's address, so per-address limits, ceremony caps and the
// webhook allow-list would apply to all clients at once. A balancer listed
// in listen.trusted_proxies may prefix each connection with a PROXY header
// naming the real client; the connection's remote address then becomes that
// client. The header is optional from a trusted source (HTTP-terminating
// balancers on the same list send X-Forwarded-For instead, and health
// checks may send none). A connection from any other source that opens
// with a PROXY header is refused: otherwise anyone could claim any address.
func listenTCP(addr string, trusted []string, headerTimeout time.Duration) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ranges := make([]string, 0, len(trusted))
	for _, t := range trusted {
		if t = strings.TrimSpace(t); t != "" {
			ranges = append(ranges, t)
		}
	}
	policy, err := proxyproto.PolicyFromRanges(ranges, proxyproto.USE, proxyproto.REJECT)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen.trusted_proxies: %w", err)
	}
	if headerTimeout <= 0 {
		headerTimeout = 5 * time.Second
	}
	return proxyListener{&proxyproto.Listener{Listener: ln, ConnPolicy: policy, ReadHeaderTimeout: headerTimeout}}, nil
}

// proxyListener hands out connections that keep TCP's half-close: net/http
// answers an oversized request (431, 413) and then closes only its sending
// side, waiting for the client to read the answer; without CloseWrite it
// closes at once and the client sees a reset instead of the answer.
type proxyListener struct{ *proxyproto.Listener }

func (l proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if pc, ok := c.(*proxyproto.Conn); ok {
		return halfCloser{pc}, nil
	}
	return c, nil
}

type halfCloser struct{ *proxyproto.Conn }

func (c halfCloser) CloseWrite() error {
	if cw, ok := c.Raw().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
