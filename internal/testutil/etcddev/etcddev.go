// Package etcddev starts real etcd for tests of the etcd store backend:
// members embedded in the test process (go.etcd.io/etcd/server/v3/embed)
// and an external etcd server process. Nothing is mocked.
//
// # The external server's binary
//
// [External] uses, in order:
//
//  1. the path in KEYWARDEN_ETCD_BIN;
//  2. the binary scripts/etcd.sh has already built and cached (found by the
//     same hash of tools/etcd's go.mod, go.sum and main.go);
//  3. with CI=true only, scripts/etcd.sh itself (a few minutes the first time).
//
// Without a binary, a test is skipped with the reason, or fails when CI=true
// (as internal/testutil/vaultdev does for Vault).
//
// Every member listens on free loopback ports, keeps its data in a
// temporary directory and is stopped by t.Cleanup.
package etcddev

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// MaxTxnOps is the --max-txn-ops every member here runs with (etcd's
// default, 128, is too small for a group commit; see package etcdstore).
const MaxTxnOps = 4096

// Cluster is a set of embedded members in this process.
type Cluster struct {
	t       testing.TB
	members []*embed.Etcd
	clients []string
	logs    []string
	mu      sync.Mutex
	stopped []bool
}

// Embedded starts one embedded member and waits until it serves.
func Embedded(t testing.TB) *Cluster { return EmbeddedCluster(t, 1) }

// EmbeddedCluster starts n embedded members forming one cluster and waits
// until every member serves (a leader is elected).
func EmbeddedCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken between probe and bind
		c, err := startCluster(t, n)
		if err == nil {
			t.Cleanup(c.Close)
			return c
		}
		lastErr = err
	}
	t.Fatalf("etcddev: %v", lastErr)
	return nil
}

func startCluster(t testing.TB, n int) (*Cluster, error) {
	c := &Cluster{t: t, stopped: make([]bool, n)}
	cfgs := make([]*embed.Config, n)
	var initial []string
	token := fmt.Sprintf("keywarden-test-%d", time.Now().UnixNano())
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(t.TempDir(), "etcd")
		peer := url.URL{Scheme: "http", Host: proc.FreeAddr(t)}
		client := url.URL{Scheme: "http", Host: proc.FreeAddr(t)}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialClusterToken = token
		cfg.MaxTxnOps = MaxTxnOps
		cfg.LogLevel = "error"
		logFile := filepath.Join(filepath.Dir(cfg.Dir), "etcd.log")
		cfg.LogOutputs = []string{logFile}
		initial = append(initial, cfg.Name+"="+peer.String())
		c.clients = append(c.clients, client.String())
		c.logs = append(c.logs, logFile)
		cfgs[i] = cfg
	}
	errs := make([]error, n)
	c.members = make([]*embed.Etcd, n)
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.members[i], errs[i] = embed.StartEtcd(cfg)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	for i, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			c.Close()
			return nil, fmt.Errorf("member %d: %v", i, err)
		case <-time.After(60 * time.Second):
			c.Close()
			return nil, fmt.Errorf("member %d did not become ready within 60s\n%s", i, c.logTail(i))
		}
	}
	return c, nil
}

func (c *Cluster) logTail(i int) string {
	b, _ := os.ReadFile(c.logs[i])
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.clients...) }

// Endpoint is member i's client URL.
func (c *Cluster) Endpoint(i int) string { return c.clients[i] }

// Stop stops member i (its data stays in its directory).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped[i] || c.members[i] == nil {
		return
	}
	c.stopped[i] = true
	c.members[i].Close()
}

// Backend opens the etcd store backend on the cluster's members under a
// fresh key prefix (o's Endpoints and Prefix are filled in; its other
// fields are kept), for a store.DB over embedded etcd; the caller owns it.
func (c *Cluster) Backend(t testing.TB, o etcdstore.Options) store.Backend {
	t.Helper()
	o.Endpoints = c.Endpoints()
	o.Prefix = fmt.Sprintf("kw-app-%d", prefixes.Add(1))
	b, err := etcdstore.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("etcddev: %v", err)
	}
	return b
}

var prefixes atomic.Int64

// SharedBackend returns an opener of the etcd store backend on the
// cluster under one fresh key prefix, the same at every call: each core
// given it (apptest.StoreBackend, with apptest.RootKey for the same root
// key) is one node of the same appliance cluster. Each call opens its own
// client, on member i%n for the i-th call, so the nodes talk to different
// members when there are several.
func (c *Cluster) SharedBackend(o etcdstore.Options) func(testing.TB) store.Backend {
	prefix := fmt.Sprintf("kw-app-%d", prefixes.Add(1))
	var calls atomic.Int64
	return func(t testing.TB) store.Backend {
		t.Helper()
		o := o
		o.Endpoints = []string{c.clients[int(calls.Add(1)-1)%len(c.clients)]}
		o.Prefix = prefix
		b, err := etcdstore.Open(context.Background(), o)
		if err != nil {
			t.Fatalf("etcddev: %v", err)
		}
		return b
	}
}

// Close stops every member.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i)
	}
}

// Server is an external etcd server process.
type Server struct {
	Endpoint string
	cmd      *exec.Cmd
	done     chan struct{}
	out      *proc.SyncBuffer
	files    TLSFiles
	mu       sync.Mutex // guards cmd and done across Stop and Restart
}

// TLSFiles are the PEM files of an external server with mutual TLS.
type TLSFiles struct {
	CA, ClientCert, ClientKey string
}

// ExternalOptions change what [External] starts.
type ExternalOptions struct {
	// TLS serves clients over https with a fresh CA and asks them for a
	// certificate signed by it (--client-cert-auth).
	TLS bool
}

// External starts the etcd server binary as its own process (see the
// package doc for where the binary comes from) and waits until it serves.
func External(t testing.TB, opts ExternalOptions) (*Server, TLSFiles) {
	t.Helper()
	bin := Binary(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, files, err := startExternal(t, bin, opts)
		if err == nil {
			t.Cleanup(s.Stop)
			return s, files
		}
		lastErr = err
	}
	t.Fatalf("etcddev: %v", lastErr)
	return nil, TLSFiles{}
}

func startExternal(t testing.TB, bin string, opts ExternalOptions) (*Server, TLSFiles, error) {
	dir := t.TempDir()
	peer := "http://" + proc.FreeAddr(t)
	scheme := "http"
	var files TLSFiles
	args := []string{
		"--name", "ext",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "ext=" + peer,
		"--max-txn-ops", fmt.Sprint(MaxTxnOps),
		"--log-level", "error",
	}
	if opts.TLS {
		var err error
		files, err = writeTLS(dir)
		if err != nil {
			return nil, files, err
		}
		scheme = "https"
		args = append(args, "--cert-file", filepath.Join(dir, "server.pem"), "--key-file", filepath.Join(dir, "server-key.pem"),
			"--trusted-ca-file", files.CA, "--client-cert-auth")
	}
	client := scheme + "://" + proc.FreeAddr(t)
	args = append(args, "--listen-client-urls", client, "--advertise-client-urls", client)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")} // no ETCD_* of the caller
	out := &proc.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	s := &Server{Endpoint: client, cmd: cmd, out: out, files: files}
	if err := s.start(); err != nil {
		return nil, files, err
	}
	if err := s.waitServing(files, 60*time.Second); err != nil {
		s.Stop()
		tail := out.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return nil, files, fmt.Errorf("%w\n--- etcd output (tail) ---\n%s", err, tail)
	}
	return s, files, nil
}

// start starts s.cmd and watches it exit.
func (s *Server) start() error {
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.cmd.Path, err)
	}
	done := make(chan struct{})
	cmd := s.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	s.done = done
	return nil
}

// Restart starts a stopped server again, on the same ports and data
// directory, and waits until it serves (a member coming back after an
// outage).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.mu.Lock()
	old := s.cmd
	s.cmd = exec.Command(old.Path, old.Args[1:]...)
	s.cmd.Dir, s.cmd.Env, s.cmd.Stdout, s.cmd.Stderr = old.Dir, old.Env, old.Stdout, old.Stderr
	err := s.start()
	s.mu.Unlock()
	if err == nil {
		err = s.waitServing(s.files, 60*time.Second)
	}
	if err != nil {
		t.Fatalf("etcddev: restart: %v", err)
	}
}

func (s *Server) waitServing(files TLSFiles, limit time.Duration) error {
	cfg := clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()}
	if files.CA != "" {
		tc, err := files.ClientConfig()
		if err != nil {
			return err
		}
		cfg.TLS = tc
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("etcd exited during start")
		default:
		}
		cli, err := clientv3.New(cfg)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = cli.Get(ctx, "health")
			cancel()
			cli.Close()
			if err == nil {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("etcd did not serve within %s", limit)
}

// Stop kills the server and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Binary returns the path of the etcd server binary, skipping the test (or
// failing it with CI=true) when there is none. See the package doc.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KEYWARDEN_ETCD_BIN"); p != "" {
		if !isExecutable(p) {
			t.Fatalf("etcddev: KEYWARDEN_ETCD_BIN=%s is not an executable file", p)
		}
		return p
	}
	root, err := repoRoot()
	if err != nil {
		missing(t, err.Error())
		return ""
	}
	if p, err := cachedBinary(root); err == nil && isExecutable(p) {
		return p
	}
	if os.Getenv("CI") != "true" {
		missing(t, "the etcd server binary is not built yet; run scripts/etcd.sh once (a few minutes) or set KEYWARDEN_ETCD_BIN")
		return ""
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "etcd.sh")).Output()
	if err != nil {
		t.Fatalf("etcddev: scripts/etcd.sh: %v", err)
	}
	p := strings.TrimSpace(string(out))
	if !isExecutable(p) {
		t.Fatalf("etcddev: scripts/etcd.sh printed %q, which is not an executable", p)
	}
	return p
}

func missing(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("etcddev: %s", reason)
	}
	t.Skipf("etcddev: %s", reason)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "scripts", "etcd.sh")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod with scripts/etcd.sh above the working directory")
		}
		dir = parent
	}
}

// cachedBinary is where scripts/etcd.sh puts the binary.
func cachedBinary(root string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(root, "tools", "etcd", f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	cache := os.Getenv("KEYWARDEN_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "keywarden")
	}
	return filepath.Join(cache, "etcd-"+hex.EncodeToString(h.Sum(nil))[:16], "etcd"), nil
}
