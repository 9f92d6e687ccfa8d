//go:build cgo

package attest_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"testing"
	"time"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/receipt"
)

// The AK certifies the signing key; the certification verifies with the AK
// alone (pinned), and what the signing key signs verifies under the key
// the certification returns.
func TestSigningKeyCertifiedByAK(t *testing.T) {
	ctx := context.Background()
	tpm := openSim(t)
	akBlob, ak := newAK(t, tpm)
	blob, err := attest.CreateSigningKey(ctx, tpm, []int{7, 0})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := blob.MarshalBinary()
	if blob, err = attest.ParseSigningKeyBlob(raw); err != nil {
		t.Fatal(err)
	}
	key, err := attest.LoadSigningKey(ctx, tpm, blob)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	cert, err := attest.Certify(ctx, ak, key)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := akBlob.Name()
	pub, err := attest.VerifyCertification(cert, name)
	if err != nil {
		t.Fatalf("VerifyCertification: %v", err)
	}
	if !pub.Equal(key.PublicKey()) {
		t.Fatal("certified key is not the signing key")
	}
	// The TPM signs a batch key certificate that verifies under the
	// certified key.
	bk, err := receipt.NewBatchKey("n1", time.Now(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bk.Cert().Verify([]*ecdsa.PublicKey{pub}); err != nil {
		t.Fatal(err)
	}
	wantTransient(t, tpm, 2, "certify") // the AK and the signing key, nothing leaked
}

// A certification made by another AK is refused when the AK is pinned; a
// certification whose key was swapped for another signing key, or whose
// signed structure was altered, is refused even without a pin.
func TestCertificationByAnotherAKRefused(t *testing.T) {
	ctx := context.Background()
	tpm := openSim(t) // three object slots: load no more than needed
	akBlob, ak := newAK(t, tpm)
	blob, err := attest.CreateSigningKey(ctx, tpm, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherBlob, err := attest.CreateSigningKey(ctx, tpm, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := attest.LoadSigningKey(ctx, tpm, blob)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	name, _ := akBlob.Name()
	good, err := attest.Certify(ctx, ak, key)
	if err != nil {
		t.Fatal(err)
	}
	_ = ak.Close()
	_, otherAK := newAK(t, tpm)
	byOther, err := attest.Certify(ctx, otherAK, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyCertification(byOther, name); !errors.Is(err, attest.ErrAKMismatch) {
		t.Fatalf("certification by another AK: %v, want ak_mismatch", err)
	}
	// Our AK's public area swapped in for the attacker's: the signature fails.
	forged := *byOther
	forged.AKPublic = good.AKPublic
	if _, err := attest.VerifyCertification(&forged, name); !errors.Is(err, attest.ErrBadSignature) {
		t.Fatalf("certification under a swapped AK: %v, want bad_signature", err)
	}
	swapped := *good
	swapped.KeyPublic = otherBlob.Public
	if _, err := attest.VerifyCertification(&swapped, nil); !errors.Is(err, attest.ErrNotACertification) {
		t.Fatalf("certification of another key: %v, want not_a_certification", err)
	}
	altered := *good
	altered.CertifyInfo = append([]byte(nil), good.CertifyInfo...)
	altered.CertifyInfo[len(altered.CertifyInfo)-1] ^= 1
	if _, err := attest.VerifyCertification(&altered, nil); !errors.Is(err, attest.ErrBadSignature) {
		t.Fatalf("altered certification: %v, want bad_signature", err)
	}
	// A quote is not a certification, even though an AK signed it.
	ev, err := attest.Quote(ctx, tpm, otherAK, attest.QuoteOptions{Nonce: make([]byte, 16), BoundKey: []byte("k"), PCRs: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	asCert := *byOther
	asCert.CertifyInfo, asCert.Signature = ev.Quote, ev.Signature
	if _, err := attest.VerifyCertification(&asCert, nil); !errors.Is(err, attest.ErrNotACertification) {
		t.Fatalf("quote passed as certification: %v", err)
	}
}
