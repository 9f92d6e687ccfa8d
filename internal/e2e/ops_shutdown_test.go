package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// opsGracefulShutdown: SIGTERM turns /readyz 503 while the listener still
// accepts; then the listener closes; a request in flight all along still
// completes; the process exits 0.
func opsGracefulShutdown(t *testing.T, bin string) {
	node := opsStartNode(t, bin, "node (shutdown)", filepath.Join(t.TempDir(), "data"), proc.FreeAddr(t),
		"KEYWARDEN_LISTEN_DRAIN_DELAY=2s",
		"KEYWARDEN_LISTEN_READ_TIMEOUT=60s",
		"KEYWARDEN_LISTEN_SHUTDOWN_TIMEOUT=30s",
	)
	node.WaitReady(t, "/healthz")

	// A slow upload: headers and the first byte of the body now, the rest
	// after the listener has closed.
	body := `{"ttl":"1m"}`
	c, err := net.Dial("tcp", node.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/admin/users/alice/session-tokens HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", node.Addr, opsAdminKey, len(body), body[:1])
	// In its handler once /metrics counts it besides the /metrics request.
	opsEventually(t, 15*time.Second, "the slow upload reaches its handler", func() (bool, string) {
		v, err := opsMetric(node, "keywarden_http_in_flight_requests")
		return err == nil && v >= 2, fmt.Sprintf("%v %v", v, err)
	})

	if err := node.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Draining: readiness fails while the listener still accepts.
	opsEventually(t, 10*time.Second, "/readyz 503 draining", func() (bool, string) {
		st, b, _, err := opsGet(node.URL("/readyz"))
		if err != nil {
			return false, err.Error()
		}
		var r opsReadiness
		_ = json.Unmarshal(b, &r)
		return st == http.StatusServiceUnavailable && r.Checks["draining"].Status == "failing", fmt.Sprintf("%d %s", st, b)
	})
	// Then the listener closes, while the in-flight upload keeps the
	// process alive.
	opsEventually(t, 20*time.Second, "the listener closes after the drain", func() (bool, string) {
		d, err := net.DialTimeout("tcp", node.Addr, time.Second)
		if err == nil {
			d.Close()
			return false, "still accepting"
		}
		return true, ""
	})
	if node.Exited() {
		t.Fatalf("the process exited with a request in flight: %v", node.Err())
	}
	if _, err := io.WriteString(c, body[1:]); err != nil {
		t.Fatalf("finishing the in-flight upload: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the in-flight request got no answer during shutdown: %v", err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(rb, &tok) != nil || tok.Token == "" {
		t.Errorf("in-flight request during shutdown: %d %s, want 201 with a token", resp.StatusCode, bytes.TrimSpace(rb))
	}
	if code := node.WaitExit(t, 40*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}
