//go:build cgo

package attest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/secret"
)

// testCA is a TPM maker's certificate hierarchy: root → intermediate → EK
// certificates.
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	ca := &testCA{}
	ca.rootKey = genKey(t)
	ca.root = issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " EK Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, nil, ca.rootKey.Public(), ca.rootKey)
	ca.interKey = genKey(t)
	ca.inter = issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " EK Intermediate"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, ca.root, ca.interKey.Public(), ca.rootKey)
	return ca
}

// ekCert issues an EK certificate the way TPM makers do: empty subject,
// the TCG EK purpose, key encipherment.
func (ca *testCA) ekCert(t *testing.T, ek crypto.PublicKey) *x509.Certificate {
	t.Helper()
	return issue(t, &x509.Certificate{
		KeyUsage:           x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}},
		Subject:            pkix.Name{CommonName: "EK"},
	}, ca.inter, ek, ca.interKey)
}

func (ca *testCA) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tpmEK returns the public key of the TPM's standard ECC EK.
func tpmEK(t *testing.T, tpm transport.TPM) crypto.PublicKey {
	return tpmEKOf(t, tpm, tpm2.ECCEKTemplate)
}

// tpmEKOf returns the public key of the TPM's EK made from a standard
// template (tpm2.ECCEKTemplate or tpm2.RSAEKTemplate).
func tpmEKOf(t *testing.T, tpm transport.TPM, tmpl tpm2.TPMTPublic) crypto.PublicKey {
	t.Helper()
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm)
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// provisionNV stores data in an NV index the way a TPM maker does: created
// with platform authorization, readable with the owner's or the index's
// own, written once. size may exceed len(data); the rest is padded with
// pad.
func provisionNV(t *testing.T, tpm transport.TPM, index tpm2.TPMHandle, data []byte, size int, pad byte) {
	t.Helper()
	buf := bytes.Repeat([]byte{pad}, size)
	copy(buf, data)
	pub := tpm2.TPMSNVPublic{
		NVIndex: index,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			PPWrite: true, PPRead: true, OwnerRead: true, AuthRead: true, NoDA: true, PlatformCreate: true,
			NT: tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(size),
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHPlatform, PublicInfo: tpm2.New2B(pub)}).Execute(tpm); err != nil {
		t.Fatalf("NV_DefineSpace %#x: %v", uint32(index), err)
	}
	name, err := tpm2.NVName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(buf); off += 1024 {
		end := min(off+1024, len(buf))
		_, err := tpm2.NVWrite{
			AuthHandle: tpm2.TPMRHPlatform,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: *name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: buf[off:end]},
			Offset:     uint16(off),
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("NV_Write %#x: %v", uint32(index), err)
		}
	}
	t.Cleanup(func() {
		_, _ = tpm2.NVUndefineSpace{AuthHandle: tpm2.TPMRHPlatform, NVIndex: tpm2.NamedHandle{Handle: index, Name: *name}}.Execute(tpm)
	})
}

func TestEKCertificates(t *testing.T) {
	tpm := openSim(t)
	ctx := context.Background()

	certs, chain, err := attest.ReadEKCertificates(ctx, tpm)
	if err != nil || len(certs) != 0 || len(chain) != 0 {
		t.Fatalf("unprovisioned TPM: %d certs, %d chain, %v", len(certs), len(chain), err)
	}

	maker := newTestCA(t, "Maker")
	ek := maker.ekCert(t, tpmEK(t, tpm))
	ekRSA := maker.ekCert(t, tpmEKOf(t, tpm, tpm2.RSAEKTemplate))
	// Padding as real TPMs have it: the ECC certificate in an index larger
	// than it, the intermediate followed by zeros.
	provisionNV(t, tpm, attest.EKCertIndexECC, ek.Raw, len(ek.Raw)+100, 0xff)
	provisionNV(t, tpm, attest.EKCertIndexRSA, ekRSA.Raw, len(ekRSA.Raw), 0)
	provisionNV(t, tpm, attest.EKChainIndexLow, maker.inter.Raw, len(maker.inter.Raw)+7, 0)

	certs, chain, err = attest.ReadEKCertificates(ctx, tpm)
	if err != nil {
		t.Fatalf("ReadEKCertificates: %v", err)
	}
	if len(certs) != 2 || !bytes.Equal(certs[0], ek.Raw) || !bytes.Equal(certs[1], ekRSA.Raw) {
		t.Fatalf("EK certificates: got %d, want the ECC then the RSA one", len(certs))
	}
	if len(chain) != 1 || !bytes.Equal(chain[0], maker.inter.Raw) {
		t.Fatalf("EK chain: got %d", len(chain))
	}
	wantTransient(t, tpm, 0, "ReadEKCertificates")

	_, ak := newAK(t, tpm)
	nonce, key := randBytes(t, 32), randBytes(t, 32)
	ev := quote(t, tpm, ak, nonce, key, quotedPCRs)
	ev.EKCertificates, ev.EKChain = certs, chain
	policy := mustPolicy(t, ev.PCRs)
	opts := attest.VerifyOptions{Nonce: nonce, BoundKey: key, Policy: policy, AKName: ak.Name()}

	opts.EKRoots = maker.roots()
	facts, err := attest.Verify(clone(t, ev), opts)
	if err != nil {
		t.Fatalf("Verify with the maker's root: %v", err)
	}
	if facts.EKCertificate == nil || !bytes.Equal(facts.EKCertificate.Raw, ek.Raw) {
		t.Fatal("Facts.EKCertificate is not the EK certificate")
	}
	// Either certificate may vouch for the TPM.
	onlyRSA := clone(t, ev)
	onlyRSA.EKCertificates = onlyRSA.EKCertificates[1:]
	if facts, err := attest.Verify(onlyRSA, opts); err != nil || !bytes.Equal(facts.EKCertificate.Raw, ekRSA.Raw) {
		t.Fatalf("Verify with the RSA EK certificate only: %v", err)
	}

	for _, tc := range []struct {
		name   string
		change func(e *attest.Evidence, o *attest.VerifyOptions)
		want   error
	}{
		{"another maker's root", func(e *attest.Evidence, o *attest.VerifyOptions) {
			o.EKRoots = newTestCA(t, "Other").roots()
		}, attest.ErrEKUntrusted},
		{"intermediate missing", func(e *attest.Evidence, o *attest.VerifyOptions) {
			e.EKChain = nil
		}, attest.ErrEKUntrusted},
		{"certificate expired", func(e *attest.Evidence, o *attest.VerifyOptions) {
			o.Now = time.Now().Add(48 * time.Hour)
		}, attest.ErrEKUntrusted},
		{"EK certificate missing", func(e *attest.Evidence, o *attest.VerifyOptions) {
			e.EKCertificates = nil
		}, attest.ErrNoEKCertificate},
		{"self-made EK certificate", func(e *attest.Evidence, o *attest.VerifyOptions) {
			// Issued in the intermediate's name, signed with another key.
			forger := genKey(t)
			fake := issue(t, &x509.Certificate{Subject: maker.inter.Subject, IsCA: true, BasicConstraintsValid: true,
				KeyUsage: x509.KeyUsageCertSign}, nil, forger.Public(), forger)
			e.EKCertificates = [][]byte{issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "EK"}}, fake, tpmEK(t, tpm), forger).Raw}
		}, attest.ErrEKUntrusted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, o := clone(t, ev), opts
			tc.change(e, &o)
			if _, err := attest.Verify(e, o); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestEnrollment binds the AK to the certified EK with
// MakeCredential/ActivateCredential, and shows the TPM refusing to answer a
// challenge made for another key or another EK.
func TestEnrollment(t *testing.T) {
	for _, tc := range []struct {
		name string
		tmpl tpm2.TPMTPublic
	}{
		{"ECC EK", tpm2.ECCEKTemplate},
		{"RSA EK", tpm2.RSAEKTemplate},
	} {
		t.Run(tc.name, func(t *testing.T) { testEnrollment(t, tc.tmpl) })
	}
}

func testEnrollment(t *testing.T, tmpl tpm2.TPMTPublic) {
	tpm := openSim(t)
	ctx := context.Background()
	maker := newTestCA(t, "Maker")
	ekCert := maker.ekCert(t, tpmEKOf(t, tpm, tmpl))
	_, ak := newAK(t, tpm)
	_, other := newAK(t, tpm)

	// The verifier checks the EK certificate, then challenges the AK.
	if _, err := ekCert.Verify(x509.VerifyOptions{Roots: maker.roots(), Intermediates: poolOf(maker.inter), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatal(err)
	}
	ch, want, err := attest.MakeEnrollChallenge(rand.Reader, ekCert.PublicKey, ak.Public())
	if err != nil {
		t.Fatalf("MakeEnrollChallenge: %v", err)
	}
	got, err := attest.ActivateCredential(ctx, tpm, ak, ch)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if err := attest.CheckEnrollAnswer(want, got); err != nil {
		t.Fatalf("CheckEnrollAnswer: %v", err)
	}
	wantTransient(t, tpm, 2, "ActivateCredential (two AKs loaded)")
	wantNoSessions(t, tpm)

	if err := attest.CheckEnrollAnswer(want, secret.NewBytes(randBytes(t, 32))); !errors.Is(err, attest.ErrCredentialMismatch) {
		t.Fatalf("a wrong answer: %v", err)
	}
	if err := attest.CheckEnrollAnswer(secret.Bytes{}, secret.Bytes{}); !errors.Is(err, attest.ErrCredentialMismatch) {
		t.Fatalf("an empty secret: %v", err)
	}

	// A challenge for another AK Name: the TPM refuses to release it.
	ch2, _, err := attest.MakeEnrollChallenge(rand.Reader, ekCert.PublicKey, other.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.ActivateCredential(ctx, tpm, ak, ch2); err == nil {
		t.Fatal("ActivateCredential released a credential made for another key")
	}
	// A challenge to an EK that is not this TPM's (a forged certificate's key).
	ch3, _, err := attest.MakeEnrollChallenge(rand.Reader, genKey(t).Public(), ak.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.ActivateCredential(ctx, tpm, ak, ch3); err == nil {
		t.Fatal("ActivateCredential opened a challenge for another EK")
	}
	wantTransient(t, tpm, 2, "failed activations")
	wantNoSessions(t, tpm)

	// Only proper AKs are enrolled: an unrestricted key is refused.
	ev := quote(t, tpm, ak, randBytes(t, 16), []byte{1}, quotedPCRs)
	unrestricted, _, _ := forgeWithUnrestrictedKey(t, tpm, ev.Quote)
	if _, _, err := attest.MakeEnrollChallenge(rand.Reader, ekCert.PublicKey, unrestricted); !errors.Is(err, attest.ErrBadAK) {
		t.Fatalf("challenge for an unrestricted key: %v", err)
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// wantNoSessions fails when an HMAC or policy session is still loaded.
func wantNoSessions(t *testing.T, tpm transport.TPM) {
	t.Helper()
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(ht) << 24, PropertyCount: 16}.Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs.Handle {
			if uint32(h)>>24 == uint32(ht) {
				t.Fatalf("session %#x left loaded", uint32(h))
			}
		}
	}
}
