//go:build cgo

package attestapi_test

// These tests run the real server (server.New) with the TPM simulator, a
// bbolt store, the audit log and the root key's HPKE key. The simulator is
// one per process: no t.Parallel here.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/apptest/appserver"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/attestapi"
)

const attestPCR = 16 // the debug PCR: resettable, so tests can extend it

type appliance struct {
	*appserver.App
	t       *testing.T
	tpm     *tpmdev.Counting
	ak      *attest.AK
	hpkePub []byte
	url     string
	tlsCA   *x509.CertPool // set when served over TLS
	tlsSPKI []byte         // the served certificate's key
	http    *http.Client
}

type setup struct {
	tls    bool                       // serve over TLS and offer bind=tls
	noAK   bool                       // no attestation key
	sealed bool                       // no HPKE key
	change func(o *attestapi.Options) // last word on the options
}

// newAppliance runs the real server (apptest: simulator-sealed root key,
// bbolt, audit log) with an attestation key on the simulator.
func newAppliance(t *testing.T, st setup) *appliance {
	t.Helper()
	a := &appliance{t: t}
	opts := []appserver.Option{appserver.Core(apptest.Seed(11)), appserver.Before(func(app *appserver.App, so *server.Options) {
		so.Attestation = a.routes(app, st)
	})}
	if st.tls {
		opts = append(opts, appserver.TLS())
	}
	a.App = appserver.New(t, opts...)
	a.url = a.URL
	return a
}

// routes builds the attestation routes on app's simulator and root key.
func (a *appliance) routes(app *appserver.App, st setup) *attestapi.Handler {
	t, ctx, tpm := a.t, context.Background(), app.TPM
	a.tpm = tpm
	opts := attestapi.Options{TPM: tpm, PCRs: []int{attestPCR}, Version: "keywarden test", BinaryDigest: strings.Repeat("ab", 32)}
	if !st.noAK {
		blob, err := attest.CreateAK(ctx, tpm)
		if err != nil {
			t.Fatal(err)
		}
		a.ak, err = attest.LoadAK(ctx, tpm, blob)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			a.ak.Close()
			if hs, err := tpmdev.TransientHandles(app.Sim); err != nil || len(hs) != 0 {
				t.Errorf("after closing the AK: transient handles %v (%v), want none", hs, err)
			}
		})
		opts.AK = a.ak
	} else {
		opts.Unavailable = "test: no attestation key"
	}
	if !st.sealed {
		k, err := app.Root.HPKEKey()
		if err != nil {
			t.Fatal(err)
		}
		a.hpkePub = k.PublicKey().Bytes()
		opts.HPKEPublicKey = a.hpkePub
	}
	a.http = http.DefaultClient
	if st.tls {
		hs := app.HTTP
		cert := hs.TLS.Certificates[0]
		opts.TLSPublicKey = func() ([]byte, error) { return attestapi.SPKI(&cert) }
		a.tlsCA = x509.NewCertPool()
		a.tlsCA.AddCert(hs.Certificate())
		a.tlsSPKI = hs.Certificate().RawSubjectPublicKeyInfo
		a.http = hs.Client()
	}
	if st.change != nil {
		st.change(&opts)
	}
	h, err := attestapi.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (a *appliance) client() *attestapi.Client {
	return &attestapi.Client{BaseURL: a.url, HTTP: a.http}
}

// get sends GET path with the appliance's HTTP client.
func (a *appliance) get(path string) apptest.Reply {
	a.t.Helper()
	return a.Do("GET", path, nil)
}

// policyNow is what `keywarden attest policy` prints: the current values
// of the quoted PCRs, from the appliance's own evidence.
func (a *appliance) policyNow() *attest.Policy {
	a.t.Helper()
	ev, _, err := a.client().Evidence(context.Background(), attestapi.NewNonce(), attestapi.BindHPKE)
	if err != nil {
		a.t.Fatal(err)
	}
	p, err := attest.PolicyFromPCRs(ev.PCRs)
	if err != nil {
		a.t.Fatal(err)
	}
	return p
}

func (a *appliance) extend(pcr int, data string) {
	a.t.Helper()
	d := sha256.Sum256([]byte(data))
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}.Execute(transport.TPM(a.tpm))
	if err != nil {
		a.t.Fatalf("extend PCR %d: %v", pcr, err)
	}
}

func TestEvidenceVerifies(t *testing.T) {
	a := newAppliance(t, setup{})
	a.extend(attestPCR, "boot measurement")
	policy := a.policyNow()
	ctx := context.Background()

	before := a.tpm.Count()
	res, err := a.client().Check(ctx, attestapi.CheckOptions{Policy: policy, AKName: a.ak.Name()})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if a.tpm.Count() == before {
		t.Error("a quote sent no TPM command")
	}
	f := res.Facts
	if !f.AKPinned || !bytes.Equal(f.AKName, a.ak.Name()) {
		t.Errorf("AK: pinned %v, name %x", f.AKPinned, f.AKName)
	}
	if !bytes.Equal(f.BoundKey, a.hpkePub) || res.Suite != enclave.SuiteMLKEM768X25519 {
		t.Errorf("bound key is not the appliance's HPKE key (suite %q)", res.Suite)
	}
	if len(f.PCRs) != 1 || !policy.Allows(attestPCR, f.PCRs[attestPCR]) {
		t.Errorf("PCRs %v", f.PCRs)
	}
	if f.ReportedVersion != "keywarden test" || f.ReportedBinaryDigest != strings.Repeat("ab", 32) {
		t.Errorf("reported version %q, digest %q", f.ReportedVersion, f.ReportedBinaryDigest)
	}

	// The raw answer: JSON evidence, not cached.
	r := a.get("/v1/attestation?nonce=" + strings.Repeat("A1", 16))
	if r.Status != http.StatusOK || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /v1/attestation: %d, Cache-Control %q", r.Status, r.Header.Get("Cache-Control"))
	}
	ev, err := attest.ParseEvidence(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := hex.DecodeString(strings.Repeat("a1", 16))
	if _, err := attest.Verify(ev, attest.VerifyOptions{Nonce: nonce, BoundKey: a.hpkePub, Policy: policy, AKName: a.ak.Name()}); err != nil {
		t.Fatalf("Verify of the raw answer (upper-case hex nonce): %v", err)
	}

	// The published key is the HPKE key the root key derives.
	k, err := a.client().ApplianceKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.HPKEPublicKey, a.hpkePub) || k.Suite != enclave.SuiteMLKEM768X25519 {
		t.Errorf("appliance key %d bytes, suite %q", len(k.HPKEPublicKey), k.Suite)
	}
	// … and a value sealed to it opens inside the appliance only.
	if _, _, _, err := enclave.SealToRecipient(k.HPKEPublicKey, []byte("k"), []byte("info")); err != nil {
		t.Errorf("seal to the appliance key: %v", err)
	}
}

func TestEvidenceRefused(t *testing.T) {
	a := newAppliance(t, setup{})
	ctx := context.Background()
	policy := a.policyNow()
	goodNonce := attestapi.NewNonce()
	ev, _, err := a.client().Evidence(ctx, goodNonce, attestapi.BindHPKE)
	if err != nil {
		t.Fatal(err)
	}
	base := attest.VerifyOptions{Nonce: goodNonce, BoundKey: a.hpkePub, Policy: policy, AKName: a.ak.Name()}
	if _, err := attest.Verify(ev, base); err != nil {
		t.Fatalf("the unchanged evidence must verify: %v", err)
	}
	other, err := newHPKEKey()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		change func(o *attest.VerifyOptions)
		want   error
	}{
		{"a different nonce", func(o *attest.VerifyOptions) { o.Nonce = attestapi.NewNonce() }, attest.ErrNonceMismatch},
		{"another HPKE key expected", func(o *attest.VerifyOptions) { o.BoundKey = other }, attest.ErrBoundKeyMismatch},
		{"another AK pinned", func(o *attest.VerifyOptions) {
			n := bytes.Clone(o.AKName)
			n[len(n)-1] ^= 1
			o.AKName = n
		}, attest.ErrAKMismatch},
		{"a PCR value outside the policy", func(o *attest.VerifyOptions) {
			o.Policy = &attest.Policy{PCRs: map[int][][]byte{attestPCR: {bytes.Repeat([]byte{7}, 32)}}}
		}, attest.ErrPCRNotAllowed},
		{"a policy with no PCR", func(o *attest.VerifyOptions) { o.Policy = &attest.Policy{} }, attest.ErrNoPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.change(&o)
			_, err := attest.Verify(ev, o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}

	// A PCR extended after the policy was taken: fresh evidence is refused.
	t.Run("a changed PCR", func(t *testing.T) {
		a.extend(attestPCR, "something else booted")
		_, err := a.client().Check(ctx, attestapi.CheckOptions{Policy: policy, AKName: a.ak.Name()})
		if !errors.Is(err, attest.ErrPCRNotAllowed) {
			t.Fatalf("Check after extending PCR %d = %v, want %v", attestPCR, err, attest.ErrPCRNotAllowed)
		}
	})
}

// TestSwappedApplianceKey puts a machine in the middle that relays genuine
// evidence but publishes its own HPKE key: the client refuses to trust it.
func TestSwappedApplianceKey(t *testing.T) {
	a := newAppliance(t, setup{})
	policy := a.policyNow()
	evil, err := newHPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(a.url)
	relay := httputil.NewSingleHostReverseProxy(target)
	mitm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/appliance-key" {
			_ = json.NewEncoder(w).Encode(attestapi.ApplianceKey{HPKEPublicKey: evil, Suite: attestapi.Suite(evil)})
			return
		}
		relay.ServeHTTP(w, r)
	}))
	defer mitm.Close()
	c := &attestapi.Client{BaseURL: mitm.URL}
	_, err = c.Check(context.Background(), attestapi.CheckOptions{Policy: policy, AKName: a.ak.Name()})
	if !errors.Is(err, attest.ErrBoundKeyMismatch) {
		t.Fatalf("Check through a key-swapping relay = %v, want %v", err, attest.ErrBoundKeyMismatch)
	}
}

func TestBindTLS(t *testing.T) {
	a := newAppliance(t, setup{tls: true})
	policy := a.policyNow()
	ctx := context.Background()
	res, err := a.client().Check(ctx, attestapi.CheckOptions{Policy: policy, AKName: a.ak.Name(), Bind: attestapi.BindTLS})
	if err != nil {
		t.Fatalf("Check bind=tls: %v", err)
	}
	if !bytes.Equal(res.Facts.BoundKey, a.tlsSPKI) {
		t.Error("bind=tls did not bind the served certificate's key")
	}

	// A TLS-terminating relay with its own certificate: the quote binds the
	// appliance's key, not the relay's, so the client refuses.
	target, _ := url.Parse(a.url)
	relay := httputil.NewSingleHostReverseProxy(target)
	relay.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.tlsCA}}
	mitm := httptest.NewUnstartedServer(relay)
	mitm.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}} // not httptest's shared certificate
	mitm.StartTLS()
	defer mitm.Close()
	if bytes.Equal(mitm.Certificate().RawSubjectPublicKeyInfo, a.tlsSPKI) {
		t.Fatal("the relay must have its own key")
	}
	c := &attestapi.Client{BaseURL: mitm.URL, HTTP: mitm.Client()}
	_, err = c.Check(ctx, attestapi.CheckOptions{Policy: policy, AKName: a.ak.Name(), Bind: attestapi.BindTLS})
	if !errors.Is(err, attest.ErrBoundKeyMismatch) {
		t.Fatalf("Check bind=tls through a TLS-terminating relay = %v, want %v", err, attest.ErrBoundKeyMismatch)
	}
}

// selfSigned makes a TLS certificate for 127.0.0.1 with a fresh key.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestBadRequests(t *testing.T) {
	a := newAppliance(t, setup{change: func(o *attestapi.Options) { o.Rate, o.Burst = 0.0001, 1 }})
	for _, tc := range []struct {
		name, query, code string
	}{
		{"no nonce", "", "bad_nonce"},
		{"15 bytes", "nonce=" + strings.Repeat("00", 15), "bad_nonce"},
		{"65 bytes", "nonce=" + strings.Repeat("00", 65), "bad_nonce"},
		{"odd length", "nonce=" + strings.Repeat("0", 33), "bad_nonce"},
		{"not hex", "nonce=" + strings.Repeat("zz", 16), "bad_nonce"},
		{"base64", "nonce=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D", "bad_nonce"},
		{"unknown bind", "nonce=" + strings.Repeat("00", 16) + "&bind=rsa", "bad_bind"},
		{"bind=tls without own TLS", "nonce=" + strings.Repeat("00", 16) + "&bind=tls", "bind_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.get("/v1/attestation?" + tc.query)
			if r.Status != http.StatusBadRequest || r.Code() != tc.code {
				t.Fatalf("%d %s, want 400 %s", r.Status, r.Body, tc.code)
			}
		})
	}
	// None of them took the single token of the bucket.
	if r := a.get("/v1/attestation?nonce=" + strings.Repeat("00", 16)); r.Status != http.StatusOK {
		t.Fatalf("a good request after bad ones: %d %s", r.Status, r.Body)
	}
}

func TestRateLimit(t *testing.T) {
	const burst = 3
	a := newAppliance(t, setup{change: func(o *attestapi.Options) { o.Rate, o.Burst = 0.001, burst }})
	q := "/v1/attestation?nonce=" + strings.Repeat("42", 32)
	for i := 0; i < burst; i++ {
		if r := a.get(q); r.Status != http.StatusOK {
			t.Fatalf("request %d within the burst: %d %s", i+1, r.Status, r.Body)
		}
	}
	before := a.tpm.Count()
	r := a.get(q)
	if r.Status != http.StatusTooManyRequests || r.Code() != "rate_limited" {
		t.Fatalf("request past the burst: %d %s, want 429 rate_limited", r.Status, r.Body)
	}
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	if a.tpm.Count() != before {
		t.Error("a refused quote still sent TPM commands")
	}
	// The client reports it as such.
	_, _, err := a.client().Evidence(context.Background(), attestapi.NewNonce(), attestapi.BindHPKE)
	var ae *attestapi.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.RetryAfter == "" {
		t.Fatalf("client error %v, want a 429 APIError with Retry-After", err)
	}
	// The appliance key costs no TPM command and is not limited.
	if r := a.get("/v1/appliance-key"); r.Status != http.StatusOK {
		t.Fatalf("appliance key while quotes are limited: %d", r.Status)
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("no attestation key", func(t *testing.T) {
		a := newAppliance(t, setup{noAK: true})
		r := a.get("/v1/attestation?nonce=" + strings.Repeat("00", 16))
		if r.Status != http.StatusServiceUnavailable || r.Code() != "attestation_unavailable" {
			t.Fatalf("%d %s, want 503 attestation_unavailable", r.Status, r.Body)
		}
		if strings.Contains(string(r.Body), "test: no attestation key") {
			t.Error("the internal reason reached the client")
		}
	})
	t.Run("sealed", func(t *testing.T) {
		a := newAppliance(t, setup{sealed: true})
		for _, p := range []string{"/v1/attestation?nonce=" + strings.Repeat("00", 16), "/v1/appliance-key"} {
			if r := a.get(p); r.Status != http.StatusServiceUnavailable || r.Code() != "sealed" {
				t.Fatalf("%s: %d %s, want 503 sealed", p, r.Status, r.Body)
			}
		}
	})
}
