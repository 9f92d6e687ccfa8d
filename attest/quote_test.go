//go:build cgo

package attest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"maps"
	"net/http"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/apierr"
)

var quotedPCRs = []int{0, 7, 16, 23}

func TestGoodQuoteVerifies(t *testing.T) {
	tpm := openSim(t)
	ctx := context.Background()

	blob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	wantTransient(t, tpm, 0, "CreateAK")
	ak, err := attest.LoadAK(ctx, tpm, blob)
	if err != nil {
		t.Fatal(err)
	}
	wantTransient(t, tpm, 1, "LoadAK")

	extend(t, tpm, 23, "appliance v1")
	nonce, key := randBytes(t, 32), randBytes(t, 1216) // an ML-KEM-768+X25519 public key's size
	ev, err := attest.Quote(ctx, tpm, ak, attest.QuoteOptions{Nonce: nonce, BoundKey: key, PCRs: quotedPCRs})
	if err != nil {
		t.Fatal(err)
	}
	wantTransient(t, tpm, 1, "Quote")

	current, err := attest.ReadPCRs(ctx, tpm, quotedPCRs)
	if err != nil {
		t.Fatal(err)
	}
	wantTransient(t, tpm, 1, "ReadPCRs")
	name, err := blob.Name()
	if err != nil {
		t.Fatal(err)
	}
	if !sameBytes(name, ak.Name()) {
		t.Fatalf("blob name %x, loaded key name %x", name, ak.Name())
	}

	facts, err := attest.Verify(clone(t, ev), attest.VerifyOptions{
		Nonce:    nonce,
		BoundKey: key,
		Policy:   mustPolicy(t, current),
		AKName:   name,
	})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !facts.AKPinned || !sameBytes(facts.AKName, name) || !sameBytes(facts.BoundKey, key) {
		t.Fatalf("facts: pinned=%v name=%x key matches=%v", facts.AKPinned, facts.AKName, sameBytes(facts.BoundKey, key))
	}
	if !maps.EqualFunc(facts.PCRs, current, sameBytes) {
		t.Fatalf("facts.PCRs = %x, want %x", facts.PCRs, current)
	}
	if facts.EKCertificate != nil {
		t.Fatal("EK certificate reported without EK roots")
	}

	// Learning the bound key: the evidence's key, checked against the quote.
	facts, err = attest.Verify(ev, attest.VerifyOptions{Nonce: nonce, Policy: mustPolicy(t, current), AKName: name})
	if err != nil || !sameBytes(facts.BoundKey, key) {
		t.Fatalf("Verify learning the key: %v", err)
	}

	if err := ak.Close(); err != nil {
		t.Fatal(err)
	}
	wantTransient(t, tpm, 0, "AK.Close")
	if _, err := attest.Quote(ctx, tpm, ak, attest.QuoteOptions{Nonce: nonce, BoundKey: key, PCRs: quotedPCRs}); !errors.Is(err, attest.ErrAKClosed) {
		t.Fatalf("Quote with a closed AK = %v", err)
	}
}

// TestVerifyRefusals: every check of Verify, each with the evidence or
// options changed in one way, refused with its own reason.
func TestVerifyRefusals(t *testing.T) {
	tpm := openSim(t)
	ctx := context.Background()
	blob1, ak1 := newAK(t, tpm)
	blob2, ak2 := newAK(t, tpm)
	name1, _ := blob1.Name()
	name2, _ := blob2.Name()

	extend(t, tpm, 23, "appliance v1")
	nonce, key := randBytes(t, 32), randBytes(t, 32)
	ev := quote(t, tpm, ak1, nonce, key, quotedPCRs)
	values, err := attest.ReadPCRs(ctx, tpm, quotedPCRs)
	if err != nil {
		t.Fatal(err)
	}
	policy := mustPolicy(t, values)
	good := func() (*attest.Evidence, attest.VerifyOptions) {
		return clone(t, ev), attest.VerifyOptions{Nonce: nonce, BoundKey: key, Policy: policy, AKName: name1}
	}
	if _, err := attest.Verify(good()); err != nil {
		t.Fatalf("baseline evidence refused: %v", err)
	}

	cases := []struct {
		name    string
		prepare func(t *testing.T) (*attest.Evidence, attest.VerifyOptions)
		want    error
	}{
		{"different nonce", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			o.Nonce = randBytes(t, 32)
			return e, o
		}, attest.ErrNonceMismatch},
		{"nonce altered on the way to the appliance", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			_, o := good()
			return quote(t, tpm, ak1, randBytes(t, 32), key, quotedPCRs), o
		}, attest.ErrNonceMismatch},
		{"quote replayed from another nonce", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			// A session that verified once is recorded, then replayed to a
			// verifier with a new challenge.
			old, o := good()
			if _, err := attest.Verify(old, o); err != nil {
				t.Fatalf("first session: %v", err)
			}
			o.Nonce = randBytes(t, 48)
			return old, o
		}, attest.ErrNonceMismatch},
		{"other bound key", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			o.BoundKey = randBytes(t, 32)
			return e, o
		}, attest.ErrBoundKeyMismatch},
		{"bound key swapped in the evidence", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			// A relay replaces the key the client learns; the quote does
			// not commit to it.
			e, o := good()
			e.BoundKey = randBytes(t, 32)
			o.BoundKey = nil
			return e, o
		}, attest.ErrNonceMismatch},
		{"quote binding another key for this nonce", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			_, o := good()
			return quote(t, tpm, ak1, nonce, randBytes(t, 32), quotedPCRs), o
		}, attest.ErrBoundKeyMismatch},
		{"swapped AK (pinned another)", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			o.AKName = name2
			return e, o
		}, attest.ErrAKMismatch},
		{"quote by another TPM key (pinned)", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			_, o := good()
			return quote(t, tpm, ak2, nonce, key, quotedPCRs), o
		}, attest.ErrAKMismatch},
		{"AK public swapped, signature kept", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.AKPublic = ak2.Public()
			o.AKName = name2
			return e, o
		}, attest.ErrBadSignature},
		{"AK public swapped, not pinned", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.AKPublic = ak2.Public()
			o.AKName = nil
			return e, o
		}, attest.ErrBadSignature},
		{"quote byte flipped", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.Quote[len(e.Quote)-1] ^= 1
			return e, o
		}, attest.ErrBadSignature},
		{"signature byte flipped", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.Signature[len(e.Signature)-1] ^= 1
			return e, o
		}, attest.ErrBadSignature},
		{"PCR value changed in the evidence", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.PCRs[7][0] ^= 1
			o.Policy = mustPolicy(t, e.PCRs) // the policy allows the forged value
			return e, o
		}, attest.ErrPCRDigestMismatch},
		{"PCR extended after the quote, current values sent", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			extend(t, tpm, 16, "after the quote")
			now, err := attest.ReadPCRs(ctx, tpm, quotedPCRs)
			if err != nil {
				t.Fatal(err)
			}
			e.PCRs = now
			o.Policy = mustPolicy(t, now)
			return e, o
		}, attest.ErrPCRDigestMismatch},
		{"PCR extended, fresh quote against the old policy", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			_, o := good()
			extend(t, tpm, 23, "unexpected software")
			return quote(t, tpm, ak1, nonce, key, quotedPCRs), o
		}, attest.ErrPCRNotAllowed},
		{"PCR value outside policy", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			other := maps.Clone(values)
			other[0] = sha256.New().Sum(nil)
			o.Policy = mustPolicy(t, other)
			return e, o
		}, attest.ErrPCRNotAllowed},
		{"PCR value missing from the evidence", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			delete(e.PCRs, 16)
			return e, o
		}, attest.ErrPCRDigestMismatch},
		{"PCR value not covered by the quote added", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.PCRs[8] = make([]byte, 32)
			return e, o
		}, attest.ErrPCRDigestMismatch},
		{"policy PCR not quoted", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			more := maps.Clone(values)
			more[8] = make([]byte, 32)
			o.Policy = mustPolicy(t, more)
			return e, o
		}, attest.ErrPCRNotQuoted},
		{"empty policy", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			o.Policy = &attest.Policy{}
			return e, o
		}, attest.ErrNoPolicy},
		{"no policy", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			o.Policy = nil
			return e, o
		}, attest.ErrNoPolicy},
		{"short verifier nonce", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			o.Nonce = o.Nonce[:15]
			return e, o
		}, attest.ErrBadOptions},
		{"wrong format tag", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.Format = "keywarden-evidence-v0"
			return e, o
		}, attest.ErrMalformed},
		{"wrong bank", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.PCRBank = "sha1"
			return e, o
		}, attest.ErrMalformed},
		{"trailing bytes after the AK public area", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.AKPublic = append(e.AKPublic, 0)
			return e, o
		}, attest.ErrMalformed},
		{"signed structure is a certification, not a quote", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			rsp, err := tpm2.Certify{
				ObjectHandle:   tpm2.AuthHandle{Handle: akHandle(t, tpm, ak1), Name: tpm2.TPM2BName{Buffer: name1}, Auth: tpm2.PasswordAuth(nil)},
				SignHandle:     tpm2.AuthHandle{Handle: akHandle(t, tpm, ak1), Name: tpm2.TPM2BName{Buffer: name1}, Auth: tpm2.PasswordAuth(nil)},
				QualifyingData: tpm2.TPM2BData{Buffer: attest.ExtraData(nonce, key)},
				InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			}.Execute(tpm)
			if err != nil {
				t.Fatalf("Certify: %v", err)
			}
			e.Quote = rsp.CertifyInfo.Bytes()
			e.Signature = tpm2.Marshal(rsp.Signature)
			return e, o
		}, attest.ErrNotAQuote},
		{"forged quote signed by an unrestricted TPM key", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.AKPublic, e.Quote, e.Signature = forgeWithUnrestrictedKey(t, tpm, e.Quote)
			o.AKName = nil
			return e, o
		}, attest.ErrBadAK},
		{"forged quote signed by a software key posing as an AK (pinned)", func(t *testing.T) (*attest.Evidence, attest.VerifyOptions) {
			e, o := good()
			e.AKPublic, e.Signature = forgeWithSoftwareKey(t, ak1.Public(), e.Quote)
			return e, o
		}, attest.ErrAKMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, o := tc.prepare(t)
			facts, err := attest.Verify(e, o)
			if err == nil {
				t.Fatalf("Verify accepted it: %+v", facts)
			}
			if facts != nil {
				t.Fatal("Verify returned facts with an error")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			var ve *attest.VerifyError
			if !errors.As(err, &ve) || ve.Reason == "" {
				t.Fatalf("error %v carries no reason", err)
			}
		})
	}
	wantTransient(t, tpm, 2, "the refusal cases (two AKs loaded)")
}

func TestQuoteOptionsValidate(t *testing.T) {
	ok := attest.QuoteOptions{Nonce: make([]byte, 16), BoundKey: []byte{1}, PCRs: []int{0}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*attest.QuoteOptions)
		want   error
	}{
		{"nonce 15 bytes", func(o *attest.QuoteOptions) { o.Nonce = make([]byte, 15) }, attest.ErrBadNonce},
		{"nonce 65 bytes", func(o *attest.QuoteOptions) { o.Nonce = make([]byte, 65) }, attest.ErrBadNonce},
		{"no nonce", func(o *attest.QuoteOptions) { o.Nonce = nil }, attest.ErrBadNonce},
		{"no bound key", func(o *attest.QuoteOptions) { o.BoundKey = nil }, attest.ErrNoBoundKey},
		{"no PCRs", func(o *attest.QuoteOptions) { o.PCRs = nil }, attest.ErrNoPCRs},
		{"PCR 24", func(o *attest.QuoteOptions) { o.PCRs = []int{0, 24} }, attest.ErrNoPCRs},
		{"PCR -1", func(o *attest.QuoteOptions) { o.PCRs = []int{-1} }, attest.ErrNoPCRs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.change(&o)
			if err := o.Validate(); !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
	// The nonce error is a client error the HTTP handler returns as is.
	bad := ok
	bad.Nonce = nil
	if e, isAPI := apierr.As(bad.Validate()); !isAPI || e.Status != http.StatusBadRequest {
		t.Fatalf("bad nonce is not a 400 apierr: %v", bad.Validate())
	}
}

func TestReadPCRs(t *testing.T) {
	tpm := openSim(t)
	ctx := context.Background()
	all := make([]int, 24)
	for i := range all {
		all[i] = i
	}
	before, err := attest.ReadPCRs(ctx, tpm, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 24 {
		t.Fatalf("read %d PCRs, want 24 (more than one TPM2_PCR_Read)", len(before))
	}
	extend(t, tpm, 16, "measured")
	after, err := attest.ReadPCRs(ctx, tpm, []int{16, 23})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("measured"))
	want := sha256.Sum256(append(before[16], d[:]...))
	if !sameBytes(after[16], want[:]) {
		t.Fatalf("PCR 16 = %x, want %x", after[16], want)
	}
	if !sameBytes(after[23], before[23]) {
		t.Fatal("PCR 23 changed without an extend")
	}
	for _, bad := range [][]int{nil, {24}, {-1}} {
		if _, err := attest.ReadPCRs(ctx, tpm, bad); !errors.Is(err, attest.ErrNoPCRs) {
			t.Fatalf("ReadPCRs(%v) = %v", bad, err)
		}
	}
	wantTransient(t, tpm, 0, "ReadPCRs")
}

func TestAKBlob(t *testing.T) {
	tpm := openSim(t)
	ctx := context.Background()
	blob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	other, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := blob.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := attest.ParseAKBlob(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !sameBytes(back.Public, blob.Public) || !sameBytes(back.Private, blob.Private) {
		t.Fatal("blob changed in a round trip")
	}
	ak, err := attest.LoadAK(ctx, tpm, back)
	if err != nil {
		t.Fatalf("LoadAK of a parsed blob: %v", err)
	}
	if err := ak.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ak.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	flipped := *blob
	flipped.Private = append([]byte(nil), blob.Private...)
	flipped.Private[len(flipped.Private)-1] ^= 1
	for _, tc := range []struct {
		name string
		blob *attest.AKBlob
	}{
		{"private area altered", &flipped},
		{"public area of another key", &attest.AKBlob{Public: other.Public, Private: blob.Private}},
		{"nil", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ak, err := attest.LoadAK(ctx, tpm, tc.blob); err == nil {
				ak.Close()
				t.Fatal("LoadAK accepted it")
			}
			wantTransient(t, tpm, 0, "a failed LoadAK")
		})
	}
	for _, bad := range [][]byte{nil, []byte("KWAK"), append([]byte("KWAK\x02"), raw[5:]...), raw[:len(raw)-1], append(raw, 0)} {
		if _, err := attest.ParseAKBlob(bad); !errors.Is(err, attest.ErrBadAKBlob) {
			t.Fatalf("ParseAKBlob(%x) = %v", bad, err)
		}
	}
}

// TestAKSurvivesRestart: the blob loads again after the TPM restarts with
// the same seeds (the appliance reboots), under the same Name.
func TestAKSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	var blob *attest.AKBlob
	func() {
		sim := openSeeded(t, 42)
		defer sim.Close()
		var err error
		if blob, err = attest.CreateAK(ctx, sim); err != nil {
			t.Fatal(err)
		}
	}()
	sim := openSeeded(t, 42)
	defer sim.Close()
	ak, err := attest.LoadAK(ctx, sim, blob)
	if err != nil {
		t.Fatalf("LoadAK after restart: %v", err)
	}
	defer ak.Close()
	name, _ := blob.Name()
	if !sameBytes(ak.Name(), name) {
		t.Fatal("name changed")
	}
}

// akHandle finds the transient handle of a loaded AK by its name.
func akHandle(t *testing.T, tpm transport.TPM, ak *attest.AK) tpm2.TPMHandle {
	t.Helper()
	for h := tpm2.TPMHandle(0x80000000); h < 0x80000010; h++ {
		rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tpm)
		if err == nil && sameBytes(rsp.Name.Buffer, ak.Name()) {
			return h
		}
	}
	t.Fatal("AK not loaded")
	return 0
}

// forgeWithUnrestrictedKey signs a TPMS_ATTEST with a TPM key that is not
// restricted: the TPM signs any digest with such a key, so its signatures
// prove nothing about the TPM's state.
func forgeWithUnrestrictedKey(t *testing.T, tpm transport.TPM, msg []byte) (pub, quote, sig []byte) {
	t.Helper()
	tmpl := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
	key, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: key.ObjectHandle}.Execute(tpm)
	digest := sha256.Sum256(msg)
	rsp, err := tpm2.Sign{
		KeyHandle:  tpm2.AuthHandle{Handle: key.ObjectHandle, Name: key.Name, Auth: tpm2.PasswordAuth(nil)},
		Digest:     tpm2.TPM2BDigest{Buffer: digest[:]},
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("Sign with an unrestricted key: %v", err)
	}
	return key.OutPublic.Bytes(), msg, tpm2.Marshal(rsp.Signature)
}

// forgeWithSoftwareKey signs msg with a software key and dresses its public
// key in the AK's public area (attributes claiming restricted, fixedTPM).
func forgeWithSoftwareKey(t *testing.T, akPublic, msg []byte) (pub, sig []byte) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	area, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		t.Fatal(err)
	}
	x, y := make([]byte, 32), make([]byte, 32)
	priv.X.FillBytes(x)
	priv.Y.FillBytes(y)
	area.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	digest := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	rb, sb := make([]byte, 32), make([]byte, 32)
	r.FillBytes(rb)
	s.FillBytes(sb)
	signature := tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: rb}, SignatureS: tpm2.TPM2BECCParameter{Buffer: sb},
		}),
	}
	return tpm2.Marshal(*area), tpm2.Marshal(signature)
}

// TestUnpinnedAKIsReported: without a pinned AK, a software key dressed up
// as a TPM key produces evidence that is consistent, and Verify can only
// say so: Facts.AKPinned is false. This is why production pins the AK.
func TestUnpinnedAKIsReported(t *testing.T) {
	tpm := openSim(t)
	_, ak := newAK(t, tpm)
	nonce, key := randBytes(t, 16), randBytes(t, 32)
	ev := quote(t, tpm, ak, nonce, key, quotedPCRs)
	ev.AKPublic, ev.Signature = forgeWithSoftwareKey(t, ak.Public(), ev.Quote)
	facts, err := attest.Verify(ev, attest.VerifyOptions{Nonce: nonce, BoundKey: key, Policy: mustPolicy(t, ev.PCRs)})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if facts.AKPinned {
		t.Fatal("AKPinned is true without a pin")
	}
	if _, err := attest.Verify(ev, attest.VerifyOptions{Nonce: nonce, BoundKey: key, Policy: mustPolicy(t, ev.PCRs), AKName: ak.Name()}); !errors.Is(err, attest.ErrAKMismatch) {
		t.Fatalf("pinned Verify = %v, want ErrAKMismatch", err)
	}
}

func TestVerifyErrorText(t *testing.T) {
	err := error(&attest.VerifyError{Reason: attest.ErrPCRNotAllowed.Reason, Detail: "PCR 7 = 00 is not allowed by the policy"})
	if got, want := err.Error(), "attest: pcr_not_allowed: PCR 7 = 00 is not allowed by the policy"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, attest.ErrPCRNotAllowed) || errors.Is(err, attest.ErrPCRNotQuoted) {
		t.Fatal("errors.Is does not match by reason")
	}
}
