// Operations end-to-end tests (issue 7): the real keywarden binary, built
// once with cgo so `keywarden dev` runs on the simulated TPM, behind Debian's
// HAProxy, under abuse, and through a graceful shutdown.
//
// Every process is a child of the test, on free loopback ports, with its
// own data folder; t.Cleanup kills whatever is left. The subtests run one
// after another (one simulated TPM per keywarden process, and a data folder
// is locked by the process that has it open).
//
//	go test ./internal/e2e/ -run Ops
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// opsAdminKey is dev mode's plain-text admin key for these tests.
const opsAdminKey = "ops-e2e-admin-key-0123456789"

// TestOps runs the operations scenarios against one build of the binary.
func TestOps(t *testing.T) {
	bin := opsBuild(t)
	t.Run("HAProxyReadiness", func(t *testing.T) { opsHAProxyReadiness(t, bin) })
	t.Run("ProxyProtocol", func(t *testing.T) { opsProxyProtocol(t, bin) })
	t.Run("Abuse", func(t *testing.T) { opsAbuse(t, bin) })
	t.Run("GracefulShutdown", func(t *testing.T) { opsGracefulShutdown(t, bin) })
}

// opsBuild compiles cmd/keywarden (a development build: cgo, simulator).
func opsBuild(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(t.TempDir(), "keywarden")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/keywarden")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/keywarden: %v\n%s", err, out)
	}
	return bin
}

// opsFreeAddr returns a loopback address with a port nobody listens on.
func opsFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// opsLog is a goroutine-safe buffer for a child's output.
type opsLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *opsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *opsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// opsNode is a running `keywarden dev`.
type opsNode struct {
	name string
	addr string
	cmd  *exec.Cmd
	log  *opsLog
	done chan struct{}
	err  error // the exit status, once done is closed
}

// opsStartNode runs `keywarden dev` on addr (public and admin routes on
// one listener, as in dev mode) with dataDir; env adds KEYWARDEN_…
// settings. Nothing of the caller's KEYWARDEN_… environment leaks in.
func opsStartNode(t *testing.T, bin, name, dataDir, addr string, env ...string) *opsNode {
	t.Helper()
	cmd := exec.Command(bin, "dev")
	cmd.Dir = filepath.Dir(dataDir)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARDEN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"KEYWARDEN_DATA_DIR="+dataDir,
		"KEYWARDEN_LISTEN_ADDR="+addr,
		"KEYWARDEN_LISTEN_ADMIN_ADDR="+addr,
		"KEYWARDEN_ADMIN_KEY="+opsAdminKey,
	)
	cmd.Env = append(cmd.Env, env...)
	n := &opsNode{name: name, addr: addr, cmd: cmd, log: &opsLog{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		n.err = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		if !n.exited() {
			_ = cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, n.log.String())
		}
	})
	return n
}

func (n *opsNode) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *opsNode) url(path string) string { return "http://" + n.addr + path }

// waitHealthy waits until /healthz answers 200 (the process serves).
func (n *opsNode) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if n.exited() {
			t.Fatalf("%s exited during start-up: %v\n%s", n.name, n.err, n.log.String())
		}
		if st, _, _, err := opsGet(n.url("/healthz")); err == nil && st == http.StatusOK {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: /healthz never answered 200\n%s", n.name, n.log.String())
}

// stop sends SIGTERM and returns the exit code once the process is gone.
func (n *opsNode) stop(t *testing.T) int {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", n.name, err)
	}
	return n.waitExit(t, 60*time.Second)
}

// waitExit returns the exit code; it fails the test if the process does
// not exit within limit (a hung shutdown).
func (n *opsNode) waitExit(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-n.done:
	case <-time.After(limit):
		t.Fatalf("%s did not exit within %s", n.name, limit)
	}
	var ee *exec.ExitError
	switch {
	case n.err == nil:
		return 0
	case errors.As(n.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", n.name, n.err)
	return -1
}

// opsClient makes one connection per request, so each probe sees the
// listener as it is now.
var opsClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

func opsGet(url string) (int, []byte, http.Header, error) {
	return opsDo(http.MethodGet, url, nil, nil)
}

func opsDo(method, url string, body io.Reader, hdr map[string]string) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := opsClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

// opsErrorCode is the stable code of Keywarden's JSON error body.
func opsErrorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Error.Code
}

// opsReadiness is /readyz's JSON.
type opsReadiness struct {
	Status string `json:"status"`
	Checks map[string]struct {
		Status string `json:"status"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

func opsReady(t *testing.T, n *opsNode) (int, opsReadiness) {
	t.Helper()
	st, body, _, err := opsGet(n.url("/readyz"))
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	var r opsReadiness
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/readyz answered %d with non-JSON %q", st, body)
	}
	return st, r
}

// opsEventually polls cond every 100 ms until it holds or limit passes;
// limit bounds a wait, it does not measure speed.
func opsEventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s (last: %s)", what, limit, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// opsNeedTool skips when a Debian tool is missing on a developer's
// machine and fails under CI, where scripts/setup.sh installs it.
func opsNeedTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: scripts/setup.sh installs it", name)
		}
		t.Skipf("%s not found (run scripts/setup.sh)", name)
	}
	return p
}

// opsMetric reads one unlabelled sample from /metrics.
func opsMetric(n *opsNode, name string) (float64, error) {
	st, body, _, err := opsDo(http.MethodGet, n.url("/metrics"), nil, map[string]string{"Authorization": "Bearer " + opsAdminKey})
	if err != nil {
		return 0, err
	}
	if st != http.StatusOK {
		return 0, fmt.Errorf("/metrics answered %d", st)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}
