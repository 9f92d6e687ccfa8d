package custodian

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
)

// openSwtpm starts a separate TPM (a swtpm process) for the test.
func openSwtpm(t *testing.T) transport.TPMCloser {
	t.Helper()
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tpm, err := tpmdev.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatalf("tpmdev.Open(%s): %v", sw.Spec, err)
	}
	t.Cleanup(func() { _ = tpm.Close() })
	return tpm
}

// enrollTPMKey does what an operator does once per node: make the client
// key in the TPM, have the AK certify it, check the evidence as the CA
// would (AK pinned, PCR policy), and issue the certificate for the
// verified key. It returns the loaded key, its blob and the certificate
// file.
func enrollTPMKey(t *testing.T, tpm transport.TPM, ca *testCA, dir, cn string) (*attest.ClientKey, *attest.ClientKeyBlob, string) {
	t.Helper()
	ctx := context.Background()
	akBlob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.LoadAK(ctx, tpm, akBlob)
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	blob, err := attest.CreateClientKey(ctx, tpm, []int{7}) // bound to the boot state, as tpm.pcrs [7] makes it
	if err != nil {
		t.Fatal(err)
	}
	key, err := attest.LoadClientKey(ctx, tpm, blob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = key.Close() })
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	ev, err := attest.MakeClientKeyEvidence(ctx, tpm, ak, key, attest.ClientKeyEvidenceOptions{CommonName: cn, Nonce: nonce, PCRs: []int{7}})
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := attest.ReadPCRs(ctx, tpm, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := attest.PolicyFromPCRs(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	akName, _ := akBlob.Name()
	facts, err := attest.VerifyClientKey(ev, attest.VerifyOptions{Nonce: nonce, Policy: policy, AKName: akName, KeyPolicy: policy})
	if err != nil {
		t.Fatalf("the CA's check of the client key: %v", err)
	}
	if facts.KeyBinding != attest.KeyBoundToPolicy {
		t.Fatalf("client key binding %q, want %q", facts.KeyBinding, attest.KeyBoundToPolicy)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, facts.CSR.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, cn+".pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, blob, certFile
}

// TestTPMCertAuth logs in to a real Vault with a client certificate whose
// key is in a TPM, and tries the same configuration from another TPM.
func TestTPMCertAuth(t *testing.T) {
	v := vaultdev.StartWith(t, vaultdev.Options{TLS: true})
	v.WritePolicy("custodian", transitPolicy)
	ca := newTestCA(t, "keywarden appliance CA")
	v.EnableCertAuth("keywarden", ca.pem, "custodian")
	dir := t.TempDir()
	ctx := testCtx(t)

	tpmA, tpmB := openSwtpm(t), openSwtpm(t)
	keyA, blobA, certFile := enrollTPMKey(t, tpmA, ca, dir, "node-a")
	opts := func(key *attest.ClientKey) Options {
		return Options{Addr: v.Addr(), CACert: v.CACert(), Auth: AuthTPMCert, Logger: quiet,
			TPMCert: TPMCertAuth{CertFile: certFile, Key: key, Role: "keywarden"}}
	}

	c, err := New(ctx, opts(keyA))
	if err != nil {
		t.Fatalf("New with tpm-cert auth: %v", err)
	}
	defer c.Close()
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	got, err := c.Unwrap(ctx, "user:a", ct)
	if err != nil || string(got.Reveal()) != "share" {
		t.Fatalf("Unwrap: %v", err)
	}
	if h := c.Health(ctx); !h.OK() {
		t.Fatalf("health: %+v", h)
	}

	t.Run("a revoked token is replaced by a new TPM login", func(t *testing.T) {
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
	})

	t.Run("the store's blob on another TPM", func(t *testing.T) {
		if k, err := attest.LoadClientKey(ctx, tpmB, blobA); err == nil {
			_ = k.Close()
			t.Fatal("TPM A's client key loaded in TPM B")
		}
	})

	// The other TPM has a key of its own; the configured certificate is
	// not for it.
	blobB, err := attest.CreateClientKey(ctx, tpmB, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := attest.LoadClientKey(ctx, tpmB, blobB)
	if err != nil {
		t.Fatal(err)
	}
	defer keyB.Close()

	t.Run("same configuration, another TPM's key", func(t *testing.T) {
		_, err := New(ctx, opts(keyB))
		wantCode(t, err, ErrClientKeyMismatch.Code)
	})

	t.Run("attacker skips the check: A's certificate with B's key", func(t *testing.T) {
		leaf, err := os.ReadFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(leaf)
		cfg := api.DefaultConfig()
		cfg.Address = v.Addr()
		cfg.MaxRetries = 0
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CACert()}); err != nil {
			t.Fatal(err)
		}
		cfg.HttpClient.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{{
			Certificate: [][]byte{b.Bytes}, PrivateKey: keyB,
			SupportedSignatureAlgorithms: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		}}
		vc, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		vc.ClearToken()
		sec, err := vc.Logical().WriteWithContext(ctx, "auth/cert/login", map[string]any{"name": "keywarden"})
		if err == nil {
			t.Fatalf("logged in with another TPM's key: %+v", sec.Auth)
		}
	})

	t.Run("no Vault secret with tpm-cert", func(t *testing.T) {
		o := opts(keyA)
		o.Token = secret.NewString(v.RootToken())
		err := o.Validate()
		if err == nil {
			t.Fatal("tpm-cert with a token validated")
		}
		noSecretIn(t, err, v.RootToken())
		o = opts(keyA)
		o.TPMCert.Key = nil
		if _, err := New(ctx, o); err == nil {
			t.Fatal("tpm-cert without a key started")
		}
	})
}
