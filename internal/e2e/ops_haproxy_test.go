package e2e

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// opsHAProxy is a running haproxy that health-checks one Keywarden node
// with the configuration docs/OPERATIONS.md recommends.
type opsHAProxy struct {
	sock     string // stats socket
	frontend string // address HAProxy listens on
	log      *proc.SyncBuffer
}

const (
	opsBackend = "keywarden"
	opsServer  = "node1"
)

// opsHAProxyConfig is the load balancer configuration under test; the
// same health check is shown in docs/OPERATIONS.md.
func opsHAProxyConfig(sock, frontend, node string) string {
	return fmt.Sprintf(`global
    stats socket %s mode 600 level admin
    maxconn 256

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend keywarden_public
    bind %s
    default_backend %s

backend %s
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
    server %s %s check
`, sock, frontend, opsBackend, opsBackend, opsServer, node)
}

func opsStartHAProxy(t *testing.T, node string) *opsHAProxy {
	t.Helper()
	bin := opsNeedTool(t, "haproxy")
	dir := t.TempDir()
	h := &opsHAProxy{sock: filepath.Join(dir, "stats.sock"), frontend: proc.FreeAddr(t), log: &proc.SyncBuffer{}}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(opsHAProxyConfig(h.sock, h.frontend, node)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", cfg) // -db: foreground, no daemon
	cmd.Stdout, cmd.Stderr = h.log, h.log
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
			t.Logf("--- haproxy output:\n%s", h.log.String())
		}
	})
	opsEventually(t, 10*time.Second, "haproxy stats socket", func() (bool, string) {
		_, err := h.server()
		return err == nil, fmt.Sprint(err)
	})
	return h
}

// opsServerState is one backend server's row of `show stat`.
type opsServerState struct {
	Status      string // UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (going up), …
	CheckStatus string // L7OK, L7STS (wrong HTTP status), L4CON (connection refused), …
	CheckCode   string // HTTP status of the last check
}

func (s opsServerState) String() string {
	return fmt.Sprintf("status=%q check=%s/%s", s.Status, s.CheckStatus, s.CheckCode)
}

// server asks the stats socket for the backend server's state.
func (h *opsHAProxy) server() (opsServerState, error) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return opsServerState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return opsServerState{}, err
	}
	// The first line is "# pxname,svname,…": the column names.
	r := bufio.NewReader(c)
	header, err := r.ReadString('\n')
	if err != nil {
		return opsServerState{}, err
	}
	cols := strings.Split(strings.TrimSuffix(strings.TrimPrefix(header, "# "), "\n"), ",")
	idx := map[string]int{}
	for i, c := range cols {
		idx[c] = i
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return opsServerState{}, err
		}
		get := func(name string) string {
			if i, ok := idx[name]; ok && i < len(rec) {
				return rec[i]
			}
			return ""
		}
		if get("pxname") == opsBackend && get("svname") == opsServer {
			return opsServerState{Status: get("status"), CheckStatus: get("check_status"), CheckCode: get("check_code")}, nil
		}
	}
	return opsServerState{}, fmt.Errorf("no %s/%s in show stat", opsBackend, opsServer)
}

// waitStatus waits until HAProxy reports the server exactly UP or DOWN.
func (h *opsHAProxy) waitStatus(t *testing.T, want string, limit time.Duration) opsServerState {
	t.Helper()
	var st opsServerState
	opsEventually(t, limit, "HAProxy reports "+want, func() (bool, string) {
		var err error
		st, err = h.server()
		if err != nil {
			return false, err.Error()
		}
		return st.Status == want, st.String()
	})
	return st
}

// opsHAProxyReadiness: HAProxy health-checks the appliance with /readyz.
// The backend is UP when ready; DOWN during a SIGTERM drain while the node
// still answers (503, not a refused connection); UP after a restart; DOWN
// while the root key cannot be unsealed (another simulated TPM); UP again
// with the right TPM.
func opsHAProxyReadiness(t *testing.T, bin string) {
	opsNeedTool(t, "haproxy")
	data := filepath.Join(t.TempDir(), "data")
	addr := proc.FreeAddr(t)
	env := []string{"KEYWARDEN_LISTEN_DRAIN_DELAY=3s"}

	node := opsStartNode(t, bin, "node (first start)", data, addr, env...)
	node.WaitReady(t, "/healthz")
	if st, r := opsReady(t, node); st != http.StatusOK {
		t.Fatalf("/readyz %d %+v before HAProxy started", st, r)
	}
	lb := opsStartHAProxy(t, addr)
	st := lb.waitStatus(t, "UP", 20*time.Second)
	t.Logf("ready: %s", st)
	if code, _, _, err := opsGet("http://" + lb.frontend + "/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("through HAProxy: /healthz %d %v", code, err)
	}

	// SIGTERM: the node drains (readiness 503 while it still serves) and
	// HAProxy takes it out before the listener closes.
	if err := node.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st = lb.waitStatus(t, "DOWN", 20*time.Second)
	if node.Exited() {
		t.Fatalf("HAProxy saw the node DOWN only after it exited (%s): the drain window was not visible", st)
	}
	if st.CheckStatus != "L7STS" || st.CheckCode != "503" {
		t.Errorf("DOWN during the drain with %s, want L7STS/503 (readiness refused, node reachable)", st)
	}
	if code, _, _, err := opsGet("http://" + lb.frontend + "/healthz"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("through HAProxy with its only node DOWN: %d %v, want 503", code, err)
	}
	if code := node.WaitExit(t, 60*time.Second); code != 0 {
		t.Fatalf("drained node exited %d, want 0", code)
	}

	// Restart on the same data folder and the same TPM: UP again.
	node = opsStartNode(t, bin, "node (restart)", data, addr, env...)
	node.WaitReady(t, "/healthz")
	st = lb.waitStatus(t, "UP", 20*time.Second)
	t.Logf("after restart: %s", st)
	if code := node.Stop(t); code != 0 {
		t.Fatalf("node exited %d, want 0", code)
	}

	// Another simulated TPM: the root key stays sealed. The node serves
	// health (reachable for the operator) but is not ready: DOWN, on a 503.
	node = opsStartNode(t, bin, "node (other TPM)", data, addr, append(env, "KEYWARDEN_TPM_SIMULATOR_SEED=4242")...)
	node.WaitReady(t, "/healthz")
	code, r := opsReady(t, node)
	if code != http.StatusServiceUnavailable || r.Checks["root_key"].Status != "failing" {
		t.Fatalf("sealed node: /readyz %d %+v, want 503 with root_key failing", code, r)
	}
	opsEventually(t, 20*time.Second, "HAProxy checks the sealed node", func() (bool, string) {
		s, err := lb.server()
		if err != nil {
			return false, err.Error()
		}
		return s.Status == "DOWN" && s.CheckStatus == "L7STS" && s.CheckCode == "503", s.String()
	})
	if code := node.Stop(t); code != 0 {
		t.Fatalf("sealed node exited %d, want 0", code)
	}

	// The right TPM again: unsealed, UP.
	node = opsStartNode(t, bin, "node (right TPM)", data, addr, env...)
	node.WaitReady(t, "/healthz")
	st = lb.waitStatus(t, "UP", 20*time.Second)
	if code, r := opsReady(t, node); code != http.StatusOK || r.Checks["root_key"].Status != "ok" {
		t.Errorf("after the right TPM came back: /readyz %d %+v", code, r)
	}
	t.Logf("right TPM again: %s", st)
}

// TestOpsDocHealthCheck keeps docs/OPERATIONS.md's HAProxy example on the
// health check this file tests.
func TestOpsDocHealthCheck(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := opsHAProxyConfig("/run/haproxy.sock", "127.0.0.1:1", "127.0.0.1:2")
	for _, line := range []string{"option httpchk GET /readyz", "http-check expect status 200"} {
		if !strings.Contains(cfg, line) {
			t.Fatalf("the tested configuration lacks %q", line)
		}
		if !strings.Contains(string(doc), line) {
			t.Errorf("docs/OPERATIONS.md's HAProxy example lacks %q (tested in opsHAProxyConfig)", line)
		}
	}
}
