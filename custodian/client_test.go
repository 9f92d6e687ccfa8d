package custodian

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
)

func TestOptionsValidate(t *testing.T) {
	tok := secret.NewString("t")
	tests := []struct {
		name string
		o    Options
		want string // substring of the error; "" = valid
	}{
		{"token", Options{Addr: "http://127.0.0.1:8200", Token: tok}, ""},
		{"approle", Options{Addr: "https://v", Auth: AuthAppRole, AppRole: AppRoleAuth{RoleID: "r", SecretID: tok}}, ""},
		{"cert", Options{Addr: "https://v", Auth: AuthCert, Cert: CertAuth{CertFile: "c", KeyFile: "k"}}, ""},
		{"no addr", Options{Token: tok}, "addr: required"},
		{"bad scheme", Options{Addr: "ftp://v", Token: tok}, "addr:"},
		{"plain http to localhost", Options{Addr: "http://localhost:8200", Token: tok}, ""},
		{"plain http to ::1", Options{Addr: "http://[::1]:8200", Token: tok}, ""},
		{"plain http to 127/8", Options{Addr: "http://127.3.2.1:8200", Token: tok}, ""},
		// Shares and the token would cross the network in the clear.
		{"plain http to a remote host", Options{Addr: "http://vault.internal:8200", Token: tok}, "addr: \"http://vault.internal:8200\": plain http is allowed only to a loopback address"},
		{"plain http to a private address", Options{Addr: "http://10.0.0.8:8200", Token: tok}, "loopback"},
		{"plain http to a name that starts like loopback", Options{Addr: "http://127.0.0.1.evil.example:8200", Token: tok}, "loopback"},
		{"plain http to localhost's lookalike", Options{Addr: "http://localhost.evil.example", Token: tok}, "loopback"},
		{"no token", Options{Addr: "https://v"}, "token: required"},
		{"approle without secret", Options{Addr: "https://v", Auth: AuthAppRole, AppRole: AppRoleAuth{RoleID: "r"}}, "secret_id"},
		{"cert without key", Options{Addr: "https://v", Auth: AuthCert, Cert: CertAuth{CertFile: "c"}}, "key_file"},
		{"unknown auth", Options{Addr: "https://v", Auth: "ldap", Token: tok}, "auth:"},
		{"bad key name", Options{Addr: "https://v", Token: tok, KeyName: "a/b"}, "key_name"},
		{"bad mount", Options{Addr: "https://v", Token: tok, TransitMount: "../sys"}, "transit_mount"},
		{"negative timeout", Options{Addr: "https://v", Token: tok, Timeout: -1}, "timeout"},
		{"negative concurrency", Options{Addr: "https://v", Token: tok, MaxConcurrent: -1}, "max_concurrent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.o
			err := tt.o.Validate()
			if tt.want == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got %v, want an error about %q", err, tt.want)
			}
			if fmt.Sprint(before) != fmt.Sprint(tt.o) {
				t.Fatal("Validate changed the options")
			}
		})
	}
	// The secret never appears in a formatted Options.
	o := Options{Addr: "https://v", Token: secret.NewString("s.very-secret")}
	if strings.Contains(fmt.Sprintf("%+v %#v", o, o), "very-secret") {
		t.Fatal("Options print the token")
	}
}

func TestWrapUnwrapRoundTrip(t *testing.T) {
	v := vaultdev.Start(t)
	c := newClient(t, v, nil)
	ctx := testCtx(t)

	share := []byte(`{"share":"custodian-share-0123456789","backupMethod":"PASSKEY"}`)
	ct, err := c.Wrap(ctx, "user:alice", share)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if !strings.HasPrefix(ct, "vault:v1:") {
		t.Fatalf("ciphertext %q is not a Transit v1 ciphertext", ct)
	}
	if strings.Contains(ct, base64.StdEncoding.EncodeToString(share)) || strings.Contains(ct, string(share)) {
		t.Fatal("the ciphertext holds the share")
	}
	got, err := c.Unwrap(ctx, "user:alice", ct)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got.Reveal(), share) {
		t.Fatal("round trip changed the share")
	}
	// Two wraps of the same share differ (random nonce).
	ct2, err := c.Wrap(ctx, "user:alice", share)
	if err != nil || ct2 == ct {
		t.Fatalf("second wrap: %v, equal=%v", err, ct2 == ct)
	}

	t.Run("invalid input", func(t *testing.T) {
		tests := []struct {
			name, user string
			share      []byte
			code       string
		}{
			{"empty share", "user:a", nil, ErrInvalidShare.Code},
			{"too large", "user:a", make([]byte, MaxShareSize+1), ErrInvalidShare.Code},
			{"empty user", "", share, ErrInvalidOwner.Code},
			{"NUL in user", "user:\x00a", share, ErrInvalidOwner.Code},
		}
		for _, tt := range tests {
			_, err := c.Wrap(ctx, tt.user, tt.share)
			wantCode(t, err, tt.code)
		}
		_, err := c.Unwrap(ctx, "user:alice", "not-a-ciphertext")
		wantCode(t, err, ErrCiphertextRejected.Code)
	})
}

// A ciphertext made for one user does not open for another: the key is
// derived and the user id is the context.
func TestContextBinding(t *testing.T) {
	v := vaultdev.Start(t)
	c := newClient(t, v, nil)
	ctx := testCtx(t)
	share := []byte("alice's custodian share")
	ct, err := c.Wrap(ctx, "user:alice", share)
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{"user:bob", "user:alic", "user:alice ", "portal:alice"} {
		got, err := c.Unwrap(ctx, other, ct)
		e := wantCode(t, err, ErrCiphertextRejected.Code)
		if got.Len() != 0 {
			t.Fatalf("%s: a share came back with the error", other)
		}
		noSecretIn(t, e, string(share), base64.StdEncoding.EncodeToString(share))
	}
	if _, err := c.Unwrap(ctx, "user:alice", ct); err != nil {
		t.Fatalf("the owner cannot open it: %v", err)
	}
}

func TestBatch(t *testing.T) {
	v := vaultdev.Start(t)
	c := newClient(t, v, func(o *Options) { o.BatchSize = 16 }) // several Vault calls per batch
	ctx := testCtx(t)

	const n = 50
	items := make([]WrapItem, n)
	for i := range items {
		items[i] = WrapItem{UserID: fmt.Sprintf("user:%03d", i), Share: []byte(fmt.Sprintf("share-%03d", i))}
	}
	items[7].Share = nil // invalid: reported for item 7 only
	items[9].UserID = "" // invalid
	res, err := c.WrapBatch(ctx, items)
	if err != nil {
		t.Fatalf("WrapBatch: %v", err)
	}
	if len(res) != n {
		t.Fatalf("%d results for %d items", len(res), n)
	}
	wantCode(t, res[7].Err, ErrInvalidShare.Code)
	wantCode(t, res[9].Err, ErrInvalidOwner.Code)

	var un []UnwrapItem
	var want []int
	for i, r := range res {
		if r.Err != nil {
			continue
		}
		if r.KeyVersion != 1 {
			t.Fatalf("item %d: key version %d", i, r.KeyVersion)
		}
		un = append(un, UnwrapItem{UserID: items[i].UserID, Ciphertext: r.Ciphertext})
		want = append(want, i)
	}
	// One item under the wrong user: only that item fails.
	un[3].UserID = "user:intruder"
	out, err := c.UnwrapBatch(ctx, un)
	if err != nil {
		t.Fatalf("UnwrapBatch: %v", err)
	}
	for j, r := range out {
		if j == 3 {
			wantCode(t, r.Err, ErrCiphertextRejected.Code)
			continue
		}
		if r.Err != nil {
			t.Fatalf("item %d: %v", j, r.Err)
		}
		if !bytes.Equal(r.Share.Reveal(), items[want[j]].Share) {
			t.Fatalf("item %d: wrong share", j)
		}
	}
	// Every item failing is still per-item (Vault answers 400 with results).
	all, err := c.UnwrapBatch(ctx, []UnwrapItem{{UserID: "user:x", Ciphertext: un[0].Ciphertext}, {UserID: "user:y", Ciphertext: un[1].Ciphertext}})
	if err != nil {
		t.Fatalf("all-failing batch: %v", err)
	}
	for _, r := range all {
		wantCode(t, r.Err, ErrCiphertextRejected.Code)
	}
}

func TestEnsureKey(t *testing.T) {
	v := vaultdev.Start(t)
	ctx := testCtx(t)
	root := secret.NewString(v.RootToken())

	t.Run("creates a missing key derived", func(t *testing.T) {
		c, err := New(ctx, Options{Addr: v.Addr(), Token: root, KeyName: "fresh"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		info, err := c.KeyInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Derived || info.LatestVersion != 1 || info.Type != "aes256-gcm96" {
			t.Fatalf("created key %+v", info)
		}
	})

	v.CreateKey("plain", false)
	t.Run("refuses a key that is not derived", func(t *testing.T) {
		_, err := New(ctx, Options{Addr: v.Addr(), Token: root, KeyName: "plain"})
		wantCode(t, err, ErrKeyNotDerived.Code)
	})

	// Without read on the key, a probe decides.
	v.WritePolicy("blind", `
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/decrypt/*" { capabilities = ["update"] }
`)
	blind := secret.NewString(v.NewToken(0, "blind"))
	t.Run("probe refuses a key that is not derived", func(t *testing.T) {
		_, err := New(ctx, Options{Addr: v.Addr(), Token: blind, KeyName: "plain"})
		wantCode(t, err, ErrKeyNotDerived.Code)
	})
	t.Run("probe accepts a derived key", func(t *testing.T) {
		c, err := New(ctx, Options{Addr: v.Addr(), Token: blind})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Wrap(ctx, "user:a", []byte("s")); err != nil {
			t.Fatal(err)
		}
	})
}

// Vault stopped: a call is retried MaxRetries times, then fails with 503
// and Retry-After; Health reports it.
func TestVaultStoppedClient(t *testing.T) {
	v := vaultdev.Start(t)
	c := newClient(t, v, nil)
	ctx := testCtx(t)
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	v.Stop()
	_, err = c.Unwrap(ctx, "user:a", ct)
	e := wantCode(t, err, ErrVaultUnavailable.Code)
	if e.Status != http.StatusServiceUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("status %d retry-after %s", e.Status, e.RetryAfter)
	}
	if st := c.Stats(); st.Retries < 2 {
		t.Fatalf("retries = %d, want MaxRetries (2)", st.Retries)
	}
	if h := c.Health(ctx); h.OK() || h.Code != ErrVaultUnavailable.Code {
		t.Fatalf("health %+v", h)
	}
}

func TestSealed(t *testing.T) {
	v := vaultdev.Start(t)
	c := newClient(t, v, nil)
	ctx := testCtx(t)
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Health(ctx); !h.OK() {
		t.Fatalf("health before seal: %+v", h)
	}
	v.Seal()
	_, err = c.Unwrap(ctx, "user:a", ct)
	e := wantCode(t, err, ErrVaultUnavailable.Code)
	if !strings.Contains(e.Message, "sealed") || e.RetryAfter <= 0 {
		t.Fatalf("sealed error %q retry-after %s", e.Message, e.RetryAfter)
	}
	_, err = c.Wrap(ctx, "user:a", []byte("share"))
	wantCode(t, err, ErrVaultUnavailable.Code)
	time.Sleep(healthTTL) // let the cached healthy answer expire
	if h := c.Health(ctx); h.OK() || !h.Sealed {
		t.Fatalf("health while sealed: %+v", h)
	}
	v.Unseal()
	got, err := c.Unwrap(ctx, "user:a", ct)
	if err != nil || string(got.Reveal()) != "share" {
		t.Fatalf("after unseal: %v", err)
	}
}

func TestTokenRevoked(t *testing.T) {
	v := vaultdev.Start(t)
	v.WritePolicy("custodian", transitPolicy)
	tok := v.NewToken(time.Hour, "custodian")
	c := newClient(t, v, func(o *Options) { o.Token = secret.NewString(tok) })
	ctx := testCtx(t)
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	v.RevokeToken(tok)
	_, err = c.Unwrap(ctx, "user:a", ct)
	e := wantCode(t, err, ErrVaultForbidden.Code)
	if e.Status != http.StatusBadGateway {
		t.Fatalf("status %d", e.Status)
	}
	noSecretIn(t, e, tok)
	time.Sleep(healthTTL)
	if h := c.Health(ctx); h.OK() || h.Code != ErrVaultForbidden.Code {
		t.Fatalf("health with a revoked token: %+v", h)
	}
	// A token Vault refuses at start is a configuration error.
	_, err = New(ctx, Options{Addr: v.Addr(), Token: secret.NewString(tok)})
	wantCode(t, err, ErrVaultForbidden.Code)
	noSecretIn(t, err, tok)
}

// AppRole: a revoked token and an expired one are replaced by a new login.
func TestAppRoleRelogin(t *testing.T) {
	v := vaultdev.Start(t)
	v.WritePolicy("custodian", transitPolicy)
	roleID, secretID := v.EnableAppRole("keywarden", 0, "custodian")
	ctx := testCtx(t)
	c, err := New(ctx, Options{Addr: v.Addr(), Auth: AuthAppRole, AppRole: AppRoleAuth{RoleID: roleID, SecretID: secret.NewString(secretID)}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer c.Close()
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	first := c.currentToken()
	time.Sleep(minReloginInterval) // the login at New is recent: wait so a re-login is allowed
	v.RevokeToken(first)
	got, err := c.Unwrap(ctx, "user:a", ct)
	if err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if string(got.Reveal()) != "share" || c.currentToken() == first {
		t.Fatal("no new login after revocation")
	}

	t.Run("wrong secret id", func(t *testing.T) {
		_, err := New(ctx, Options{Addr: v.Addr(), Auth: AuthAppRole, AppRole: AppRoleAuth{RoleID: roleID, SecretID: secret.NewString("wrong-" + secretID)}})
		if err == nil {
			t.Fatal("a wrong secret id logged in")
		}
		noSecretIn(t, err, secretID)
	})

	t.Run("short-lived tokens", func(t *testing.T) {
		roleID, secretID := v.EnableAppRole("short", 2*time.Second, "custodian")
		c, err := New(ctx, Options{Addr: v.Addr(), Auth: AuthAppRole, AppRole: AppRoleAuth{RoleID: roleID, SecretID: secret.NewString(secretID)}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		first := c.currentToken()
		time.Sleep(4 * time.Second) // past the token's max TTL
		if _, err := c.Unwrap(ctx, "user:a", ct); err != nil {
			t.Fatalf("after the first token expired: %v", err)
		}
		if c.currentToken() == first {
			t.Fatal("still the first token")
		}
	})
}

func TestPolicyWithoutDecrypt(t *testing.T) {
	v := vaultdev.Start(t)
	v.WritePolicy("wrap-only", `
path "transit/encrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/keys/keywarden-custodian"    { capabilities = ["read"] }
`)
	c := newClient(t, v, func(o *Options) { o.Token = secret.NewString(v.NewToken(0, "wrap-only")) })
	ctx := testCtx(t)
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	_, err = c.Unwrap(ctx, "user:a", ct)
	e := wantCode(t, err, ErrVaultForbidden.Code)
	if e.Status != http.StatusBadGateway {
		t.Fatalf("status %d", e.Status)
	}
	_, err = c.Rewrap(ctx, []UnwrapItem{{UserID: "user:a", Ciphertext: ct}})
	wantCode(t, err, ErrVaultForbidden.Code)
}

// countingProxy forwards to Vault and records how many Transit calls were
// in flight at once; gate, when set, holds each call until it is closed.
type countingProxy struct {
	srv      *httptest.Server
	inFlight atomic.Int64
	peak     atomic.Int64
	conns    atomic.Int64 // TCP connections the client opened
	mu       sync.Mutex
	gate     chan struct{}
	arrived  chan struct{}
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{arrived: make(chan struct{}, 1000)}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/transit/") {
			n := p.inFlight.Add(1)
			defer p.inFlight.Add(-1)
			for old := p.peak.Load(); n > old && !p.peak.CompareAndSwap(old, n); old = p.peak.Load() {
			}
			p.arrived <- struct{}{}
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			if gate != nil {
				<-gate
			} else {
				time.Sleep(5 * time.Millisecond) // make calls overlap
			}
		}
		rp.ServeHTTP(w, r)
	}))
	p.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			p.conns.Add(1)
		}
	}
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

func TestConcurrencyCap(t *testing.T) {
	v := vaultdev.Start(t)
	p := newCountingProxy(t, v.Addr())
	const limit = 3
	c := newClient(t, v, func(o *Options) { o.Addr = p.srv.URL; o.MaxConcurrent = limit })
	ctx := testCtx(t)
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Unwrap(ctx, "user:a", ct); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Unwrap: %v", err)
	}
	if peak := p.peak.Load(); peak > limit || peak < 2 {
		t.Fatalf("Vault saw %d calls at once, want between 2 and %d", peak, limit)
	}

	t.Run("waiting beyond the context is 503", func(t *testing.T) {
		gate := make(chan struct{})
		p.mu.Lock()
		p.gate = gate
		p.mu.Unlock()
		for len(p.arrived) > 0 {
			<-p.arrived
		}
		var held sync.WaitGroup
		for range limit { // fill every slot with a call Vault does not answer yet
			held.Add(1)
			go func() { defer held.Done(); _, _ = c.Unwrap(ctx, "user:a", ct) }()
		}
		for range limit {
			<-p.arrived
		}
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err := c.Unwrap(short, "user:a", ct)
		cancel()
		e := wantCode(t, err, ErrVaultUnavailable.Code)
		if !strings.Contains(e.Message, "too many") {
			t.Fatalf("message %q", e.Message)
		}
		if st := c.Stats(); st.InFlight != limit {
			t.Fatalf("in flight %d, want %d", st.InFlight, limit)
		}
		p.mu.Lock()
		p.gate = nil
		p.mu.Unlock()
		close(gate)
		held.Wait()
	})
}

// New succeeds while Vault is down (the node must start), and calls fail
// with 503 until Vault is back.
func TestNewWhileVaultDown(t *testing.T) {
	v := vaultdev.Start(t)
	addr := v.Addr()
	v.Stop()
	ctx := testCtx(t)
	c, err := New(ctx, Options{Addr: addr, Token: secret.NewString("whatever"), MaxRetries: -1})
	if err != nil {
		t.Fatalf("New with Vault down: %v", err)
	}
	defer c.Close()
	_, err = c.Wrap(ctx, "user:a", []byte("s"))
	wantCode(t, err, ErrVaultUnavailable.Code)
	if h := c.Health(ctx); h.OK() {
		t.Fatalf("health %+v", h)
	}
}

func TestCertAuthNeedsFiles(t *testing.T) {
	_, err := New(context.Background(), Options{Addr: "https://127.0.0.1:1", Auth: AuthCert,
		Cert: CertAuth{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}})
	if err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("got %v, want a TLS file error", err)
	}
}

func TestCiphertextVersion(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"vault:v1:abc", 1, true},
		{"vault:v12:abc", 12, true},
		{"vault:v0:abc", 0, false},
		{"vault:v:abc", 0, false},
		{"vault:vx:abc", 0, false},
		{"vault:v99999999999999999999:abc", 0, false},
		{"abc", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := CiphertextVersion(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("CiphertextVersion(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func FuzzCiphertextVersion(f *testing.F) {
	f.Add("vault:v1:abc")
	f.Add("vault:v007:")
	f.Add("vault:v-1:x")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := CiphertextVersion(s)
		if err == nil && (v < 1 || !strings.HasPrefix(s, "vault:v") || !strings.Contains(s, fmt.Sprintf("%d:", v))) {
			t.Fatalf("%q → %d", s, v)
		}
	})
}

// Sequential calls reuse one connection (a body left unread would force a
// new TCP and TLS handshake per call).
func TestConnectionReuse(t *testing.T) {
	v := vaultdev.Start(t)
	p := newCountingProxy(t, v.Addr())
	c := newClient(t, v, func(o *Options) { o.Addr = p.srv.URL })
	ctx := testCtx(t)
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	before := p.conns.Load()
	for range 20 {
		if _, err := c.Unwrap(ctx, "user:a", ct); err != nil {
			t.Fatal(err)
		}
		if _, err := c.KeyInfo(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.conns.Load() - before; n > 1 {
		t.Fatalf("40 sequential calls opened %d connections", n)
	}
}
