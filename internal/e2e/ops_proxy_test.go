package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// opsHAProxyPassthrough is a TCP-passthrough HAProxy (as in front of an
// appliance that terminates its own TLS) that prefixes every connection to
// the node with a PROXY protocol v2 header naming the client.
func opsHAProxyPassthrough(t *testing.T, node string) (frontend string) {
	t.Helper()
	bin := opsNeedTool(t, "haproxy")
	dir := t.TempDir()
	frontend = proc.FreeAddr(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	conf := fmt.Sprintf(`global
    maxconn 256

defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend keywarden_tcp
    bind %s
    default_backend keywarden

backend keywarden
    server node1 %s send-proxy-v2
`, frontend, node)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	log := &proc.SyncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- haproxy output:\n%s", log.String())
		}
	})
	opsEventually(t, 10*time.Second, "haproxy listening", func() (bool, string) {
		c, err := net.DialTimeout("tcp", frontend, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
	return frontend
}

// opsGetFrom sends GET url from the loopback source address src.
func opsGetFrom(src, url string, hdr map[string]string) (int, []byte, error) {
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: d.DialContext}}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// opsProxyProtocol: behind a TCP-passthrough HAProxy that sends PROXY v2,
// two clients (127.0.0.2 and 127.0.0.3) are rate-limited separately,
// because the node believes the header from its trusted proxy. A client
// that sends a PROXY header straight to the node (it is not a trusted
// proxy's address as the node sees it) is refused.
func opsProxyProtocol(t *testing.T, bin string) {
	opsNeedTool(t, "haproxy")
	addr := proc.FreeAddr(t)
	node := opsStartNode(t, bin, "node (PROXY protocol)", filepath.Join(t.TempDir(), "data"), addr,
		"KEYWARDEN_LISTEN_TRUSTED_PROXIES=127.0.0.1",
		"KEYWARDEN_LIMITS_RATE_PER_SECOND=0.01",
		"KEYWARDEN_LIMITS_RATE_BURST=3",
	)
	node.WaitReady(t, "/healthz")
	lb := opsHAProxyPassthrough(t, addr)
	key := "http://" + lb + "/v1/firebase/key"                       // a client route: per-address limited
	auth := map[string]string{"Authorization": "Bearer not-a-token"} // refused after the limiter

	statuses := func(src string, n int) []int {
		var out []int
		for range n {
			st, body, err := opsGetFrom(src, key, auth)
			if err != nil {
				t.Fatalf("GET from %s through HAProxy: %v", src, err)
			}
			if st != http.StatusTooManyRequests && st != http.StatusServiceUnavailable {
				// Firebase is not configured here: 503 firebase_not_configured
				// once past the limiter, 429 when the limiter refuses.
				t.Fatalf("GET from %s: %d %s", src, st, body)
			}
			out = append(out, st)
		}
		return out
	}
	a := statuses("127.0.0.2", 5)
	if a[0] == http.StatusTooManyRequests || a[4] != http.StatusTooManyRequests {
		t.Fatalf("client 127.0.0.2: statuses %v, want served first and 429 after its burst of 3", a)
	}
	b := statuses("127.0.0.3", 3)
	for i, st := range b {
		if st == http.StatusTooManyRequests {
			t.Fatalf("client 127.0.0.3 request %d: %d, want served (its own bucket; statuses %v): clients behind the balancer share one address", i+1, st, b)
		}
	}

	// From 127.0.0.4 straight to the node (not through HAProxy), the same
	// header is a forgery: the node sees 127.0.0.4, which it does not trust.
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.4")}}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp, err := io.ReadAll(c); err == nil && len(resp) > 0 && string(resp[:12]) == "HTTP/1.1 200" {
		t.Fatalf("a PROXY header from an untrusted source was believed: %q", resp)
	}
	if st, _, _, err := opsGet(node.URL("/healthz")); err != nil || st != http.StatusOK {
		t.Fatalf("/healthz after the refused header: %d %v", st, err)
	}
}
