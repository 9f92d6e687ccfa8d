//go:build cgo

package attest_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
)

var clientPCRs = []int{0, 7}

// clientKeySetup makes an AK and a client key in the simulator, evidence
// for them, and the verifier's options that accept it.
func clientKeySetup(t *testing.T) (tpm transport.TPM, tpmAK *attest.AK, key *attest.ClientKey, blob *attest.ClientKeyBlob, ev *attest.ClientKeyEvidence, opts attest.VerifyOptions) {
	t.Helper()
	ctx := context.Background()
	tpm = openSim(t)
	akBlob, ak := newAK(t, tpm)
	blob, err := attest.CreateClientKey(ctx, tpm, clientPCRs)
	if err != nil {
		t.Fatalf("CreateClientKey: %v", err)
	}
	wantTransient(t, tpm, 1, "CreateClientKey")
	key, err = attest.LoadClientKey(ctx, tpm, blob)
	if err != nil {
		t.Fatalf("LoadClientKey: %v", err)
	}
	t.Cleanup(func() { _ = key.Close() })
	wantTransient(t, tpm, 1, "LoadClientKey") // the AK only: the client key holds no handle
	nonce := randBytes(t, 32)
	ev, err = attest.MakeClientKeyEvidence(ctx, tpm, ak, key, attest.ClientKeyEvidenceOptions{CommonName: "node-1", Nonce: nonce, PCRs: clientPCRs})
	if err != nil {
		t.Fatalf("MakeClientKeyEvidence: %v", err)
	}
	wantTransient(t, tpm, 1, "MakeClientKeyEvidence")
	values, err := attest.ReadPCRs(ctx, tpm, clientPCRs)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := akBlob.Name()
	return tpm, ak, key, blob, ev, attest.VerifyOptions{Nonce: nonce, Policy: mustPolicy(t, values), AKName: name}
}

func cloneCK(t *testing.T, ev *attest.ClientKeyEvidence) *attest.ClientKeyEvidence {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	out, err := attest.ParseClientKeyEvidence(b)
	if err != nil {
		t.Fatalf("ParseClientKeyEvidence: %v", err)
	}
	return out
}

func TestClientKeySignsAndIsVerified(t *testing.T) {
	_, _, key, blob, ev, opts := clientKeySetup(t)

	// The key is a working crypto.Signer whose public key is the TPM's.
	digest := sha256.Sum256([]byte("tls handshake"))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	pub := key.Public().(*ecdsa.PublicKey)
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Fatal("the TPM's signature does not verify under the key's public half")
	}
	if _, err := key.Sign(rand.Reader, make([]byte, 48), crypto.SHA384); err == nil {
		t.Fatal("signed a SHA-384 digest with a SHA-256 key")
	}
	// The blob round-trips.
	b, err := blob.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.ParseClientKeyBlob(b); err != nil {
		t.Fatalf("ParseClientKeyBlob: %v", err)
	}
	if _, err := attest.ParseClientKeyBlob(append([]byte("KWAK\x01"), b[5:]...)); err == nil {
		t.Fatal("parsed a blob with another header")
	}

	facts, err := attest.VerifyClientKey(cloneCK(t, ev), opts)
	if err != nil {
		t.Fatalf("VerifyClientKey of good evidence: %v", err)
	}
	if !facts.CSR.PublicKey.(*ecdsa.PublicKey).Equal(pub) || !facts.Quote.AKPinned || facts.CSR.Subject.CommonName != "node-1" {
		t.Fatalf("facts: %+v", facts)
	}
}

// TestVerifyClientKeyRefusals tries, as an attacker would, to get a
// certificate for a key that is not the attested TPM's.
func TestVerifyClientKeyRefusals(t *testing.T) {
	tpm, ak, key, blob, ev, opts := clientKeySetup(t)
	ctx := context.Background()
	csr, _ := x509.ParseCertificateRequest(ev.CSR)
	spki := csr.RawSubjectPublicKeyInfo
	soft, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	softCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-1"}}, soft)
	if err != nil {
		t.Fatal(err)
	}
	softReq, _ := x509.ParseCertificateRequest(softCSR)
	softSPKI := softReq.RawSubjectPublicKeyInfo

	// The simulator holds three objects at most, so the other objects'
	// signatures are made in turns. They are other TPM objects of the same
	// TPM, which is what matters to the verifier.
	// With this AK and key: a quote and a certification for the software key.
	softQuote := quote(t, tpm, ak, opts.Nonce, softSPKI, clientPCRs)
	softCertAtt, softCertSig := mustCertify(t, ak, key, opts.Nonce, softSPKI)
	// This AK certifies another client key.
	_ = key.Close()
	otherBlob, err := attest.CreateClientKey(ctx, tpm, clientPCRs)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := attest.LoadClientKey(ctx, tpm, otherBlob)
	if err != nil {
		t.Fatal(err)
	}
	otherKeyAtt, otherKeySig := mustCertify(t, ak, otherKey, opts.Nonce, spki)
	_ = otherKey.Close()
	// Another AK certifies this key, and makes whole evidence for it.
	_ = ak.Close()
	_, otherAK := newAK(t, tpm)
	key, err = attest.LoadClientKey(ctx, tpm, blob)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	otherAKAtt, otherAKSig := mustCertify(t, otherAK, key, opts.Nonce, spki)
	otherAKEv, err := attest.MakeClientKeyEvidence(ctx, tpm, otherAK, key, attest.ClientKeyEvidenceOptions{CommonName: "node-1", Nonce: opts.Nonce, PCRs: clientPCRs})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		edit func(ev *attest.ClientKeyEvidence, o *attest.VerifyOptions)
		want error
	}{
		{"certification by another AK", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			ev.Certify, ev.CertifySignature = otherAKAtt, otherAKSig
		}, attest.ErrBadSignature},
		{"everything from another AK", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			*ev = *cloneCK(t, otherAKEv)
		}, attest.ErrAKMismatch},
		{"certification of another key", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			ev.Certify, ev.CertifySignature = otherKeyAtt, otherKeySig
		}, attest.ErrClientKeyMismatch},
		{"request of a software key", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			ev.CSR = softCSR
		}, attest.ErrClientKeyMismatch},
		{"software key dressed as a TPM key", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			ev.CSR = softCSR
			ev.KeyPublic = dressAsTPMKey(t, ev.KeyPublic, soft)
		}, attest.ErrBoundKeyMismatch}, // the quote binds the TPM key, not this one
		{"software key, quote and certification re-made for it", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			ev.CSR = softCSR
			ev.KeyPublic = dressAsTPMKey(t, ev.KeyPublic, soft)
			ev.Quote = softQuote
			ev.Certify, ev.CertifySignature = softCertAtt, softCertSig
		}, attest.ErrClientKeyMismatch},
		{"another nonce", func(_ *attest.ClientKeyEvidence, o *attest.VerifyOptions) {
			o.Nonce = randBytes(t, 32)
		}, attest.ErrNonceMismatch},
		{"a quote, not a certification", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			ev.Certify, ev.CertifySignature = ev.Quote.Quote, ev.Quote.Signature
		}, attest.ErrNotACertification},
		{"a key that can leave the TPM", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			p, err := tpm2.Unmarshal[tpm2.TPMTPublic](ev.KeyPublic)
			if err != nil {
				t.Fatal(err)
			}
			p.ObjectAttributes.FixedTPM = false
			ev.KeyPublic = tpm2.Marshal(p)
		}, attest.ErrBadClientKey},
		{"PCRs outside the policy", func(_ *attest.ClientKeyEvidence, o *attest.VerifyOptions) {
			p := mustPolicy(t, map[int][]byte{0: make([]byte, 32), 7: randBytes(t, 32)})
			o.Policy = p
		}, attest.ErrPCRNotAllowed},
		{"corrupted request", func(ev *attest.ClientKeyEvidence, _ *attest.VerifyOptions) {
			ev.CSR[len(ev.CSR)-3] ^= 1
		}, attest.ErrBadCSR},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, o := cloneCK(t, ev), opts
			tc.edit(e, &o)
			_, err := attest.VerifyClientKey(e, o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := attest.VerifyClientKey(cloneCK(t, ev), opts); err != nil {
		t.Fatalf("the untouched evidence no longer verifies: %v", err)
	}
}

// TestClientKeyDoesNotLoadOnAnotherTPM: a copy of the store holds the
// key's blob; on another TPM (swtpm here) it does not load.
func TestClientKeyDoesNotLoadOnAnotherTPM(t *testing.T) {
	ctx := context.Background()
	_, _, _, blob, _, _ := clientKeySetup(t)
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	other, err := tpmdev.Open(ctx, sw.Spec)
	if err != nil {
		t.Fatalf("tpmdev.Open: %v", err)
	}
	defer other.Close()
	if k, err := attest.LoadClientKey(ctx, other, blob); err == nil {
		_ = k.Close()
		t.Fatal("the client key blob loaded in another TPM")
	}
}

func mustCertify(t *testing.T, ak *attest.AK, key *attest.ClientKey, nonce, spki []byte) (att, sig []byte) {
	t.Helper()
	att, sig, err := attest.CertifyClientKey(context.Background(), ak, key, nonce, spki)
	if err != nil {
		t.Fatalf("CertifyClientKey: %v", err)
	}
	return att, sig
}

// dressAsTPMKey returns the public area pub with its point replaced by
// soft's: all the right attributes, but a key the TPM never held.
func dressAsTPMKey(t *testing.T, pub []byte, soft *ecdsa.PrivateKey) []byte {
	t.Helper()
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](pub)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := soft.PublicKey.Bytes()
	p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
	})
	return tpm2.Marshal(p)
}
