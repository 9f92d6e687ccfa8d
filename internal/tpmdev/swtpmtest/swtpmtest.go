// Package swtpmtest starts a real swtpm process for tests: a separate TPM
// reached over its TCP command port, the way production reaches a TPM
// through [tpmdev.Open]. It is only imported by tests.
//
// When the swtpm binary is missing the test is skipped with a message, or
// fails when the environment variable CI is "true" (CI installs it through
// scripts/setup.sh, so a missing binary there is a broken pipeline, not a
// reason to pass).
package swtpmtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Options for [Start]. The zero value starts a TPM 2.0 with
// `--flags not-need-init,startup-clear`.
type Options struct {
	// NoStartup leaves the TPM un-started (`--flags not-need-init` only), so
	// the client must send TPM2_Startup itself.
	NoStartup bool
	// StateDir keeps the TPM's state in this folder (created if needed)
	// instead of a fresh temporary one, so a test can restart the TPM
	// process and find its NV and seeds again.
	StateDir string
}

// TPM is a running swtpm.
type TPM struct {
	// Spec is what tpmdev.Open takes: "swtpm:127.0.0.1:<port>".
	Spec string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Require returns the swtpm binary's path, skipping (or, with CI=true,
// failing) the test when it is not installed.
func Require(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not installed (run scripts/setup.sh): %v", tool, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Start runs swtpm on free loopback ports and stops it when the test ends.
func Start(t testing.TB, opts Options) *TPM {
	t.Helper()
	bin := Require(t, "swtpm")
	state := opts.StateDir
	if state == "" {
		state = t.TempDir()
	} else if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		tpm, err := start(bin, state, opts)
		if err == nil {
			t.Cleanup(tpm.stop)
			return tpm
		}
		lastErr = err
	}
	t.Fatalf("swtpmtest: start swtpm: %v", lastErr)
	return nil
}

func start(bin, state string, opts Options) (*TPM, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	flags := "not-need-init,startup-clear"
	if opts.NoStartup {
		flags = "not-need-init"
	}
	logFile := filepath.Join(state, "swtpm.log")
	cmd := exec.Command(bin, "socket", "--tpm2",
		"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(ports[0]),
		"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(ports[1]),
		"--tpmstate", "dir="+state,
		"--flags", flags,
		"--log", "file="+logFile+",level=1",
	)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	tpm := &TPM{
		Spec: "swtpm:127.0.0.1:" + strconv.Itoa(ports[0]),
		cmd:  cmd,
		log:  logFile,
		done: make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); close(tpm.done) }()

	// Ready when the command port accepts a connection. swtpm serves one
	// command connection at a time; the probe's is closed at once, and swtpm
	// then accepts the next.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	data := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	for {
		select {
		case <-tpm.done:
			return nil, fmt.Errorf("swtpm exited early: %s", stderr.String())
		case <-ctx.Done():
			tpm.stop()
			return nil, fmt.Errorf("swtpm not ready: %s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		c, err := net.DialTimeout("tcp", data, time.Second)
		if err == nil {
			_ = c.Close()
			return tpm, nil
		}
	}
}

// Stop ends the swtpm process (SIGTERM, which makes it save its state) and
// waits for it. The test's cleanup calls it too; a second call does nothing.
func (s *TPM) Stop() { s.stop() }

func (s *TPM) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Log returns swtpm's log file contents, for a failing test's message.
func (s *TPM) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
