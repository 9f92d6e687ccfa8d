package custodian

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/sync/singleflight"

	"github.com/keywarden/keywarden/internal/apierr"
)

// Client wraps and unwraps custodian shares with Vault Transit. It is safe
// for concurrent use. Make one with [New]; [Client.Close] stops its
// background token renewal.
type Client struct {
	opts Options
	vc   *api.Client
	log  *slog.Logger
	sem  chan struct{}

	stop      chan struct{}
	stopCtx   context.Context // cancelled by Close: ends background logins
	stopAll   context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup

	logins    singleflight.Group
	newSecret chan *api.Secret // hands a fresh login to the renewal loop

	mu        sync.Mutex
	lastLogin time.Time
	authErr   *apierr.Error // last login/renewal failure; nil when the token is good

	keyMu sync.Mutex
	keyOK atomic.Bool

	health healthCache

	inFlight, peakInFlight, waiting atomic.Int64
	calls, failures, retries        atomic.Uint64
}

// New checks opts, logs in to Vault and checks the Transit key (creating it,
// derived, when it is missing and the policy allows).
//
// New fails for invalid options and for answers that mean the
// configuration is wrong (credentials refused, key not derived). When Vault
// is merely unreachable or sealed, New returns a working Client anyway: it
// keeps logging in in the background, every call fails with
// [ErrVaultUnavailable] meanwhile, and [Client.Health] reports the reason.
// So a Vault outage never stops Keywarden from starting (decisions/20).
func New(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("custodian: %w", err)
	}
	o := opts.withDefaults()
	vc, err := newAPIClient(o)
	if err != nil {
		return nil, fmt.Errorf("custodian: %w", err)
	}
	stopCtx, stopAll := context.WithCancel(context.Background())
	c := &Client{
		stopCtx:   stopCtx,
		stopAll:   stopAll,
		opts:      o,
		vc:        vc,
		log:       o.Logger.With("component", "custodian"),
		sem:       make(chan struct{}, o.MaxConcurrent),
		stop:      make(chan struct{}),
		newSecret: make(chan *api.Secret, 1),
	}

	sec, err := c.login(ctx)
	if err != nil {
		e, _ := classify(err)
		if e.Code != ErrVaultUnavailable.Code {
			return nil, fmt.Errorf("custodian: login to Vault: %w", e)
		}
		c.setAuthErr(e)
		c.log.Warn("Vault is not reachable at start; calls fail until it is", "error", e.Cause)
	}
	c.wg.Add(1)
	go c.renewLoop(sec)

	if sec != nil {
		if _, err := c.EnsureKey(ctx); err != nil {
			e, _ := apierr.As(err)
			if e == nil || e.Code != ErrVaultUnavailable.Code {
				c.Close()
				return nil, fmt.Errorf("custodian: transit key: %w", err)
			}
		}
	}
	return c, nil
}

// newAPIClient builds the Vault API client without reading any VAULT_*
// environment variable: the configuration is only what Options say. The
// library's own retries are off; [Client.call] retries.
func newAPIClient(o Options) (*api.Client, error) {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: o.Timeout,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        o.MaxConcurrent,
		MaxIdleConnsPerHost: o.MaxConcurrent,
		IdleConnTimeout:     90 * time.Second,
	}
	cfg := &api.Config{
		Address: o.Addr,
		HttpClient: &http.Client{
			Transport: tr,
			// A backstop for calls made without a deadline (the library's
			// token renewal): no Vault call runs longer than this.
			Timeout:       o.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		MaxRetries: 0,
		// Timeout stays 0: deadlines come from the caller's context, and
		// the library would otherwise cancel a raw response before its
		// body is read.
	}
	tlsCfg := &api.TLSConfig{CACert: o.CACert}
	if o.Auth == AuthCert {
		tlsCfg.ClientCert, tlsCfg.ClientKey = o.Cert.CertFile, o.Cert.KeyFile
	}
	if err := cfg.ConfigureTLS(tlsCfg); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if o.Auth == AuthTPMCert {
		cert, err := tpmClientCertificate(o.TPMCert)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	}
	vc, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	vc.ClearToken() // NewClient reads VAULT_TOKEN
	vc.ClearNamespace()
	if o.Namespace != "" {
		vc.SetNamespace(o.Namespace)
	}
	vc.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}}) // drops VAULT_HEADERS
	return vc, nil
}

// tpmClientCertificate pairs the certificate file with the TPM key, after
// checking that the certificate was issued to that key: a certificate for
// another key (the store and configuration copied to another machine,
// whose TPM holds another key) could never complete a handshake, and
// saying so here is clearer than Vault's TLS alert.
func tpmClientCertificate(a TPMCertAuth) (tls.Certificate, error) {
	if a.Key == nil {
		return tls.Certificate{}, errors.New("tpm-cert: no TPM client key")
	}
	raw, err := os.ReadFile(a.CertFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls_cert_file: %w", err)
	}
	var chain [][]byte
	for rest := raw; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, b.Bytes)
		}
	}
	if len(chain) == 0 {
		return tls.Certificate{}, fmt.Errorf("tls_cert_file %s: no PEM certificate in it", a.CertFile)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls_cert_file %s: %w", a.CertFile, err)
	}
	pub, ok := a.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return tls.Certificate{}, ErrClientKeyMismatch
	}
	return tls.Certificate{
		Certificate: chain, PrivateKey: a.Key, Leaf: leaf,
		// The TPM key signs SHA-256 digests with ECDSA P-256 only.
		SupportedSignatureAlgorithms: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
	}, nil
}

// Close stops the background token renewal. Calls after Close fail.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.stopAll()
		c.wg.Wait()
		c.vc.ClearToken()
	})
}

// call runs fn against Vault with the concurrency cap, a per-attempt
// timeout, a re-login on 403 (AppRole, cert) and bounded retries with
// exponential backoff and full jitter on retryable failures. Every error it
// returns is an *apierr.Error.
func (c *Client) call(ctx context.Context, fn func(ctx context.Context) error) error {
	return c.do(ctx, true, fn)
}

// do is call; relogin false is for the login itself.
func (c *Client) do(ctx context.Context, relogin bool, fn func(ctx context.Context) error) error {
	c.calls.Add(1)
	relogged := !relogin || !c.canRelogin()
	if !relogged && c.currentToken() == "" {
		// Not logged in yet (Vault was down at start): try now.
		relogged = true
		if err := c.relogin(ctx); err != nil {
			c.failures.Add(1)
			e, _ := classify(err)
			return e
		}
	}
	for attempt := 0; ; attempt++ {
		err := c.attempt(ctx, fn)
		if err == nil {
			return nil
		}
		e, retryable := classify(err)
		if e.Code == ErrVaultForbidden.Code && !relogged {
			relogged = true
			if c.relogin(ctx) == nil {
				attempt-- // a fresh login is not a retry
				continue
			}
		}
		if !retryable || attempt >= c.opts.MaxRetries || ctx.Err() != nil {
			c.failures.Add(1)
			return e
		}
		d := backoff(attempt)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			c.failures.Add(1)
			return e
		}
		c.retries.Add(1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			c.failures.Add(1)
			return e
		case <-t.C:
		}
	}
}

var errClosed = errors.New("custodian: client closed")

func (c *Client) attempt(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.stop:
		return ErrVaultUnavailable.WithMessage("the Vault client is shut down").Wrap(errClosed)
	default:
	}
	// Wait for a slot, at most until the context or Timeout ends.
	c.waiting.Add(1)
	wctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	select {
	case c.sem <- struct{}{}:
		cancel()
		c.waiting.Add(-1)
	case <-wctx.Done():
		cancel()
		c.waiting.Add(-1)
		// Not retryable: retrying would only add to the queue.
		return ErrVaultUnavailable.WithMessage("too many Vault calls are in flight; retry later").
			WithRetry(time.Second).Wrap(wctx.Err())
	}
	n := c.inFlight.Add(1)
	for p := c.peakInFlight.Load(); n > p && !c.peakInFlight.CompareAndSwap(p, n); p = c.peakInFlight.Load() {
	}
	defer func() {
		c.inFlight.Add(-1)
		<-c.sem
	}()
	actx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	err := fn(actx)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		// The attempt timed out, not the caller: say so (retryable).
		return fmt.Errorf("vault call timed out after %s: %w", c.opts.Timeout, context.DeadlineExceeded)
	}
	return err
}

// backoff is 100 ms × 2^attempt (capped at 2 s), with full jitter in the
// upper half so concurrent callers spread out.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	d = min(d, 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

// Stats are counters for metrics.
type Stats struct {
	InFlight     int64  // Vault calls running now
	PeakInFlight int64  // most calls ever running at once (≤ MaxConcurrent)
	Waiting      int64  // calls waiting for a slot now
	Calls        uint64 // operations started
	Failures     uint64 // operations that failed after retries
	Retries      uint64 // retries made
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		InFlight:     c.inFlight.Load(),
		PeakInFlight: c.peakInFlight.Load(),
		Waiting:      c.waiting.Load(),
		Calls:        c.calls.Load(),
		Failures:     c.failures.Load(),
		Retries:      c.retries.Load(),
	}
}
