package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
	"github.com/keywarden/keywarden/store"
)

// vaultTestCA signs the appliance's client certificate, as the operator's
// CA would after `keywarden vault verify-csr`.
type vaultTestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newVaultTestCA(t *testing.T) *vaultTestCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "appliance CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &vaultTestCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *vaultTestCA) sign(t *testing.T, csrPEM []byte, file string) {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("verify-csr wrote %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func openSwtpmCounting(t *testing.T) *tpmdev.Counting {
	t.Helper()
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	raw, err := tpmdev.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatalf("tpmdev.Open: %v", err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return tpmdev.NewCounting(raw)
}

// TestVaultTPMCert runs vault.auth tpm-cert end to end: `vault csr` on
// the appliance's TPM, `vault verify-csr` at the CA, the certificate
// installed by configuration, custodian shares through a real Vault that
// trusts only the CA — and the same store and configuration on another
// TPM, which cannot authenticate.
func TestVaultTPMCert(t *testing.T) {
	ctx := context.Background()
	v := vaultdev.StartWith(t, vaultdev.Options{TLS: true})
	v.WritePolicy("custodian", custodianTestPolicy)
	ca := newVaultTestCA(t)
	v.EnableCertAuth("keywarden", ca.pem, "custodian")
	dir := t.TempDir()
	tpmA, tpmB := openSwtpmCounting(t), openSwtpmCounting(t)
	db, err := store.Open(filepath.Join(dir, "k.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// The appliance (init made its attestation key): the request and its
	// evidence, over the CA's nonce.
	akBlob, err := newAKBlob(ctx, tpmA, db)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	ev, made, err := makeVaultCSR(ctx, tpmA, db, store.MetaVaultClientKey, "node-a", nonce, []int{7}, []int{7}, false)
	if err != nil || !made {
		t.Fatalf("vault csr: made %v, %v", made, err)
	}
	evFile := filepath.Join(dir, "evidence.json")
	evJSON, _ := json.Marshal(ev)
	if err := os.WriteFile(evFile, evJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, again, err := makeVaultCSR(ctx, tpmA, db, store.MetaVaultClientKey, "node-a", nonce, []int{7}, []int{7}, false); err != nil || again {
		t.Fatalf("a second vault csr: made %v, %v (the key must be kept)", again, err)
	}

	// The CA: the policy of the appliance's PCRs and its pinned AK name.
	pcrs, err := attest.ReadPCRs(ctx, tpmA, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	policy, _ := attest.PolicyFromPCRs(pcrs)
	pj, _ := json.Marshal(policy)
	policyFile := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policyFile, pj, 0o600); err != nil {
		t.Fatal(err)
	}
	akName, _ := akBlob.Name()
	var csrPEM, stderr bytes.Buffer
	if err := vaultVerifyCSR([]string{"-policy", policyFile, "-key-policy", policyFile, "-ak-name", hex.EncodeToString(akName), "-nonce", hex.EncodeToString(nonce), evFile}, &csrPEM, &stderr); err != nil {
		t.Fatalf("vault verify-csr: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "key binding: pcr_policy") {
		t.Fatalf("vault verify-csr does not report the key bound: %s", stderr.String())
	}

	// A key from before the binding (made without PCRs, as every client
	// key was): vault csr refuses to reuse it, -new-key replaces it with a
	// bound one, and the CA given the key policy refuses its evidence.
	t.Run("a client key made before the binding", func(t *testing.T) {
		mk := store.MetaVaultClientKey.ForNode("old")
		old, err := attest.CreateClientKey(ctx, tpmA, nil)
		if err != nil {
			t.Fatal(err)
		}
		ob, _ := old.MarshalBinary()
		if err := db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(mk, ob) }); err != nil {
			t.Fatal(err)
		}
		if _, _, err := makeVaultCSR(ctx, tpmA, db, mk, "node-a", nonce, []int{7}, []int{7}, false); err == nil || !strings.Contains(err.Error(), "-new-key") {
			t.Fatalf("vault csr with an unbound stored key: %v, want a refusal naming -new-key", err)
		}
		oldEv, made, err := makeVaultCSR(ctx, tpmA, db, mk, "node-a", nonce, []int{7}, nil, false) // as the evidence of an old release
		if err != nil || made {
			t.Fatalf("vault csr for the unbound key: %v, made %v", err, made)
		}
		oldFile := filepath.Join(t.TempDir(), "old.json")
		oj, _ := json.Marshal(oldEv)
		if err := os.WriteFile(oldFile, oj, 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		err = vaultVerifyCSR([]string{"-policy", policyFile, "-key-policy", policyFile, "-ak-name", hex.EncodeToString(akName), "-nonce", hex.EncodeToString(nonce), oldFile}, &out, &errOut)
		if err == nil || !strings.Contains(out.String(), "REFUSED: key_not_bound") || strings.Contains(out.String(), "CERTIFICATE REQUEST") {
			t.Fatalf("verify-csr of an unbound key with -key-policy: %v\n%s", err, out.String())
		}
		out.Reset()
		errOut.Reset()
		if err := vaultVerifyCSR([]string{"-policy", policyFile, "-ak-name", hex.EncodeToString(akName), "-nonce", hex.EncodeToString(nonce), oldFile}, &out, &errOut); err != nil || !strings.Contains(errOut.String(), "not_bound") {
			t.Fatalf("verify-csr of an unbound key without -key-policy must accept and warn: %v\n%s", err, errOut.String())
		}
		if _, made, err := makeVaultCSR(ctx, tpmA, db, mk, "node-a", nonce, []int{7}, []int{7}, true); err != nil || !made {
			t.Fatalf("vault csr -new-key: made %v, %v", made, err)
		}
		nb, err := readVaultClientKey(ctx, db, mk)
		if err != nil || !nb.BoundTo([]int{7}) {
			t.Fatalf("the new key is not bound to PCR 7: %v %v", err, nb)
		}
	})
	certFile := filepath.Join(dir, "vault-client.pem")
	ca.sign(t, csrPEM.Bytes(), certFile)

	t.Run("the CA refuses evidence for another AK", func(t *testing.T) {
		other := append([]byte{0x00, 0x0b}, make([]byte, 32)...)
		var out, errOut bytes.Buffer
		err := vaultVerifyCSR([]string{"-policy", policyFile, "-ak-name", hex.EncodeToString(other), "-nonce", hex.EncodeToString(nonce), evFile}, &out, &errOut)
		if err == nil || !strings.Contains(out.String(), "REFUSED: ak_mismatch") || strings.Contains(out.String(), "CERTIFICATE REQUEST") {
			t.Fatalf("verify-csr with another AK pinned: %v\n%s", err, out.String())
		}
	})

	// The configuration: no Vault secret in it.
	vcfg := config.Defaults().Vault
	vcfg.Addr, vcfg.CACert, vcfg.Auth, vcfg.TLSCertFile = v.Addr(), v.CACert(), "tpm-cert", certFile
	full := config.Defaults()
	full.Vault = vcfg
	if err := checkVault(full); err != nil {
		t.Fatalf("config check of the tpm-cert vault section: %v", err)
	}
	if dump := full.Dump(); strings.Contains(dump, v.RootToken()) || strings.Contains(dump, "PRIVATE KEY") {
		t.Fatal("the configuration dump holds a Vault secret")
	}

	share := base64.StdEncoding.EncodeToString([]byte("share wrapped through the TPM's login"))
	t.Run("this TPM logs in", func(t *testing.T) {
		w, err := newWiredTPM(t, vcfg, db, tpmA)
		if err != nil {
			t.Fatal(err)
		}
		if code, _, b := w.do("PUT", "/v1/admin/users/alice/custodian-share", map[string]string{"share": share}); code != 201 {
			t.Fatalf("PUT: %d %s", code, b)
		}
		code, _, b := w.do("GET", "/v1/admin/users/alice/custodian-share", nil)
		if code != 200 || !strings.Contains(string(b), share) {
			t.Fatalf("GET: %d %s", code, b)
		}
		if code, vault := w.readyz(); code != 200 || vault != "ok" {
			t.Fatalf("readyz %d, vault %q", code, vault)
		}
	})

	t.Run("same store and configuration on another TPM", func(t *testing.T) {
		w, err := newWiredTPM(t, vcfg, db, tpmB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := custodianService(&w.opts); err == nil {
			t.Fatal("the custodian service started on another TPM")
		}
		code, _, b := w.do("GET", "/v1/admin/users/alice/custodian-share", nil)
		if code != 502 || !strings.Contains(string(b), "vault_client_key_unavailable") || strings.Contains(string(b), share) {
			t.Fatalf("GET on another TPM: %d %s", code, b)
		}
		if code, vault := w.readyz(); code != 200 || vault != "degraded" {
			t.Fatalf("readyz %d, vault %q", code, vault)
		}
		// And the other TPM cannot make evidence for the stored key.
		if _, _, err := makeVaultCSR(ctx, tpmB, db, store.MetaVaultClientKey, "node-a", nonce, []int{7}, []int{7}, false); err == nil {
			t.Fatal("vault csr on another TPM used the stored key")
		}
	})

	t.Run("no key made yet", func(t *testing.T) {
		empty, err := store.Open(filepath.Join(dir, "empty.db"), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer empty.Close()
		w, err := newWiredTPM(t, vcfg, empty, tpmA)
		if err != nil {
			t.Fatal(err)
		}
		code, _, b := w.do("GET", "/v1/admin/users/alice/custodian-share", nil)
		if code != 502 || !strings.Contains(string(b), "keywarden vault csr") {
			t.Fatalf("GET without a client key: %d %s", code, b)
		}
	})
}
