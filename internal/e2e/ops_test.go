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
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// opsAdminKey is dev mode's plain-text admin key for these tests.
const opsAdminKey = "ops-e2e-admin-key-0123456789"

// TestOps runs the operations scenarios against one build of the binary.
func TestOps(t *testing.T) {
	bin := proc.BuildBinary(t, "./cmd/keywarden")
	t.Run("HAProxyReadiness", func(t *testing.T) { opsHAProxyReadiness(t, bin) })
	t.Run("ProxyProtocol", func(t *testing.T) { opsProxyProtocol(t, bin) })
	t.Run("Abuse", func(t *testing.T) { opsAbuse(t, bin) })
	t.Run("GracefulShutdown", func(t *testing.T) { opsGracefulShutdown(t, bin) })
}

// opsStartNode runs `keywarden dev` on addr (public and admin routes on
// one listener, as in dev mode) with dataDir and dev mode's admin key for
// these tests; env adds KEYWARDEN_… settings.
func opsStartNode(t *testing.T, bin, name, dataDir, addr string, env ...string) *proc.Node {
	t.Helper()
	return proc.StartNode(t, bin, proc.NodeOptions{Name: name, DataDir: dataDir, Addr: addr,
		Env: append([]string{"KEYWARDEN_ADMIN_KEY=" + opsAdminKey}, env...)})
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

func opsReady(t *testing.T, n *proc.Node) (int, opsReadiness) {
	t.Helper()
	st, body, _, err := opsGet(n.URL("/readyz"))
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
func opsMetric(n *proc.Node, name string) (float64, error) {
	st, body, _, err := opsDo(http.MethodGet, n.URL("/metrics"), nil, map[string]string{"Authorization": "Bearer " + opsAdminKey})
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
