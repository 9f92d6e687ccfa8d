package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// opsAbuse: oversized bodies, slow clients, rate limits and too many
// concurrent requests get the documented answers, and the node stays
// healthy for everyone else.
func opsAbuse(t *testing.T, bin string) {
	node := opsStartNode(t, bin, "node (abuse)", filepath.Join(t.TempDir(), "data"), proc.FreeAddr(t),
		"KEYWARDEN_LIMITS_MAX_BODY_BYTES=4096",
		"KEYWARDEN_LISTEN_READ_HEADER_TIMEOUT=2s",
		"KEYWARDEN_LISTEN_READ_TIMEOUT=30s",
		"KEYWARDEN_LISTEN_MAX_CONCURRENT=2",
		"KEYWARDEN_LIMITS_RATE_PER_SECOND=2",
		"KEYWARDEN_LIMITS_RATE_BURST=2",
	)
	node.WaitReady(t, "/healthz")
	healthy := func(t *testing.T) {
		t.Helper()
		if st, body, _, err := opsGet(node.URL("/healthz")); err != nil || st != http.StatusOK {
			t.Fatalf("/healthz after the abuse: %d %s %v", st, body, err)
		}
		if st, r := opsReady(t, node); st != http.StatusOK {
			t.Fatalf("/readyz after the abuse: %d %+v", st, r)
		}
	}
	t.Run("BodyTooLarge", func(t *testing.T) { opsBodyTooLarge(t, node); healthy(t) })
	t.Run("Slowloris", func(t *testing.T) { opsSlowloris(t, node); healthy(t) })
	t.Run("Overload", func(t *testing.T) { opsOverload(t, node); healthy(t) })
	t.Run("RateLimit", func(t *testing.T) { opsRateLimit(t, node); healthy(t) })
}

func opsBodyTooLarge(t *testing.T, node *proc.Node) {
	big := `{"key":"` + strings.Repeat("A", 8192) + `"}`
	admin := map[string]string{"Authorization": "Bearer " + opsAdminKey, "Content-Type": "application/json"}
	tests := []struct {
		name   string
		method string
		path   string
		body   io.Reader
		hdr    map[string]string
	}{
		// Content-Length over the limit: refused before any handler runs.
		// The client waits for the answer before sending the body
		// (Expect: 100-continue, as clients do for large bodies): the
		// refusal then never races the client's write of a body the
		// server will not read.
		{"declared length", http.MethodPut, "/v1/firebase/key", strings.NewReader(big), map[string]string{"Content-Type": "application/json", "Expect": "100-continue"}},
		// Chunked, no length: refused while the handler reads the body.
		{"chunked", http.MethodPost, "/v1/admin/users/alice/session-tokens", io.MultiReader(strings.NewReader(big)), admin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, body, hdr, err := opsDo(tt.method, node.URL(tt.path), tt.body, tt.hdr)
			if err != nil {
				t.Fatal(err)
			}
			if st != http.StatusRequestEntityTooLarge || opsErrorCode(body) != "body_too_large" {
				t.Errorf("%s %s with 8 KiB: %d %s, want 413 body_too_large", tt.method, tt.path, st, body)
			}
			if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("413 answered with Content-Type %q, want JSON", ct)
			}
		})
	}
	// A body within the limit on the same admin route is served (the
	// negative case: the limit is not refusing everything).
	st, body, _, err := opsDo(http.MethodPost, node.URL("/v1/admin/users/alice/session-tokens"), strings.NewReader(`{"ttl":"1m"}`), admin)
	if err != nil || st != http.StatusCreated {
		t.Errorf("small body: %d %s %v, want 201", st, body, err)
	}
	// Headers over the server's header limit (32 KiB): 431 from net/http.
	st, _, _, err = opsDo(http.MethodGet, node.URL("/healthz"), nil, map[string]string{"X-Filler": strings.Repeat("b", 64<<10)})
	if err != nil || st != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %d %v, want 431", st, err)
	}
}

// opsSlowloris opens connections that send their headers one byte per
// second. The server must close them (listen.read_header_timeout = 2s)
// long before they finish, and serve other clients meanwhile.
func opsSlowloris(t *testing.T, node *proc.Node) {
	const conns = 5
	req := "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + strings.Repeat("s", 40) + "\r\n\r\n"
	type slow struct {
		c      net.Conn
		closed chan error
	}
	var cs []slow
	for range conns {
		c, err := net.Dial("tcp", node.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s := slow{c: c, closed: make(chan error, 1)}
		go func() {
			// Whatever the server sends (nothing, or a 408), the
			// connection must end: read until EOF or an error.
			_, err := io.Copy(io.Discard, c)
			s.closed <- err
		}()
		cs = append(cs, s)
	}
	open := conns
	closedAt := make([]int, conns)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for sent := 0; sent < len(req) && open > 0; sent++ {
		for i, s := range cs {
			if closedAt[i] != 0 {
				continue
			}
			select {
			case <-s.closed:
				closedAt[i] = sent
				open--
				continue
			default:
			}
			if _, err := s.c.Write([]byte{req[sent]}); err != nil {
				closedAt[i] = sent
				open--
			}
		}
		// Others are served while the slow clients hang on.
		if st, _, _, err := opsGet(node.URL("/healthz")); err != nil || st != http.StatusOK {
			t.Fatalf("/healthz while %d slow clients are connected: %d %v", open, st, err)
		}
		if open > 0 {
			<-tick.C
		}
	}
	if open > 0 {
		t.Fatalf("%d of %d slow connections stayed open until they sent all %d header bytes: read_header_timeout is not enforced", open, conns, len(req))
	}
	t.Logf("slow connections closed by the server after %v of %d header bytes", closedAt, len(req))
}

// opsHoldRequest starts an admin request whose body never arrives, so its
// handler holds a concurrency slot until the connection closes.
func opsHoldRequest(t *testing.T, node *proc.Node) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", node.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/admin/users/alice/session-tokens HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", node.Addr, opsAdminKey)
	return c
}

// opsOverload holds listen.max_concurrent (2) requests open; the next
// request is refused with 503 overloaded and Retry-After; once they end,
// the node serves again.
func opsOverload(t *testing.T, node *proc.Node) {
	held := []net.Conn{opsHoldRequest(t, node), opsHoldRequest(t, node)}
	var body []byte
	var hdr http.Header
	// Any route but the health probes counts (an unknown admin one is
	// cheapest and takes no client rate-limit tokens: the cap answers
	// before routing); the probes stay exempt, so a busy node is not taken
	// out of its load balancer.
	opsEventually(t, 15*time.Second, "a request beyond max_concurrent is refused", func() (bool, string) {
		st, b, h, err := opsGet(node.URL("/v1/admin/no-such-route"))
		body, hdr = b, h
		return err == nil && st == http.StatusServiceUnavailable, fmt.Sprintf("%d %s %v", st, b, err)
	})
	if st, b, _, err := opsGet(node.URL("/healthz")); err != nil || st != http.StatusOK {
		t.Errorf("/healthz while overloaded: %d %s %v, want 200 (health probes pass the cap)", st, b, err)
	}
	if opsErrorCode(body) != "overloaded" {
		t.Errorf("refused with %s, want code overloaded", body)
	}
	if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q on 503 overloaded", hdr.Get("Retry-After"))
	}
	for _, c := range held {
		c.Close()
	}
	opsEventually(t, 15*time.Second, "the node serves again once the held requests end", func() (bool, string) {
		st, b, _, err := opsGet(node.URL("/v1/admin/no-such-route"))
		return err == nil && st == http.StatusUnauthorized, fmt.Sprintf("%d %s %v", st, b, err)
	})
}

// opsRateLimit: client routes allow rate_burst (2) requests at once per
// address, then 429 rate_limited with Retry-After; health routes are not
// limited; after Retry-After the client is served again.
func opsRateLimit(t *testing.T, node *proc.Node) {
	var got429 bool
	var retry int
	var first int
	for i := range 20 {
		st, body, hdr, err := opsGet(node.URL("/v1/firebase/key"))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = st
		}
		if st == http.StatusTooManyRequests {
			if code := opsErrorCode(body); code != "rate_limited" {
				t.Errorf("429 with code %q, want rate_limited", code)
			}
			retry, err = strconv.Atoi(hdr.Get("Retry-After"))
			if err != nil || retry < 1 {
				t.Errorf("429 with Retry-After %q, want whole seconds ≥ 1", hdr.Get("Retry-After"))
			}
			got429 = true
			break
		}
	}
	if first == http.StatusTooManyRequests {
		t.Error("the very first request was rate limited")
	}
	if !got429 {
		t.Fatal("20 back-to-back requests with rate 2/s, burst 2: none was refused")
	}
	if st, _, _, err := opsGet(node.URL("/healthz")); err != nil || st != http.StatusOK {
		t.Errorf("/healthz while the address is rate limited: %d %v", st, err)
	}
	time.Sleep(time.Duration(retry) * time.Second)
	if st, body, _, err := opsGet(node.URL("/v1/firebase/key")); err != nil || st == http.StatusTooManyRequests {
		t.Errorf("after Retry-After: %d %s %v, want served", st, body, err)
	}
}
