package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/store"
)

func leafSerial(t *testing.T, c *tls.Certificate) *big.Int {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.SerialNumber
}

// TestTLSReloadOnSIGHUP: a new certificate on disk is served after SIGHUP
// without a restart; a broken file keeps the old one.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := writeAttestTLS(t, dir)
	r, err := newCertReloader(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	served := func() *big.Int {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	first := served()

	// A new certificate with another serial replaces the files.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "rotated"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for leafSerial(t, r.Current()).Int64() != 99 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := served(); got.Int64() != 99 || got.Cmp(first) == 0 {
		t.Fatalf("after SIGHUP the served serial is %v, want 99", got)
	}

	// A broken file is refused and the current certificate stays.
	os.WriteFile(certFile, []byte("not a certificate"), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	if got := served(); got.Int64() != 99 {
		t.Fatalf("a broken certificate file replaced the served one (serial %v)", got)
	}
}

// TestAdminClientCertificates: with listen.admin_client_ca the admin
// listener refuses a client without a certificate from that CA.
func TestAdminClientCertificates(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := writeAttestTLS(t, dir)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "admin CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	caFile := filepath.Join(dir, "admin-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	clientCert := func(signer *x509.Certificate, signerKey *ecdsa.PrivateKey) tls.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "backend"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		if signer == nil {
			signer, signerKey = tmpl, k
		}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, signer, k.Public(), signerKey)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	r, err := newCertReloader(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg := &tls.Config{GetCertificate: r.GetCertificate}
	if err := requireClientCerts(cfg, caFile); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(tls.NewListener(ln, cfg))
	defer srv.Close()
	get := func(certs ...tls.Certificate) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: certs}}}
		resp, err := c.Get("https://" + ln.Addr().String())
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(clientCert(caCert, caKey)); err != nil {
		t.Fatalf("client certificate from the CA refused: %v", err)
	}
	if err := get(); err == nil {
		t.Fatal("no client certificate accepted")
	}
	if err := get(clientCert(nil, nil)); err == nil {
		t.Fatal("self-signed client certificate accepted")
	}
	if err := requireClientCerts(&tls.Config{}, certFile+".missing"); err == nil {
		t.Fatal("missing CA file accepted")
	}
}

// startDev runs `keywarden dev` in this process on a free loopback port
// with its data in dir and the simulator seeded with seed, waits until it
// is ready, and returns its URL and a stop function that reports serve's
// error.
func startDev(t *testing.T, dir, seed, adminKey string) (url string, stop func() error) {
	t.Helper()
	addr := proc.FreeAddr(t)
	t.Setenv("KEYWARDEN_DATA_DIR", filepath.Join(dir, "data"))
	t.Setenv("KEYWARDEN_LISTEN_ADDR", addr)
	t.Setenv("KEYWARDEN_LISTEN_ADMIN_ADDR", addr)
	t.Setenv("KEYWARDEN_ADMIN_KEY", adminKey)
	t.Setenv("KEYWARDEN_TPM_SIMULATOR_SEED", seed)
	t.Setenv("KEYWARDEN_LOG_LEVEL", "error")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmdDev(ctx, nil) }()
	stop = func() error { cancel(); return <-done }
	url = "http://" + addr
	for i := 0; ; i++ {
		resp, err := http.Get(url + "/readyz")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			return url, stop
		}
		if i > 200 {
			stop()
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBackupFromRunningServer: `keywarden backup` copies the live store
// through the admin API while `keywarden dev` holds its lock; the copy
// opens and holds the sealed root key; a wrong admin key gets nothing.
func TestBackupFromRunningServer(t *testing.T) {
	dir := t.TempDir()
	url, stop := startDev(t, dir, "777", "backup-admin-key-0123456789")
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	ctx := context.Background()
	out := filepath.Join(dir, "backup.db")
	if err := cmdBackup(ctx, []string{"-out", out, "-url", url}); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(out, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enclave.LoadSealedRoot(ctx, db); err != nil {
		t.Fatalf("backup has no sealed root key: %v", err)
	}
	db.Close()
	// The live server keeps serving.
	if resp, err := http.Get(url + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after backup: %v", err)
	}
	t.Setenv("KEYWARDEN_ADMIN_KEY", "wrong-admin-key-0123456789")
	bad := filepath.Join(dir, "bad.db")
	err = cmdBackup(ctx, []string{"-out", bad, "-url", url})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("401")) {
		t.Fatalf("wrong admin key: %v", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("a refused backup left a file")
	}

}

// TestBackupVerify: `keywarden backup -verify` opens every key of a backup
// with this TPM; another TPM (seed) fails it.
func TestBackupVerify(t *testing.T) {
	dir := t.TempDir()
	url, stop := startDev(t, dir, "778", "backup-admin-key-0123456789")
	out := filepath.Join(dir, "backup.db")
	err := cmdBackup(context.Background(), []string{"-out", out, "-url", url})
	if serr := stop(); serr != nil {
		t.Fatalf("serve: %v", serr)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The simulator is one per process: verify after the server stopped.
	if err := cmdBackup(context.Background(), []string{"-verify", out, "-dev"}); err != nil {
		t.Fatalf("verify on the same TPM: %v", err)
	}
	t.Setenv("KEYWARDEN_TPM_SIMULATOR_SEED", "779")
	if err := cmdBackup(context.Background(), []string{"-verify", out, "-dev"}); err == nil {
		t.Fatal("a backup verified on another TPM")
	}
}
