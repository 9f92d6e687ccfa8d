// Package proc holds the helpers that tests with child processes share
// (internal/e2e, cmd/keywarden, internal/testutil/vaultdev, …): a free
// loopback address, a goroutine-safe buffer for a child's output, a
// binary of this module built once per test process, and a running
// `keywarden dev` node that is killed when its test ends.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback address, 127.0.0.1:port, with a port nobody
// listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// SyncBuffer is a buffer safe for concurrent writes: a child's output, a
// logger's sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// ModuleRoot is the folder of this module's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(gomod)))
}

// builds caches BuildBinary's results for the test process.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string // package → binary
	errs map[string]error  // package → why it did not build
}

// BuildBinary compiles a command of this module (pkg is relative to the
// module root: "./cmd/keywarden") as a development build (cgo: `keywarden
// dev` has the simulated TPM and the demo page), once per test process;
// later calls, from any test, get the same file. RemoveBuilds (from
// TestMain) deletes the binaries.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[pkg]; ok {
		return bin
	}
	if err, ok := builds.errs[pkg]; ok {
		t.Fatal(err)
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "keywarden-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir, builds.bins, builds.errs = dir, map[string]string{}, map[string]error{}
	}
	bin := filepath.Join(builds.dir, fmt.Sprintf("%s-%d", filepath.Base(pkg), len(builds.bins)))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = ModuleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		builds.errs[pkg] = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		t.Fatal(builds.errs[pkg])
	}
	builds.bins[pkg] = bin
	return bin
}

// RemoveBuilds deletes what BuildBinary built; call it from TestMain after
// m.Run.
func RemoveBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
		builds.dir, builds.bins, builds.errs = "", nil, nil
	}
}

// NodeOptions configure StartNode.
type NodeOptions struct {
	Name      string   // in messages; default "keywarden dev"
	DataDir   string   // default <a new temporary folder>/data; the process runs in its parent folder
	Addr      string   // public listener; default a free loopback address
	AdminAddr string   // admin listener; default Addr (dev mode may serve both on one)
	Env       []string // KEYWARDEN_… settings, applied after those above
}

// Node is a running `keywarden dev`.
type Node struct {
	Name      string
	Addr      string
	AdminAddr string
	Cmd       *exec.Cmd
	Log       *SyncBuffer // its stdout and stderr
	done      chan struct{}
	err       error // the exit status, once done is closed
}

// StartNode runs `keywarden dev` (bin from BuildBinary) with o's settings
// and returns without waiting (WaitReady waits). Nothing of the caller's
// KEYWARDEN_… environment leaks in. When the test ends the process is
// killed if it still runs, and its output is logged if the test failed.
func StartNode(t testing.TB, bin string, o NodeOptions) *Node {
	t.Helper()
	if o.Name == "" {
		o.Name = "keywarden dev"
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(t.TempDir(), "data")
	}
	if o.Addr == "" {
		o.Addr = FreeAddr(t)
	}
	if o.AdminAddr == "" {
		o.AdminAddr = o.Addr
	}
	cmd := exec.Command(bin, "dev")
	cmd.Dir = filepath.Dir(o.DataDir)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARDEN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"KEYWARDEN_DATA_DIR="+o.DataDir,
		"KEYWARDEN_LISTEN_ADDR="+o.Addr,
		"KEYWARDEN_LISTEN_ADMIN_ADDR="+o.AdminAddr,
	)
	cmd.Env = append(cmd.Env, o.Env...)
	n := &Node{Name: o.Name, Addr: o.Addr, AdminAddr: o.AdminAddr, Cmd: cmd, Log: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = n.Log, n.Log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", n.Name, err)
	}
	go func() {
		n.err = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		if !n.Exited() {
			_ = cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("--- %s output:\n%s", n.Name, n.Log.String())
		}
	})
	return n
}

// URL is http://<public address><path>.
func (n *Node) URL(path string) string { return "http://" + n.Addr + path }

// Exited reports whether the process has exited.
func (n *Node) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is the exit status once Done is closed.
func (n *Node) Err() error {
	<-n.done
	return n.err
}

// probe makes one connection per request, so each probe sees the listener
// as it is now.
var probe = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// WaitReady waits until GET path on the public listener answers 200
// ("/healthz": the process serves; "/readyz": it is ready). It fails the
// test if the process exits first or is not ready within two minutes.
func (n *Node) WaitReady(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if n.Exited() {
			t.Fatalf("%s exited during start-up: %v\n%s", n.Name, n.err, n.Log.String())
		}
		if resp, err := probe.Get(n.URL(path)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s never answered 200\n%s", n.Name, path, n.Log.String())
}

// Stop sends SIGTERM and returns the exit code once the process is gone.
func (n *Node) Stop(t testing.TB) int {
	t.Helper()
	if err := n.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", n.Name, err)
	}
	return n.WaitExit(t, 60*time.Second)
}

// WaitExit returns the exit code; it fails the test if the process does
// not exit within limit (a hung shutdown).
func (n *Node) WaitExit(t testing.TB, limit time.Duration) int {
	t.Helper()
	select {
	case <-n.done:
	case <-time.After(limit):
		t.Fatalf("%s did not exit within %s", n.Name, limit)
	}
	var ee *exec.ExitError
	switch {
	case n.err == nil:
		return 0
	case errors.As(n.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", n.Name, n.err)
	return -1
}
