package attestapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
)

// DefaultTimeout bounds each request of a [Client] whose HTTP is nil.
const DefaultTimeout = 30 * time.Second

// maxKeyBody bounds the body of GET /v1/appliance-key the client reads.
const maxKeyBody = 64 << 10

// Client fetches an appliance's evidence and checks it. It is what
// `keywarden attest verify` runs; a Go client app can run it too before
// sealing a key to the appliance.
type Client struct {
	// BaseURL is the appliance's public listener, "https://host[:port]"
	// (or http:// for dev mode; bind=tls then cannot work).
	BaseURL string
	// HTTP makes the requests. Nil: a client with [DefaultTimeout] that
	// trusts the system's roots.
	HTTP *http.Client
}

// APIError is an error answer of the appliance: its status, stable code
// and public message.
type APIError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter string // the Retry-After header, when sent
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("appliance answered %d %s: %s", e.Status, e.Code, e.Message)
	if e.RetryAfter != "" {
		s += " (retry after " + e.RetryAfter + "s)"
	}
	return s
}

// NewNonce returns 32 fresh random bytes.
func NewNonce() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

// ApplianceKey fetches GET /v1/appliance-key. The key is unverified until
// evidence bound to it verifies: use [Client.Check].
func (c *Client) ApplianceKey(ctx context.Context) (*ApplianceKey, error) {
	body, _, err := c.get(ctx, "/v1/appliance-key", nil, maxKeyBody)
	if err != nil {
		return nil, err
	}
	return ParseApplianceKey(body)
}

// ParseApplianceKey decodes the body of GET /v1/appliance-key strictly:
// exactly the two fields, a usable HPKE public key, and the suite that its
// length implies.
func ParseApplianceKey(data []byte) (*ApplianceKey, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var k ApplianceKey
	if err := dec.Decode(&k); err != nil {
		return nil, fmt.Errorf("attestapi: appliance key: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("attestapi: appliance key: trailing data")
	}
	if err := enclave.ValidRecipientKey(k.HPKEPublicKey); err != nil {
		return nil, fmt.Errorf("attestapi: appliance key: %w", err)
	}
	if want := Suite(k.HPKEPublicKey); k.Suite != want {
		return nil, fmt.Errorf("attestapi: appliance key: suite %q, but the key is a %s key", k.Suite, want)
	}
	return &k, nil
}

// Evidence fetches GET /v1/attestation for nonce and bind. tlsKey is the
// SubjectPublicKeyInfo DER of the certificate the appliance presented on
// the connection that carried the answer (nil over plain HTTP): the key to
// expect for [BindTLS].
func (c *Client) Evidence(ctx context.Context, nonce []byte, bind Bind) (ev *attest.Evidence, tlsKey []byte, err error) {
	q := url.Values{"nonce": {hex.EncodeToString(nonce)}}
	if bind != "" {
		q.Set("bind", string(bind))
	}
	body, resp, err := c.get(ctx, "/v1/attestation", q, attest.MaxEvidenceSize)
	if err != nil {
		return nil, nil, err
	}
	ev, err = attest.ParseEvidence(body)
	if err != nil {
		return nil, nil, err
	}
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		tlsKey = resp.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo
	}
	return ev, tlsKey, nil
}

// CheckOptions say what [Client.Check] expects. Policy is required.
type CheckOptions struct {
	// Policy is the operator's allowed PCR values ([attest.ParsePolicy]).
	Policy *attest.Policy
	// AKName pins the attestation key (see attest.VerifyOptions.AKName).
	// Nil: not pinned, and the check proves much less; pin it.
	AKName []byte
	// Bind selects the key the quote must bind: [BindHPKE] (zero value)
	// expects the key GET /v1/appliance-key publishes; [BindTLS] the key of
	// the TLS connection that carried the evidence.
	Bind Bind
	// EKRoots, when set, requires an EK certificate chaining to them.
	EKRoots *x509.CertPool
	// Now is the time for certificate checks; zero means time.Now().
	Now time.Time
}

// Result is what a passed [Client.Check] established.
type Result struct {
	Facts    *attest.Facts
	Evidence *attest.Evidence
	Bind     Bind
	// Suite is the HPKE suite of the bound key for [BindHPKE]; empty for
	// [BindTLS].
	Suite string
}

// Check fetches evidence for a fresh random nonce and verifies it with
// [attest.Verify] against opts. For [BindHPKE] it first fetches the
// published appliance key and requires the quote to bind exactly that key,
// so a client that checked may seal to Result.Facts.BoundKey. For
// [BindTLS] it requires the quote to bind the key of the TLS connection the
// evidence came over, so a TLS-terminating machine in the middle is
// refused. A refusal is an *attest.VerifyError naming the failed check;
// other errors are transport or protocol failures.
func (c *Client) Check(ctx context.Context, opts CheckOptions) (*Result, error) {
	res := &Result{Bind: opts.Bind}
	if res.Bind == "" {
		res.Bind = BindHPKE
	}
	var want []byte
	switch res.Bind {
	case BindHPKE:
		k, err := c.ApplianceKey(ctx)
		if err != nil {
			return nil, err
		}
		want, res.Suite = k.HPKEPublicKey, k.Suite
	case BindTLS:
	default:
		return nil, fmt.Errorf("attestapi: bind %q: want hpke or tls", opts.Bind)
	}
	nonce := NewNonce()
	ev, tlsKey, err := c.Evidence(ctx, nonce, res.Bind)
	if err != nil {
		return nil, err
	}
	if res.Bind == BindTLS {
		if tlsKey == nil {
			return nil, errors.New("attestapi: bind=tls needs an https URL: there is no TLS key to compare")
		}
		want = tlsKey
	}
	facts, err := attest.Verify(ev, attest.VerifyOptions{
		Nonce: nonce, BoundKey: want, Policy: opts.Policy, AKName: opts.AKName, EKRoots: opts.EKRoots, Now: opts.Now,
	})
	if err != nil {
		return nil, err
	}
	res.Facts, res.Evidence = facts, ev
	return res, nil
}

// get fetches path with query from the appliance, reading at most limit
// bytes of a 200 answer; any other status is an *APIError.
func (c *Client) get(ctx context.Context, path string, query url.Values, limit int64) ([]byte, *http.Response, error) {
	base, err := url.Parse(c.BaseURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, nil, fmt.Errorf("attestapi: URL %q: want https://host[:port]", c.BaseURL)
	}
	u := base.JoinPath(path)
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("attestapi: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("attestapi: read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &APIError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &eb) == nil {
			e.Code, e.Message = printable(eb.Error.Code, 64), printable(eb.Error.Message, 300)
		}
		if e.Code == "" {
			e.Code, e.Message = "http_error", http.StatusText(resp.StatusCode)
		}
		return nil, nil, e
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("attestapi: %s answered more than %d bytes", path, limit)
	}
	return body, resp, nil
}

// printable keeps a remote string fit for a terminal: no control
// characters, at most n runes.
func printable(s string, n int) string {
	out := make([]rune, 0, min(len(s), n))
	for _, r := range s {
		if len(out) == n {
			break
		}
		if unicode.IsControl(r) || r == utf8.RuneError {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
