//go:build cgo

package main

// The attest subcommands against a running appliance: the real start path
// (openAppliance in dev mode on the simulator, wireAttestation, server.New)
// behind an httptest server. The simulator is one per process: no
// t.Parallel.

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
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

const attestTestSeed = 4242

// attestRunning is an appliance serving the attestation routes.
type attestRunning struct {
	a     *appliance
	url   string
	close func()
}

// startAttestAppliance starts the appliance in dir the way `keywarden dev`
// does, with the attestation routes only. tlsFiles, when set, are the
// certificate and key the appliance serves (and may bind).
func startAttestAppliance(t *testing.T, dir string, tlsFiles *[2]string) *attestRunning {
	t.Helper()
	ctx := context.Background()
	cfg := config.DevDefaults()
	cfg.Data.Dir = dir
	cfg.Data.DB = filepath.Join(dir, "keywarden.db")
	cfg.Audit.Dir = filepath.Join(dir, "audit")
	cfg.TPM.SimulatorSeed = attestTestSeed
	cfg.Admin.Key = secret.NewString("test-admin-key-0123456789abcdef")
	if tlsFiles != nil {
		cfg.Listen.PlainHTTP = false
		cfg.Listen.TLSCert, cfg.Listen.TLSKey = tlsFiles[0], tlsFiles[1]
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := openAppliance(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	r := &attestRunning{a: a}
	opts := server.Options{Config: cfg, Logger: log, DB: a.db, Metrics: a.metrics, Audit: a.audit,
		Custody: enclave.NewCustody(a.db, a.root, enclave.CustodyOptions{}), Sessions: a.root.SessionTokens(nil)}
	if opts.BlockList, err = server.LoadBlockList(ctx, a.db); err != nil {
		a.Close()
		t.Fatal(err)
	}
	if err := wireKeys(ctx, a, &opts); err != nil {
		a.Close()
		t.Fatal(err)
	}
	if err := wireAttestation(ctx, a, &opts); err != nil {
		a.Close()
		t.Fatal(err)
	}
	srv, err := server.New(opts)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Public)
	if tlsFiles != nil {
		cert, err := tls.LoadX509KeyPair(tlsFiles[0], tlsFiles[1])
		if err != nil {
			t.Fatal(err)
		}
		hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		hs.StartTLS()
	} else {
		hs.Start()
	}
	r.url = hs.URL
	r.close = func() { once.Do(func() { hs.Close(); a.Close() }) }
	t.Cleanup(r.close)
	return r
}

func (r *attestRunning) extend(t *testing.T, pcr int, data string) {
	t.Helper()
	d := sha256.Sum256([]byte(data))
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}.Execute(r.a.tpm)
	if err != nil {
		t.Fatalf("extend PCR %d: %v", pcr, err)
	}
}

// storedAKName is the Name of the key in the store: what `keywarden init`
// printed, the trusted value to pin.
func storedAKName(t *testing.T, db *store.DB) string {
	t.Helper()
	blob, err := readAKBlob(context.Background(), db)
	if err != nil || blob == nil {
		t.Fatalf("stored attestation key: %v", err)
	}
	n, err := blob.Name()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(n)
}

type cliOut struct{ stdout, stderr bytes.Buffer }

func runAttestCmd(t *testing.T, fn func(context.Context, []string, io.Writer, io.Writer) error, args ...string) (*cliOut, error) {
	t.Helper()
	var o cliOut
	err := fn(context.Background(), args, &o.stdout, &o.stderr)
	return &o, err
}

func TestAttestVerifyAndPolicy(t *testing.T) {
	dir := t.TempDir()
	r := startAttestAppliance(t, dir, nil)
	name := storedAKName(t, r.a.db)
	r.extend(t, 16, "the measured image")

	// attest policy → a file that attest verify accepts.
	out, err := runAttestCmd(t, attestPolicy, "--url", r.url, "--ak-name", name)
	if err != nil {
		t.Fatalf("attest policy: %v\n%s", err, out.stderr.String())
	}
	p, err := attest.ParsePolicy(out.stdout.Bytes())
	if err != nil {
		t.Fatalf("attest policy printed something ParsePolicy refuses: %v\n%s", err, out.stdout.String())
	}
	if got := p.Indices(); len(got) != 1 || got[0] != 16 {
		t.Fatalf("policy PCRs %v, want [16] (tpm.attest_pcrs)", got)
	}
	if !strings.Contains(out.stdout.String(), name) {
		t.Error("the policy header does not name the attestation key")
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, out.stdout.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err = runAttestCmd(t, attestVerify, "--url", r.url, "--policy", policyFile, "--ak-name", name)
	if err != nil {
		t.Fatalf("attest verify: %v\n%s%s", err, out.stdout.String(), out.stderr.String())
	}
	if s := out.stdout.String(); !strings.Contains(s, "VERIFIED") || !strings.Contains(s, name+"  pinned") || !strings.Contains(s, enclave.SuiteMLKEM768X25519) {
		t.Errorf("attest verify printed:\n%s", s)
	}
	if strings.Contains(out.stderr.String(), "WARNING") {
		t.Errorf("a pinned verify warned:\n%s", out.stderr.String())
	}

	// Unpinned: passes, but says loudly what that means.
	out, err = runAttestCmd(t, attestVerify, "--url", r.url, "--policy", policyFile)
	if err != nil || !strings.Contains(out.stderr.String(), "NOT pinned") || !strings.Contains(out.stdout.String(), "NOT PINNED") {
		t.Errorf("unpinned verify: %v\nstdout:\n%s\nstderr:\n%s", err, out.stdout.String(), out.stderr.String())
	}

	// ak-name reports the stored key's Name, with its trust-on-first-use warning.
	out, err = runAttestCmd(t, attestAKName, "--url", r.url)
	if err != nil || strings.TrimSpace(out.stdout.String()) != name || !strings.Contains(out.stderr.String(), "trust on") {
		t.Errorf("attest ak-name: %v, stdout %q, stderr %q", err, out.stdout.String(), out.stderr.String())
	}

	otherName := name[:len(name)-2] + "00"
	if otherName == name {
		otherName = name[:len(name)-2] + "01"
	}
	emptyPolicy := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(emptyPolicy, []byte("bank: sha256\npcrs: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want error
	}{
		{"another attestation key pinned", []string{"--policy", policyFile, "--ak-name", otherName}, attest.ErrAKMismatch},
		{"a policy with no PCR", []string{"--policy", emptyPolicy, "--ak-name", name}, attest.ErrNoPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runAttestCmd(t, attestVerify, append([]string{"--url", r.url}, tc.args...)...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("attest verify = %v, want %v\n%s", err, tc.want, out.stdout.String())
			}
		})
	}

	t.Run("bind=tls over plain HTTP", func(t *testing.T) {
		_, err := runAttestCmd(t, attestVerify, "--url", r.url, "--policy", policyFile, "--ak-name", name, "--bind", "tls")
		var ve *attest.VerifyError
		if err == nil || errors.As(err, &ve) {
			t.Fatalf("attest verify --bind tls over http = %v, want a protocol error", err)
		}
	})

	// A PCR extended after the policy was taken: refused, reason named.
	t.Run("a changed PCR", func(t *testing.T) {
		r.extend(t, 16, "something else")
		out, err := runAttestCmd(t, attestVerify, "--url", r.url, "--policy", policyFile, "--ak-name", name)
		if !errors.Is(err, attest.ErrPCRNotAllowed) || !strings.Contains(out.stdout.String(), "REFUSED: pcr_not_allowed") {
			t.Fatalf("attest verify after extend = %v\n%s", err, out.stdout.String())
		}
		if !strings.Contains(err.Error(), "pcr_not_allowed") {
			t.Errorf("the error does not name the reason: %v", err)
		}
	})
}

// TestAttestationKeyLifecycle: made at init and kept, loaded at start with
// the same Name after a restart, made anew by recover.
func TestAttestationKeyLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	// init: made once, then kept.
	func() {
		sim, err := tpmsim.Open(attestTestSeed)
		if err != nil {
			t.Fatal(err)
		}
		defer sim.Close()
		db, err := store.Open(filepath.Join(dir, "keywarden.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		blob, made, err := ensureAK(ctx, sim, db)
		if err != nil || !made {
			t.Fatalf("first ensureAK: made %v, %v", made, err)
		}
		again, made, err := ensureAK(ctx, sim, db)
		if err != nil || made || !bytes.Equal(again.Public, blob.Public) {
			t.Fatalf("second ensureAK: made %v, %v (the key must be kept)", made, err)
		}
		var buf bytes.Buffer
		if err := printAKName(&buf, blob, true); err != nil {
			t.Fatal(err)
		}
		if n, _ := blob.Name(); !strings.Contains(buf.String(), hex.EncodeToString(n)) {
			t.Errorf("init output does not show the name: %q", buf.String())
		}
	}()

	// A start loads the stored key (dev mode makes the root key).
	r := startAttestAppliance(t, dir, nil)
	name := storedAKName(t, r.a.db)
	out, err := runAttestCmd(t, attestAKName, "--url", r.url)
	if err != nil || strings.TrimSpace(out.stdout.String()) != name {
		t.Fatalf("after start: %v, serving %q, stored %s", err, out.stdout.String(), name)
	}
	r.close()
	// … and the same one after a restart.
	r = startAttestAppliance(t, dir, nil)
	if got := storedAKName(t, r.a.db); got != name {
		t.Fatalf("restart changed the attestation key: %s → %s", name, got)
	}
	out, err = runAttestCmd(t, attestAKName, "--url", r.url)
	if err != nil || strings.TrimSpace(out.stdout.String()) != name {
		t.Fatalf("after restart: %v, serving %q, stored %s", err, out.stdout.String(), name)
	}
	r.close()

	// recover makes a new key on the new TPM.
	sim, err := tpmsim.Open(attestTestSeed + 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	db, err := store.Open(filepath.Join(dir, "keywarden.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old, _ := readAKBlob(ctx, db)
	if ak, err := attest.LoadAK(ctx, sim, old); err == nil {
		ak.Close()
		t.Fatal("another TPM loaded the old attestation key")
	}
	if err := recoverAttestationKey(ctx, initContext{tpm: sim, db: db}); err != nil {
		t.Fatal(err)
	}
	if got := storedAKName(t, db); got == name {
		t.Fatal("recover kept the old attestation key")
	}
	nb, _ := readAKBlob(ctx, db)
	ak, err := attest.LoadAK(ctx, sim, nb)
	if err != nil {
		t.Fatalf("the recovered key does not load in the new TPM: %v", err)
	}
	ak.Close()
}

// TestAttestVerifyBindTLS: the appliance terminates TLS itself; the quote
// binds the key of the certificate it serves, which the CLI compares with
// the connection's.
func TestAttestVerifyBindTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := writeAttestTLS(t, dir)
	r := startAttestAppliance(t, dir, &[2]string{certFile, keyFile})
	name := storedAKName(t, r.a.db)
	out, err := runAttestCmd(t, attestPolicy, "--url", r.url, "--ca", caFile)
	if err != nil {
		t.Fatalf("attest policy over TLS: %v", err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, out.stdout.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runAttestCmd(t, attestVerify, "--url", r.url, "--ca", caFile, "--policy", policyFile, "--ak-name", name, "--bind", "tls")
	if err != nil || !strings.Contains(out.stdout.String(), "TLS key of this connection") {
		t.Fatalf("attest verify --bind tls: %v\n%s", err, out.stdout.String())
	}
	// Without --ca the appliance's certificate is not trusted at all.
	if _, err := runAttestCmd(t, attestVerify, "--url", r.url, "--policy", policyFile, "--ak-name", name, "--bind", "tls"); err == nil {
		t.Fatal("an untrusted TLS certificate was accepted")
	}
}

// writeAttestTLS writes a self-signed certificate for 127.0.0.1 and its
// key; the certificate is its own CA.
func writeAttestTLS(t *testing.T, dir string) (certFile, keyFile, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "keywarden test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certFile
}

func TestParseAKName(t *testing.T) {
	good := "000b" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{good, true},
		{"0x" + good, true},
		{strings.ToUpper(good), true},
		{"00:0b:" + strings.Repeat("ab:", 31) + "ab", true},
		{good[:66], false},
		{good + "00", false},
		{"0004" + strings.Repeat("ab", 32), false}, // SHA-1 name algorithm
		{strings.Repeat("zz", 34), false},
		{"", false},
	} {
		_, err := parseAKName(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseAKName(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}

func TestAttestUsage(t *testing.T) {
	var ue usageError
	for _, args := range [][]string{nil, {"frobnicate"}} {
		if err := cmdAttest(context.Background(), args); !errors.As(err, &ue) {
			t.Errorf("attest %v = %v, want a usage error", args, err)
		}
	}
	if _, err := runAttestCmd(t, attestVerify, "--url", "http://127.0.0.1:1"); !errors.As(err, &ue) {
		t.Errorf("verify without --policy = %v, want a usage error", err)
	}
	if _, err := runAttestCmd(t, attestVerify, "--policy", "x", "--bind", "rsa"); !errors.As(err, &ue) {
		t.Errorf("verify --bind rsa = %v, want a usage error", err)
	}
	if _, err := runAttestCmd(t, attestVerify, "--policy", "x", "--ak-name", "00"); !errors.As(err, &ue) {
		t.Errorf("verify --ak-name 00 = %v, want a usage error", err)
	}
}
