// Package vaultdev starts a real HashiCorp Vault server in dev mode for
// integration tests. Nothing here is mocked: the binary is the unmodified
// Vault built by scripts/vault.sh (kept out of the main module).
//
// # Finding the binary
//
// [Start] uses, in order:
//
//  1. the path in KEYWARDEN_VAULT_BIN;
//  2. the binary scripts/vault.sh has already built and cached (the script's
//     own cache path, found by running nothing but a hash of the same files);
//  3. with CI=true only, scripts/vault.sh itself (which builds Vault, about 20
//     minutes the first time).
//
// Without a binary, a test is skipped with the reason, or fails when CI=true.
//
// # What a server has
//
// Each [Server] is its own process on a free loopback port, with a random
// root token, a temporary HOME, the Transit engine mounted at "transit" and
// a derived aes256-gcm96 key named [KeyName]. It is stopped by t.Cleanup.
// Dev mode keeps everything in memory: a stopped server cannot come back
// with its data.
package vaultdev

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// KeyName is the Transit key every server starts with (derived, so every
// operation needs a context).
const KeyName = "keywarden-custodian"

// TransitMount is where the Transit engine is mounted.
const TransitMount = "transit"

// Server is a running Vault dev server.
type Server struct {
	t         testing.TB
	addr      string
	caCert    string // with TLS
	rootToken string
	unsealKey string
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	out       *proc.SyncBuffer

	mu      sync.Mutex
	stopped bool
}

// Options change what [StartWith] starts. The zero value is [Start]'s server.
type Options struct {
	// TLS serves HTTPS with a CA and certificate Vault generates
	// (-dev-tls); [Server.CACert] is the CA file. The listener asks for
	// client certificates, so the cert auth method works.
	TLS bool
}

// Start starts a Vault dev server, waits until it answers, mounts Transit
// and creates [KeyName]. It is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken between probe and bind
		s, err := start(t, bin, opts)
		if err == nil {
			t.Cleanup(s.Stop)
			s.setup()
			return s
		}
		lastErr = err
	}
	t.Fatalf("vaultdev: %v", lastErr)
	return nil
}

// Binary returns the path of the Vault binary, skipping the test (or
// failing it with CI=true) when there is none. See the package doc.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KEYWARDEN_VAULT_BIN"); p != "" {
		if !isExecutable(p) {
			t.Fatalf("vaultdev: KEYWARDEN_VAULT_BIN=%s is not an executable file", p)
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
		missing(t, "the Vault binary is not built yet; run scripts/vault.sh once (about 20 minutes) or set KEYWARDEN_VAULT_BIN")
		return ""
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "vault.sh")).Output()
	if err != nil {
		t.Fatalf("vaultdev: scripts/vault.sh: %v", err)
	}
	p := strings.TrimSpace(string(out))
	if !isExecutable(p) {
		t.Fatalf("vaultdev: scripts/vault.sh printed %q, which is not an executable", p)
	}
	return p
}

func missing(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("vaultdev: %s", reason)
	}
	t.Skipf("vaultdev: %s", reason)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// repoRoot walks up from the working directory to the directory holding
// the main module's go.mod (the one next to scripts/vault.sh).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "scripts", "vault.sh")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod with scripts/vault.sh above the working directory")
		}
		dir = parent
	}
}

// cachedBinary is where scripts/vault.sh puts the binary: the same hash of
// tools/vault's go.mod, go.sum and main.go under the same cache directory.
func cachedBinary(root string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(root, "tools", "vault", f))
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
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	return filepath.Join(cache, "vault-"+sum, "vault"), nil
}

func start(t testing.TB, bin string, opts Options) (*Server, error) {
	token := "root-" + randomHex(12)
	home := t.TempDir()
	listen := proc.FreeAddr(t)
	args := []string{"server", "-dev",
		"-dev-root-token-id=" + token,
		"-dev-listen-address=" + listen,
		"-dev-no-store-token",
		"-log-level=warn",
	}
	scheme, caCert := "http", ""
	if opts.TLS {
		dir := filepath.Join(home, "tls")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, err
		}
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+dir)
		scheme, caCert = "https", filepath.Join(dir, "vault-ca.pem")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = home
	cmd.Env = cleanEnv(home)
	out := &proc.SyncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{t: t, addr: scheme + "://" + listen, caCert: caCert, rootToken: token, cmd: cmd, done: make(chan struct{}), out: out}
	go func() { _ = cmd.Wait(); close(s.done) }()

	if err := s.waitHealthy(30 * time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\n--- vault output (tail) ---\n%s", err, tail(out.String(), 2000))
	}
	return s, nil
}

// cleanEnv keeps PATH and sets HOME; every VAULT_* variable of the caller
// is left out so the developer's own Vault settings cannot leak in.
func cleanEnv(home string) []string {
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	if v := os.Getenv("TMPDIR"); v != "" {
		env = append(env, "TMPDIR="+v)
	}
	return env
}

func (s *Server) waitHealthy(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("vault exited during start")
		default:
		}
		c, err := s.apiClient() // with TLS, the CA file appears as Vault starts
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var h *api.HealthResponse
		h, err = c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			// The root token must work too (the mount table is ready).
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.Auth().Token().LookupSelfWithContext(ctx)
			cancel()
			if err == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("vault did not become healthy within %s", limit)
}

func (s *Server) setup() {
	s.t.Helper()
	c := s.Client()
	if err := c.Sys().Mount(TransitMount, &api.MountInput{Type: "transit"}); err != nil {
		s.t.Fatalf("vaultdev: mount transit: %v", err)
	}
	s.CreateKey(KeyName, true)
}

// CreateKey creates an aes256-gcm96 Transit key; derived keys need a
// context on every operation.
func (s *Server) CreateKey(name string, derived bool) {
	s.t.Helper()
	_, err := s.Client().Logical().Write(TransitMount+"/keys/"+name, map[string]any{
		"type":    "aes256-gcm96",
		"derived": derived,
	})
	if err != nil {
		s.t.Fatalf("vaultdev: create key %s: %v", name, err)
	}
}

// RotateKey adds a new version to a Transit key and returns it.
func (s *Server) RotateKey(name string) int {
	s.t.Helper()
	c := s.Client()
	if _, err := c.Logical().Write(TransitMount+"/keys/"+name+"/rotate", nil); err != nil {
		s.t.Fatalf("vaultdev: rotate %s: %v", name, err)
	}
	sec, err := c.Logical().Read(TransitMount + "/keys/" + name)
	if err != nil || sec == nil {
		s.t.Fatalf("vaultdev: read key %s: %v", name, err)
	}
	v, err := jsonInt(sec.Data["latest_version"])
	if err != nil {
		s.t.Fatalf("vaultdev: latest_version of %s: %v", name, err)
	}
	return v
}

// SetMinDecryptionVersion sets the key's min_decryption_version: older
// ciphertexts no longer open (and cannot be rewrapped).
func (s *Server) SetMinDecryptionVersion(name string, v int) {
	s.t.Helper()
	if _, err := s.Client().Logical().Write(TransitMount+"/keys/"+name+"/config", map[string]any{
		"min_decryption_version": v,
	}); err != nil {
		s.t.Fatalf("vaultdev: config %s: %v", name, err)
	}
}

// Addr is the server's address, http://127.0.0.1:<port>.
func (s *Server) Addr() string { return s.addr }

// CACert is the PEM file of the CA that signed the server's certificate
// ("" without TLS).
func (s *Server) CACert() string { return s.caCert }

// RootToken is the dev server's root token (random per server).
func (s *Server) RootToken() string { return s.rootToken }

// UnsealKey is the dev server's single unseal key, read from its banner
// (printed a moment after the server answers; this waits up to 5 s).
func (s *Server) UnsealKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); s.unsealKey == "" && time.Now().Before(deadline); {
		if s.unsealKey = parseUnsealKey(s.out.String()); s.unsealKey == "" {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return s.unsealKey
}

// Client returns a new API client for the server with the root token.
// It reads no VAULT_* environment and does not retry.
func (s *Server) Client() *api.Client {
	c, err := s.apiClient()
	if err != nil {
		s.t.Fatalf("vaultdev: client: %v", err)
	}
	return c
}

func (s *Server) apiClient() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = s.addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	if s.caCert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: s.caCert}); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(s.rootToken)
	c.ClearNamespace()
	return c, nil
}

// WritePolicy writes an ACL policy.
func (s *Server) WritePolicy(name, hcl string) {
	s.t.Helper()
	if err := s.Client().Sys().PutPolicy(name, hcl); err != nil {
		s.t.Fatalf("vaultdev: write policy %s: %v", name, err)
	}
}

// NewToken creates a token with the given policies (none → "default" only)
// and returns it. ttl 0 means the mount default (32 days in dev mode).
func (s *Server) NewToken(ttl time.Duration, policies ...string) string {
	s.t.Helper()
	req := &api.TokenCreateRequest{Policies: policies, NoParent: true}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	sec, err := s.Client().Auth().Token().CreateOrphan(req)
	if err != nil {
		s.t.Fatalf("vaultdev: create token: %v", err)
	}
	return sec.Auth.ClientToken
}

// RevokeToken revokes a token.
func (s *Server) RevokeToken(token string) {
	s.t.Helper()
	if err := s.Client().Auth().Token().RevokeOrphan(token); err != nil {
		s.t.Fatalf("vaultdev: revoke token: %v", err)
	}
}

// EnableAppRole enables the AppRole auth method (once) and creates a role
// with the given policies and token TTL; it returns the role id and a new
// secret id.
func (s *Server) EnableAppRole(role string, tokenTTL time.Duration, policies ...string) (roleID, secretID string) {
	s.t.Helper()
	c := s.Client()
	auths, err := c.Sys().ListAuth()
	if err != nil {
		s.t.Fatalf("vaultdev: list auth: %v", err)
	}
	if _, ok := auths["approle/"]; !ok {
		if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			s.t.Fatalf("vaultdev: enable approle: %v", err)
		}
	}
	data := map[string]any{"token_policies": strings.Join(policies, ",")}
	if tokenTTL > 0 {
		data["token_ttl"] = int(tokenTTL.Seconds())
		data["token_max_ttl"] = int(tokenTTL.Seconds())
	}
	if _, err := c.Logical().Write("auth/approle/role/"+role, data); err != nil {
		s.t.Fatalf("vaultdev: write role: %v", err)
	}
	sec, err := c.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil || sec == nil {
		s.t.Fatalf("vaultdev: read role id: %v", err)
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec, err = c.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil || sec == nil {
		s.t.Fatalf("vaultdev: new secret id: %v", err)
	}
	secretID, _ = sec.Data["secret_id"].(string)
	return roleID, secretID
}

// EnableCertAuth enables the TLS certificate auth method (once) and trusts
// client certificates signed by caPEM for role, with the given policies.
func (s *Server) EnableCertAuth(role string, caPEM []byte, policies ...string) {
	s.t.Helper()
	c := s.Client()
	auths, err := c.Sys().ListAuth()
	if err != nil {
		s.t.Fatalf("vaultdev: list auth: %v", err)
	}
	if _, ok := auths["cert/"]; !ok {
		if err := c.Sys().EnableAuthWithOptions("cert", &api.EnableAuthOptions{Type: "cert"}); err != nil {
			s.t.Fatalf("vaultdev: enable cert: %v", err)
		}
	}
	if _, err := c.Logical().Write("auth/cert/certs/"+role, map[string]any{
		"certificate":    string(caPEM),
		"token_policies": strings.Join(policies, ","),
	}); err != nil {
		s.t.Fatalf("vaultdev: write cert role: %v", err)
	}
}

// Seal seals the server (sys/seal): every request then answers 503.
func (s *Server) Seal() {
	s.t.Helper()
	if err := s.Client().Sys().Seal(); err != nil {
		s.t.Fatalf("vaultdev: seal: %v", err)
	}
}

// Unseal unseals the server with its unseal key.
func (s *Server) Unseal() {
	s.t.Helper()
	key := s.UnsealKey()
	if key == "" {
		s.t.Fatal("vaultdev: the unseal key was not found in the server's output")
	}
	st, err := s.Client().Sys().Unseal(key)
	if err != nil {
		s.t.Fatalf("vaultdev: unseal: %v", err)
	}
	if st.Sealed {
		s.t.Fatal("vaultdev: still sealed after unseal")
	}
	if err := s.waitHealthy(30 * time.Second); err != nil {
		s.t.Fatalf("vaultdev: after unseal: %v", err)
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s). Safe to call
// more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Output is what the server printed so far (it includes the dev root
// token; for debugging tests only).
func (s *Server) Output() string { return s.out.String() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func parseUnsealKey(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "Unseal Key:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func jsonInt(v any) (int, error) {
	switch n := v.(type) {
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("not a number: %T", v)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
