package custodian

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
)

// testCA is a CA that issues client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a client certificate and key to dir and returns the files.
func (ca *testCA) issue(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestCertAuth(t *testing.T) {
	v := vaultdev.StartWith(t, vaultdev.Options{TLS: true})
	v.WritePolicy("custodian", transitPolicy)
	ca := newTestCA(t, "keywarden clients")
	v.EnableCertAuth("keywarden", ca.pem, "custodian")
	dir := t.TempDir()
	certFile, keyFile := ca.issue(t, dir, "keywarden-node")
	ctx := testCtx(t)

	c, err := New(ctx, Options{Addr: v.Addr(), CACert: v.CACert(), Auth: AuthCert, Logger: quiet,
		Cert: CertAuth{CertFile: certFile, KeyFile: keyFile, Role: "keywarden"}})
	if err != nil {
		t.Fatalf("New with cert auth: %v", err)
	}
	defer c.Close()
	ct, err := c.Wrap(ctx, "user:a", []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Unwrap(ctx, "user:a", ct)
	if err != nil || string(got.Reveal()) != "share" {
		t.Fatalf("Unwrap: %v", err)
	}

	t.Run("certificate from another CA", func(t *testing.T) {
		other := newTestCA(t, "someone else")
		cf, kf := other.issue(t, dir, "intruder")
		_, err := New(ctx, Options{Addr: v.Addr(), CACert: v.CACert(), Auth: AuthCert, Logger: quiet,
			Cert: CertAuth{CertFile: cf, KeyFile: kf}})
		if err == nil {
			t.Fatal("a certificate from an untrusted CA logged in")
		}
	})

	t.Run("Vault's certificate not trusted", func(t *testing.T) {
		_, err := New(ctx, Options{Addr: v.Addr(), Token: secret.NewString(v.RootToken()), Logger: quiet})
		e := wantCode(t, err, ErrVaultError.Code)
		noSecretIn(t, e, v.RootToken())
	})

	t.Run("token over TLS", func(t *testing.T) {
		c, err := New(ctx, Options{Addr: v.Addr(), CACert: v.CACert(), Token: secret.NewString(v.RootToken()), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Unwrap(ctx, "user:a", ct); err != nil {
			t.Fatal(err)
		}
	})
}
