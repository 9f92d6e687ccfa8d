package attestapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
)

// Defaults of [Options].
const (
	// DefaultRate is how many quotes per second the appliance makes, for
	// all clients together.
	DefaultRate = 5
	// DefaultBurst is how many quotes may come at once after a quiet spell.
	DefaultBurst = 10
	// DefaultQuoteTimeout bounds one quote (PCR reads and TPM2_Quote).
	DefaultQuoteTimeout = 10 * time.Second
)

// Bind names the public key a quote binds.
type Bind string

const (
	// BindHPKE binds the appliance's HPKE public key (decisions/09, decisions/11): the
	// key clients seal to. The default.
	BindHPKE Bind = "hpke"
	// BindTLS binds the SubjectPublicKeyInfo DER of the appliance's own TLS
	// certificate: for clients that reach the appliance's TLS directly, not
	// through a TLS-terminating load balancer.
	BindTLS Bind = "tls"
)

// ParseBind reads the bind query parameter; empty is [BindHPKE].
func ParseBind(s string) (Bind, error) {
	switch s {
	case "", string(BindHPKE):
		return BindHPKE, nil
	case string(BindTLS):
		return BindTLS, nil
	}
	return "", errBadBind
}

// Errors of the routes, as the server's central handler renders them.
var (
	errBadBind = apierr.New(http.StatusBadRequest, "bad_bind", "bind must be hpke or tls")
	// ErrBindUnavailable: bind=tls asked of an appliance that does not
	// terminate TLS itself (its clients' TLS ends at a load balancer, whose
	// key the TPM cannot vouch for).
	ErrBindUnavailable = apierr.New(http.StatusBadRequest, "bind_unavailable", "this appliance does not terminate TLS itself; use bind=hpke")
	// ErrUnavailable: the appliance has no usable attestation key.
	ErrUnavailable = apierr.New(http.StatusServiceUnavailable, "attestation_unavailable", "the appliance has no usable attestation key; its operator has been told")
	// ErrQuoteFailed: the TPM did not make the quote.
	ErrQuoteFailed = apierr.New(http.StatusServiceUnavailable, "quote_failed", "the TPM could not make a quote; retry later").WithRetry(5 * time.Second)
	errRateLimited = apierr.ErrRateLimited.WithMessage("quotes are rate-limited for the whole appliance (the TPM is slow and shared); retry after the time in Retry-After")
)

// Options configure a [Handler]. PCRs and TPM are required whenever AK is
// set; the zero value of every other field is documented with it.
type Options struct {
	// TPM is the TPM the attestation key was loaded into.
	TPM transport.TPM
	// AK is the loaded attestation key. Nil: /v1/attestation answers 503
	// attestation_unavailable (Unavailable says why, in the log only).
	AK          *attest.AK
	Unavailable string
	// PCRs are the SHA-256 bank PCRs every quote covers (tpm.attest_pcrs),
	// at least one when AK is set.
	PCRs []int
	// HPKEPublicKey is the appliance's HPKE public key
	// (enclave.Root.HPKEKey). Nil means the root key is sealed: both
	// routes answer 503 sealed for it (bind=tls still works).
	HPKEPublicKey []byte
	// TLSPublicKey returns the SubjectPublicKeyInfo DER of the certificate
	// the appliance serves right now (see [SPKI]). Nil: the appliance does
	// not terminate TLS itself, and bind=tls is 400 bind_unavailable.
	TLSPublicKey func() ([]byte, error)
	// EKCertificates and EKChain are copied into every evidence
	// ([attest.ReadEKCertificates], read once at start). Nil: none.
	EKCertificates, EKChain [][]byte
	// EventLogPath is read into each evidence when readable (see
	// [attest.QuoteOptions]). Empty: no event log (right for a simulator
	// or swtpm, whose PCRs the host's firmware log does not describe).
	EventLogPath string
	// Version and BinaryDigest are the build's own claims, reported as
	// they are. Empty: left out.
	Version, BinaryDigest string
	// Rate and Burst shape the token bucket shared by all quote requests:
	// zero means [DefaultRate] and [DefaultBurst]. Guards the TPM, which
	// other work needs (the rollback counter), against a flood of quotes.
	Rate  float64
	Burst int
	// QuoteTimeout bounds one quote; zero means [DefaultQuoteTimeout].
	QuoteTimeout time.Duration
	// Logger logs TPM failures; nil means the server's logger.
	Logger *slog.Logger
	// Keys is the body of GET /v1/appliance-keys ([NewApplianceKeys]).
	// Nil: it answers 503 signing_key_unavailable (KeysUnavailable says
	// why, in the log only).
	Keys            *ApplianceKeys
	KeysUnavailable string
}

// Validate checks the options without touching the TPM.
func (o *Options) Validate() error {
	if len(o.PCRs) == 0 && o.AK != nil {
		return errors.New("attestapi: PCRs are required (tpm.attest_pcrs)")
	}
	for _, i := range o.PCRs {
		if i < 0 || i > attest.MaxPCR {
			return fmt.Errorf("attestapi: PCR %d outside 0..%d", i, attest.MaxPCR)
		}
	}
	if o.AK != nil && o.TPM == nil {
		return errors.New("attestapi: an attestation key needs its TPM")
	}
	if o.HPKEPublicKey != nil {
		if err := enclave.ValidRecipientKey(o.HPKEPublicKey); err != nil {
			return fmt.Errorf("attestapi: HPKE public key: %w", err)
		}
	}
	if o.Rate < 0 || o.Burst < 0 || o.QuoteTimeout < 0 {
		return errors.New("attestapi: Rate, Burst and QuoteTimeout must not be negative")
	}
	return nil
}

// Handler serves the attestation routes (mounted by the public routes
// table, server/routes_public.go): Attestation, ApplianceKey and
// ApplianceKeys.
type Handler struct {
	opts    Options
	limiter *rate.Limiter
	log     *slog.Logger
}

// New validates the options and builds the handler.
func New(opts Options) (*Handler, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Rate == 0 {
		opts.Rate = DefaultRate
	}
	if opts.Burst == 0 {
		opts.Burst = DefaultBurst
	}
	if opts.QuoteTimeout == 0 {
		opts.QuoteTimeout = DefaultQuoteTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Handler{opts: opts, limiter: rate.NewLimiter(rate.Limit(opts.Rate), opts.Burst), log: log}, nil
}

// ApplianceKey is the body of GET /v1/appliance-key.
type ApplianceKey struct {
	// HPKEPublicKey is the appliance's HPKE public key (base64 in JSON).
	HPKEPublicKey []byte `json:"hpkePublicKey"`
	// Suite names the HPKE suite (enclave.SuiteMLKEM768X25519 for the
	// appliance's own key).
	Suite string `json:"suite"`
}

// ApplianceKey is GET /v1/appliance-key.
func (h *Handler) ApplianceKey(c echo.Context) error {
	if h.opts.HPKEPublicKey == nil {
		return apierr.ErrSealed
	}
	return c.JSON(http.StatusOK, ApplianceKey{HPKEPublicKey: h.opts.HPKEPublicKey, Suite: Suite(h.opts.HPKEPublicKey)})
}

// Suite names the HPKE suite of a public key by its length, as
// enclave.SealToRecipient chooses it; "" for a length it does not take.
func Suite(pub []byte) string {
	switch len(pub) {
	case 32:
		return enclave.SuiteX25519
	case 1216:
		return enclave.SuiteMLKEM768X25519
	}
	return ""
}

// Attestation is GET /v1/attestation.
func (h *Handler) Attestation(c echo.Context) error {
	q := c.QueryParams()
	nonce, err := ParseNonce(q.Get("nonce"))
	if err != nil {
		return err
	}
	bind, err := ParseBind(q.Get("bind"))
	if err != nil {
		return err
	}
	ev, err := h.Evidence(c.Request().Context(), nonce, bind)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, ev)
}

// ParseNonce reads the nonce query parameter: hex (either case) of
// [attest.MinNonce]..[attest.MaxNonce] bytes, else [attest.ErrBadNonce].
func ParseNonce(s string) ([]byte, error) {
	if len(s) < 2*attest.MinNonce || len(s) > 2*attest.MaxNonce {
		return nil, attest.ErrBadNonce
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, attest.ErrBadNonce.WithMessage("the nonce must be 16 to 64 bytes in hex")
	}
	return b, nil
}

// Evidence makes evidence for a nonce, binding the key bind names. It takes
// a token from the shared rate limit first (429 rate_limited with
// Retry-After when none is left), then quotes.
func (h *Handler) Evidence(ctx context.Context, nonce []byte, bind Bind) (*attest.Evidence, error) {
	if n := len(nonce); n < attest.MinNonce || n > attest.MaxNonce {
		return nil, attest.ErrBadNonce
	}
	var bound []byte
	switch bind {
	case BindHPKE, "":
		if h.opts.HPKEPublicKey == nil {
			return nil, apierr.ErrSealed
		}
		bound = h.opts.HPKEPublicKey
	case BindTLS:
		if h.opts.TLSPublicKey == nil {
			return nil, ErrBindUnavailable
		}
		k, err := h.opts.TLSPublicKey()
		if err != nil {
			h.log.Error("attestation: no TLS public key to bind", "err", err)
			return nil, ErrQuoteFailed.Wrap(err)
		}
		bound = k
	default:
		return nil, errBadBind
	}
	if h.opts.AK == nil {
		return nil, ErrUnavailable.Wrap(errors.New(h.opts.Unavailable))
	}
	if err := h.take(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.QuoteTimeout)
	defer cancel()
	ev, err := attest.Quote(ctx, h.opts.TPM, h.opts.AK, attest.QuoteOptions{
		Nonce: nonce, BoundKey: bound, PCRs: h.opts.PCRs, EventLogPath: h.opts.EventLogPath,
	})
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			h.log.Error("attestation: quote failed", "err", err)
		}
		return nil, ErrQuoteFailed.Wrap(err)
	}
	ev.EKCertificates, ev.EKChain = h.opts.EKCertificates, h.opts.EKChain
	ev.Version, ev.BinaryDigest = h.opts.Version, h.opts.BinaryDigest
	return ev, nil
}

// take takes one token from the shared bucket, or says how long to wait.
func (h *Handler) take() error {
	r := h.limiter.Reserve()
	if !r.OK() {
		return errRateLimited.WithRetry(time.Second)
	}
	if d := r.Delay(); d > 0 {
		r.Cancel()
		if d < time.Second {
			d = time.Second
		}
		return errRateLimited.WithRetry(d)
	}
	return nil
}

// SPKI returns the SubjectPublicKeyInfo DER of a TLS certificate's leaf:
// what bind=tls binds and what a client sees on the connection
// (x509.Certificate.RawSubjectPublicKeyInfo).
func SPKI(cert *tls.Certificate) ([]byte, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("attestapi: no TLS certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("attestapi: TLS certificate: %w", err)
		}
	}
	return leaf.RawSubjectPublicKeyInfo, nil
}
