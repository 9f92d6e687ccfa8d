// Package firebasetest is a stand-in for Google's Firebase token issuer,
// for tests anywhere in the repository.
//
// An [Issuer] generates real RSA keys with self-signed X.509 certificates and
// serves them on a loopback [httptest.Server] in exactly the format of
// Google's securetoken endpoint: a JSON object mapping each key id (kid) to a
// PEM certificate, with a Cache-Control max-age. [Issuer.Mint] produces real
// RS256 Firebase ID tokens with valid defaults; [Issuer.Sign] builds any
// token at all (another algorithm, another key, a raw header, a garbage
// signature) for hostile tests.
//
// # Time
//
// Every Issuer has a [Clock] that moves only when a test moves it, so tests
// never sleep: pass [Clock.Now] as the verifier's clock. Several issuers can
// share one clock with [WithClock].
//
// # Example
//
//	iss := firebasetest.NewIssuer(t, "demo-project")
//	v, _ := firebase.New(ctx, firebase.Options{
//		ProjectIDs: []string{"demo-project"},
//		CertsURL:   iss.URL(),
//		Clock:      iss.Clock().Now,
//	})
//	id, err := v.Verify(ctx, iss.Mint(nil))
package firebasetest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// CertsPath is the path under which an Issuer serves its certificates, the
// same as Google's.
const CertsPath = "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"

// DefaultSubject is the sub (and user_id) of tokens minted with defaults.
const DefaultSubject = "test-uid-0001"

// DefaultMaxAge is the Cache-Control max-age an Issuer announces until
// [Issuer.SetMaxAge] changes it.
const DefaultMaxAge = time.Hour

// Clock is a controllable clock, safe for concurrent use. It moves only when
// told to.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time. Pass the method value as a verifier's clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (backwards when d < 0).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set puts the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// Claims are a token's claims. In [Issuer.Mint] overrides, a value of
// [Delete] removes the claim.
type Claims map[string]any

type deleteMarker struct{}

// Delete, as a value in Mint's overrides, removes that claim from the token.
var Delete = deleteMarker{}

// Key is one signing key with its certificate.
type Key struct {
	Kid     string
	Private *rsa.PrivateKey
	Cert    *x509.Certificate
	CertPEM string
}

// GenerateKey makes a 2048-bit RSA key with a self-signed certificate valid
// from notBefore to notAfter and a random kid. The key is not published by
// any issuer: use it as an attacker's key, or publish it with [Issuer.Publish].
func GenerateKey(t testing.TB, notBefore, notAfter time.Time) Key {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("firebasetest: generating RSA key: %v", err)
	}
	var kidBytes [20]byte
	if _, err := rand.Read(kidBytes[:]); err != nil {
		t.Fatalf("firebasetest: kid: %v", err)
	}
	return certify(t, hex.EncodeToString(kidBytes[:]), priv, notBefore, notAfter)
}

// DeterministicKey derives a 2048-bit RSA key and its kid from seed: the
// same in every process, as fuzz workers need (each runs the fuzz target's
// set-up on its own). Only its certificate's bytes vary. Tests only: the key
// is as public as the seed.
func DeterministicKey(t testing.TB, seed uint64, notBefore, notAfter time.Time) Key {
	t.Helper()
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	r := mrand.NewChaCha8(s)
	e := big.NewInt(65537)
	one := big.NewInt(1)
	prime := func() *big.Int {
		buf := make([]byte, 128)
		for {
			_, _ = r.Read(buf)
			buf[0] |= 0xc0 // two top bits: the product has exactly 2048 bits
			buf[len(buf)-1] |= 1
			p := new(big.Int).SetBytes(buf)
			if p.ProbablyPrime(20) && new(big.Int).GCD(nil, nil, e, new(big.Int).Sub(p, one)).Cmp(one) == 0 {
				return p
			}
		}
	}
	p, q := prime(), prime()
	for p.Cmp(q) == 0 {
		q = prime()
	}
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	priv := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 65537},
		D:         new(big.Int).ModInverse(e, phi),
		Primes:    []*big.Int{p, q},
	}
	priv.Precompute()
	if err := priv.Validate(); err != nil {
		t.Fatalf("firebasetest: deterministic key: %v", err)
	}
	sum := sha1.Sum(priv.N.Bytes())
	return certify(t, hex.EncodeToString(sum[:]), priv, notBefore, notAfter)
}

// certify wraps priv's public key in a self-signed certificate.
func certify(t testing.TB, kid string, priv *rsa.PrivateKey, notBefore, notAfter time.Time) Key {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("firebasetest: serial: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "securetoken.system.gserviceaccount.com"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatalf("firebasetest: creating certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("firebasetest: parsing certificate: %v", err)
	}
	return Key{
		Kid:     kid,
		Private: priv,
		Cert:    cert,
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
	}
}

// Option configures NewIssuer.
type Option func(*Issuer)

// WithClock makes the issuer use c (for example one shared with another
// issuer) instead of a clock of its own.
func WithClock(c *Clock) Option { return func(i *Issuer) { i.clock = c } }

// WithKey makes the issuer sign with k and publish only k (instead of two
// fresh keys), for example a [DeterministicKey].
func WithKey(k Key) Option { return func(i *Issuer) { i.fixedKey = &k } }

// Issuer mints Firebase ID tokens for one project and serves its
// certificates. Its methods are safe for concurrent use.
type Issuer struct {
	t         testing.TB
	projectID string
	clock     *Clock
	srv       *httptest.Server
	fetches   atomic.Int64

	mu        sync.Mutex
	current   Key
	published []Key // in the order they appear; current is among them unless retired
	maxAge    time.Duration
	down      bool
	rawStatus int
	rawBody   []byte
	fixedKey  *Key
}

// NewIssuer starts an issuer for projectID whose server is closed when the
// test ends. It publishes two keys, as Google does, and signs with the first
// (unless [WithKey]).
// Its clock starts at the current time rounded down to the second.
func NewIssuer(t testing.TB, projectID string, opts ...Option) *Issuer {
	t.Helper()
	i := &Issuer{t: t, projectID: projectID, maxAge: DefaultMaxAge}
	for _, o := range opts {
		o(i)
	}
	if i.clock == nil {
		i.clock = NewClock(time.Now().Truncate(time.Second))
	}
	if i.fixedKey != nil {
		i.current = *i.fixedKey
		i.published = []Key{i.current}
	} else {
		i.current = i.newKey()
		i.published = []Key{i.current, i.newKey()}
	}
	i.srv = httptest.NewServer(http.HandlerFunc(i.serve))
	t.Cleanup(i.srv.Close)
	return i
}

func (i *Issuer) newKey() Key {
	now := i.clock.Now()
	return GenerateKey(i.t, now.Add(-time.Hour), now.Add(30*24*time.Hour))
}

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != CertsPath {
		http.NotFound(w, r)
		return
	}
	i.fetches.Add(1)
	i.mu.Lock()
	down, status, raw, maxAge := i.down, i.rawStatus, i.rawBody, i.maxAge
	i.mu.Unlock()
	if down {
		http.Error(w, "backend unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d, must-revalidate, no-transform", int64(maxAge/time.Second)))
	if status != 0 {
		w.WriteHeader(status)
		_, _ = w.Write(raw)
		return
	}
	_, _ = w.Write(i.CertsJSON())
}

// ProjectID is the project the issuer mints tokens for.
func (i *Issuer) ProjectID() string { return i.projectID }

// URL is the full certificates URL, to use as a verifier's CertsURL.
func (i *Issuer) URL() string { return i.srv.URL + CertsPath }

// Clock is the issuer's clock: tokens' iat, exp and auth_time and new
// certificates' validity derive from it.
func (i *Issuer) Clock() *Clock { return i.clock }

// Key is the current signing key.
func (i *Issuer) Key() Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current
}

// Published lists the kids currently served.
func (i *Issuer) Published() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	kids := make([]string, len(i.published))
	for n, k := range i.published {
		kids[n] = k.Kid
	}
	return kids
}

// CertsJSON is the body the issuer serves: {"<kid>": "<PEM>", ...}.
func (i *Issuer) CertsJSON() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return CertsJSON(i.published...)
}

// CertsJSON encodes keys' certificates in Google's format.
func CertsJSON(keys ...Key) []byte {
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k.Kid] = k.CertPEM
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // a map of strings always marshals
	}
	return b
}

// WriteCertsFile writes the served JSON to a new file in a temporary
// directory and returns its path, for a verifier's CertsFile mode.
func (i *Issuer) WriteCertsFile() string {
	i.t.Helper()
	path := filepath.Join(i.t.TempDir(), "securetoken.json")
	if err := os.WriteFile(path, i.CertsJSON(), 0o600); err != nil {
		i.t.Fatalf("firebasetest: writing certs file: %v", err)
	}
	return path
}

// Rotate makes a new signing key and publishes it; the published set becomes
// the new key and the previous signing key, so keys older than that are no
// longer served. It returns the new key.
func (i *Issuer) Rotate() Key {
	k := i.newKey()
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = []Key{k, i.current}
	i.current = k
	return k
}

// Publish adds k to the served set without signing with it.
func (i *Issuer) Publish(k Key) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = append(i.published, k)
}

// Retire stops serving the key with this kid (the issuer may still sign with
// it if it is the current key).
func (i *Issuer) Retire(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	kept := i.published[:0]
	for _, k := range i.published {
		if k.Kid != kid {
			kept = append(kept, k)
		}
	}
	i.published = kept
}

// SetDown makes the endpoint answer 503 (true) or serve again (false).
func (i *Issuer) SetDown(down bool) {
	i.mu.Lock()
	i.down = down
	i.mu.Unlock()
}

// SetMaxAge sets the Cache-Control max-age of later answers.
func (i *Issuer) SetMaxAge(d time.Duration) {
	i.mu.Lock()
	i.maxAge = d
	i.mu.Unlock()
}

// SetResponse makes the endpoint answer with status and body verbatim (still
// with Cache-Control), for tests of broken answers. A status of 0 restores
// normal service.
func (i *Issuer) SetResponse(status int, body []byte) {
	i.mu.Lock()
	i.rawStatus, i.rawBody = status, body
	i.mu.Unlock()
}

// Fetches counts the requests made for the certificates so far.
func (i *Issuer) Fetches() int { return int(i.fetches.Load()) }

// Claims returns a fresh copy of the default claims of a valid token issued
// now: aud, iss, sub, user_id, iat, exp (one hour), auth_time (now),
// email, email_verified and firebase.sign_in_provider "password".
func (i *Issuer) Claims() Claims {
	now := i.clock.Now().Unix()
	return Claims{
		"iss":            "https://securetoken.google.com/" + i.projectID,
		"aud":            i.projectID,
		"auth_time":      now,
		"user_id":        DefaultSubject,
		"sub":            DefaultSubject,
		"iat":            now,
		"exp":            now + 3600,
		"email":          "user@example.com",
		"email_verified": true,
		"firebase":       Firebase("password", ""),
	}
}

// Firebase builds the "firebase" claim for a sign-in provider and, when not
// empty, an Identity Platform tenant.
func Firebase(provider, tenant string) map[string]any {
	f := map[string]any{
		"identities":       map[string]any{"email": []any{"user@example.com"}},
		"sign_in_provider": provider,
	}
	if tenant != "" {
		f["tenant"] = tenant
	}
	return f
}

// Mint returns a valid RS256 token signed with the current key, with the
// default claims replaced by overrides (a [Delete] value removes a claim).
func (i *Issuer) Mint(overrides Claims) string {
	i.t.Helper()
	return i.MintWith(i.Key(), overrides)
}

// MintWith is Mint signed with k (published or not) under k's kid.
func (i *Issuer) MintWith(k Key, overrides Claims) string {
	i.t.Helper()
	c := i.Claims()
	for name, v := range overrides {
		if _, del := v.(deleteMarker); del {
			delete(c, name)
			continue
		}
		c[name] = v
	}
	return i.Sign(Token{Claims: c, Kid: k.Kid, Key: k.Private})
}

// Token describes an arbitrary token for [Issuer.Sign]. Its zero value is a
// valid token: default claims, header {"alg":"RS256","kid":<current>,"typ":"JWT"},
// signed with the current key.
type Token struct {
	// Header replaces the default header when not nil.
	Header map[string]any
	// RawHeader, when not nil, is the header JSON verbatim (wins over Header).
	RawHeader []byte
	// Claims replace the default claims when not nil (no merging).
	Claims Claims
	// RawClaims, when not nil, is the claims JSON verbatim (wins over Claims).
	RawClaims []byte
	// Alg is the algorithm in the default header; "" means RS256.
	Alg string
	// Kid is the kid in the default header; "" means the current key's.
	Kid string
	// SignAlg is the algorithm that computes the signature; "" means Alg,
	// or RS256. "none" gives an empty signature.
	SignAlg string
	// Key signs: *rsa.PrivateKey for RS*/PS*, *ecdsa.PrivateKey for ES*,
	// []byte for HS*, ed25519.PrivateKey for EdDSA. nil means the current
	// RSA key.
	Key any
	// Signature, when not nil, is used verbatim instead of signing.
	Signature []byte
}

// Sign assembles and signs tok. It fails the test if signing fails.
func (i *Issuer) Sign(tok Token) string {
	i.t.Helper()
	cur := i.Key()
	alg := tok.Alg
	if alg == "" {
		alg = "RS256"
	}
	kid := tok.Kid
	if kid == "" {
		kid = cur.Kid
	}
	header := tok.RawHeader
	if header == nil {
		h := tok.Header
		if h == nil {
			h = map[string]any{"alg": alg, "kid": kid, "typ": "JWT"}
		}
		header = mustJSON(i.t, h)
	}
	claims := tok.RawClaims
	if claims == nil {
		c := tok.Claims
		if c == nil {
			c = i.Claims()
		}
		claims = mustJSON(i.t, c)
	}
	signingInput := b64(header) + "." + b64(claims)
	sig := tok.Signature
	if sig == nil {
		signAlg := tok.SignAlg
		if signAlg == "" {
			signAlg = alg
		}
		key := tok.Key
		if key == nil {
			key = cur.Private
		}
		if signAlg == "none" {
			sig = []byte{}
		} else {
			m := jwt.GetSigningMethod(signAlg)
			if m == nil {
				i.t.Fatalf("firebasetest: unknown signing algorithm %q", signAlg)
			}
			var err error
			if sig, err = m.Sign(signingInput, key); err != nil {
				i.t.Fatalf("firebasetest: signing with %s: %v", signAlg, err)
			}
		}
	}
	return signingInput + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("firebasetest: encoding JSON: %v", err)
	}
	return b
}
