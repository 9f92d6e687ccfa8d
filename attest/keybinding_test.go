//go:build cgo

package attest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/attest"
)

// The Vault client key and the appliance signing key, made with the
// sealing PCRs, sign only in the boot state they were made in. After a PCR
// of their selection moves (another OS booted on the same TPM, changed
// firmware), the TPM refuses them; a PCR outside the selection does not
// matter. An attacker with the blob who tries the empty password (the
// legacy way these keys were used) is refused too.
func TestBoundKeysRefuseToSignInAnotherBootState(t *testing.T) {
	ctx := context.Background()
	tpm, _, ck, ckBlob, _, _ := clientKeySetup(t) // bound to clientPCRs
	sblob, err := attest.CreateSigningKey(ctx, tpm, clientPCRs)
	if err != nil {
		t.Fatal(err)
	}
	if len(sblob.PCRs) != 2 || !sblob.BoundTo([]int{7, 0, 7}) || sblob.BoundTo([]int{7}) || !ckBlob.BoundTo(clientPCRs) {
		t.Fatalf("blob PCRs: signing key %v, client key %v", sblob.PCRs, ckBlob.PCRs)
	}
	sk, err := attest.LoadSigningKey(ctx, tpm, sblob)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	d := sha256.Sum256([]byte("TLS handshake to Vault"))
	signs := func(s crypto.Signer) error {
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			return err
		}
		if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig) {
			t.Fatal("a signature that does not verify")
		}
		return nil
	}
	if err := signs(ck); err != nil {
		t.Fatalf("client key in its own boot state: %v", err)
	}
	if err := signs(sk); err != nil {
		t.Fatalf("signing key in its own boot state: %v", err)
	}
	extend(t, tpm, 16, "a PCR outside the selection (debug PCR)")
	if err := signs(ck); err != nil {
		t.Fatalf("client key after a PCR outside its selection moved: %v", err)
	}
	if err := signs(sk); err != nil {
		t.Fatalf("signing key after a PCR outside its selection moved: %v", err)
	}
	wantTransient(t, tpm, 2, "signing") // the AK and the signing key: no session or key leaked

	extend(t, tpm, 7, "an unmeasured OS booted on the same machine")
	if err := signs(ck); !errors.Is(err, attest.ErrKeyPCRsChanged) {
		t.Errorf("client key after PCR 7 moved: %v, want ErrKeyPCRsChanged", err)
	}
	if err := signs(sk); !errors.Is(err, attest.ErrKeyPCRsChanged) {
		t.Errorf("signing key after PCR 7 moved: %v, want ErrKeyPCRsChanged", err)
	}
	wantTransient(t, tpm, 2, "refused signatures")

	// The attacker's way: the stored blobs, presented as legacy (unbound)
	// keys, so the empty password is offered instead of the policy.
	_ = sk.Close()
	legacyCK, err := attest.LoadClientKey(ctx, tpm, &attest.ClientKeyBlob{Public: ckBlob.Public, Private: ckBlob.Private})
	if err != nil {
		t.Fatal(err)
	}
	defer legacyCK.Close()
	if err := signs(legacyCK); err == nil {
		t.Error("bound client key signed with the empty password")
	}
	legacySK, err := attest.LoadSigningKey(ctx, tpm, &attest.SigningKeyBlob{Public: sblob.Public, Private: sblob.Private})
	if err != nil {
		t.Fatal(err)
	}
	if err := signs(legacySK); err == nil {
		t.Error("bound signing key signed with the empty password")
	}
	_ = legacySK.Close() // the simulator has three object slots
	// And the blob that says it is bound must be: a bound PCR list on an
	// unbound public area is refused before the TPM is asked.
	unbound, err := attest.CreateClientKey(ctx, tpm, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.LoadClientKey(ctx, tpm, &attest.ClientKeyBlob{Public: unbound.Public, Private: unbound.Private, PCRs: clientPCRs}); !errors.Is(err, attest.ErrBadClientKeyBlob) {
		t.Errorf("unbound key with a PCR list: %v, want ErrBadClientKeyBlob", err)
	}
}

// Without PCRs (dev mode, tpm.allow_no_pcr_policy) the keys are made as
// before and sign in any boot state; the blob keeps its version 1 form.
func TestUnboundKeysKeepWorking(t *testing.T) {
	ctx := context.Background()
	tpm := openSim(t)
	blob, err := attest.CreateSigningKey(ctx, tpm, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := blob.MarshalBinary()
	if !bytes.HasPrefix(raw, []byte("KWSK\x01")) || len(blob.PCRs) != 0 || !blob.BoundTo(nil) {
		t.Fatalf("unbound signing key blob: %x…, PCRs %v", raw[:5], blob.PCRs)
	}
	sk, err := attest.LoadSigningKey(ctx, tpm, blob)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	extend(t, tpm, 7, "another boot")
	d := sha256.Sum256([]byte("x"))
	if _, err := sk.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("unbound key: %v", err)
	}
}

// Bound blobs round-trip with their PCR list; bad lists are refused.
func TestBoundKeyBlobs(t *testing.T) {
	ctx := context.Background()
	tpm := openSim(t)
	cblob, err := attest.CreateClientKey(ctx, tpm, []int{7, 0})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cblob.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("KWCK\x02")) {
		t.Fatalf("bound client key blob header %x", raw[:5])
	}
	back, err := attest.ParseClientKeyBlob(raw)
	if err != nil || !back.BoundTo([]int{0, 7}) {
		t.Fatalf("ParseClientKeyBlob: %v, PCRs %v", err, back)
	}
	for name, b := range map[string][]byte{
		"truncated PCR list":  raw[:len(raw)-1],
		"unsorted PCR list":   append(bytes.Clone(raw[:len(raw)-3]), 2, 7, 0),
		"PCR out of range":    append(bytes.Clone(raw[:len(raw)-3]), 2, 0, 24),
		"empty PCR list (v2)": append(bytes.Clone(raw[:len(raw)-3]), 0),
		"trailing byte":       append(bytes.Clone(raw), 0),
		"v1 header, PCR list": append([]byte("KWCK\x01"), raw[5:]...),
	} {
		if _, err := attest.ParseClientKeyBlob(b); !errors.Is(err, attest.ErrBadClientKeyBlob) {
			t.Errorf("%s: %v, want ErrBadClientKeyBlob", name, err)
		}
	}
	sblob, err := attest.CreateSigningKey(ctx, tpm, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = sblob.MarshalBinary()
	if back, err := attest.ParseSigningKeyBlob(raw); err != nil || !back.BoundTo([]int{7}) {
		t.Fatalf("ParseSigningKeyBlob: %v", err)
	}
	if _, err := attest.ParseSigningKeyBlob(append([]byte("KWSK\x01"), raw[5:]...)); !errors.Is(err, attest.ErrBadSigningKeyBlob) {
		t.Fatalf("signing key v1 header with a PCR list: %v", err)
	}
	if _, err := attest.CreateSigningKey(ctx, tpm, []int{24}); err == nil {
		t.Fatal("made a key bound to PCR 24")
	}
}

// The CA's verifier, given the key policy, issues only for a client key
// bound to it; without one it accepts and says what it saw.
func TestVerifyClientKeyBinding(t *testing.T) {
	ctx := context.Background()
	tpm, ak, _, _, ev, opts := clientKeySetup(t) // bound to clientPCRs' current values
	values, err := attest.ReadPCRs(ctx, tpm, clientPCRs)
	if err != nil {
		t.Fatal(err)
	}
	keyPolicy := mustPolicy(t, values)

	facts, err := attest.VerifyClientKey(cloneCK(t, ev), opts)
	if err != nil || facts.KeyBinding != attest.KeyPolicyUnchecked {
		t.Fatalf("no key policy: %v, binding %v", err, facts)
	}
	o := opts
	o.KeyPolicy = keyPolicy
	if facts, err = attest.VerifyClientKey(cloneCK(t, ev), o); err != nil || facts.KeyBinding != attest.KeyBoundToPolicy {
		t.Fatalf("key policy of the key's values: %v, %v", err, facts)
	}
	// A policy allowing a second value for PCR 7 (a planned update) still
	// matches the key's combination.
	two := mustPolicy(t, values)
	two.PCRs[7] = append([][]byte{randBytes(t, 32)}, two.PCRs[7]...)
	o.KeyPolicy = two
	if facts, err = attest.VerifyClientKey(cloneCK(t, ev), o); err != nil || facts.KeyBinding != attest.KeyBoundToPolicy {
		t.Fatalf("key policy with two values for PCR 7: %v, %v", err, facts)
	}

	// Refused with a key policy: other values, another selection.
	other := mustPolicy(t, map[int][]byte{0: values[0], 7: randBytes(t, 32)})
	only7 := mustPolicy(t, map[int][]byte{7: values[7]})
	for name, p := range map[string]*attest.Policy{"other values": other, "another selection": only7} {
		o := opts
		o.KeyPolicy = p
		if _, err := attest.VerifyClientKey(cloneCK(t, ev), o); !errors.Is(err, attest.ErrKeyNotBound) {
			t.Errorf("%s: %v, want ErrKeyNotBound", name, err)
		}
	}

	// The attacker's edit: the public area made to look bound (or
	// unbound) no longer has the certified Name.
	e := cloneCK(t, ev)
	p, _ := tpm2.Unmarshal[tpm2.TPMTPublic](e.KeyPublic)
	p.ObjectAttributes.UserWithAuth = true
	e.KeyPublic = tpm2.Marshal(p)
	if _, err := attest.VerifyClientKey(e, opts); !errors.Is(err, attest.ErrClientKeyMismatch) {
		t.Errorf("public area edited: %v, want ErrClientKeyMismatch", err)
	}

	// A key made without PCRs (the legacy key, or dev mode): reported as
	// not bound, refused when a key policy is given.
	ublob, err := attest.CreateClientKey(ctx, tpm, nil)
	if err != nil {
		t.Fatal(err)
	}
	ukey, err := attest.LoadClientKey(ctx, tpm, ublob)
	if err != nil {
		t.Fatal(err)
	}
	defer ukey.Close()
	uev, err := attest.MakeClientKeyEvidence(ctx, tpm, ak, ukey, attest.ClientKeyEvidenceOptions{CommonName: "node-1", Nonce: opts.Nonce, PCRs: clientPCRs})
	if err != nil {
		t.Fatal(err)
	}
	if facts, err := attest.VerifyClientKey(cloneCK(t, uev), opts); err != nil || facts.KeyBinding != attest.KeyNotBound {
		t.Fatalf("unbound key, no key policy: %v, %v", err, facts)
	}
	o = opts
	o.KeyPolicy = keyPolicy
	if _, err := attest.VerifyClientKey(cloneCK(t, uev), o); !errors.Is(err, attest.ErrKeyNotBound) {
		t.Fatalf("unbound key with a key policy: %v, want ErrKeyNotBound", err)
	}
}

// The certification of the appliance signing key, checked with the key
// policy, passes only for a key bound to it.
func TestVerifyCertificationBinding(t *testing.T) {
	ctx := context.Background()
	tpm := openSim(t)
	akBlob, ak := newAK(t, tpm)
	name, _ := akBlob.Name()
	values, err := attest.ReadPCRs(ctx, tpm, clientPCRs)
	if err != nil {
		t.Fatal(err)
	}
	keyPolicy := mustPolicy(t, values)
	certify := func(pcrs []int) *attest.Certification {
		t.Helper()
		blob, err := attest.CreateSigningKey(ctx, tpm, pcrs)
		if err != nil {
			t.Fatal(err)
		}
		key, err := attest.LoadSigningKey(ctx, tpm, blob)
		if err != nil {
			t.Fatal(err)
		}
		defer key.Close()
		c, err := attest.Certify(ctx, ak, key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	bound, unbound, bound7 := certify(clientPCRs), certify(nil), certify([]int{7})

	if _, b, err := attest.VerifyCertificationPolicy(bound, name, keyPolicy); err != nil || b != attest.KeyBoundToPolicy {
		t.Fatalf("bound key with its policy: %v, %q", err, b)
	}
	if _, b, err := attest.VerifyCertificationPolicy(bound, name, nil); err != nil || b != attest.KeyPolicyUnchecked {
		t.Fatalf("bound key without a policy: %v, %q", err, b)
	}
	if _, b, err := attest.VerifyCertificationPolicy(unbound, name, nil); err != nil || b != attest.KeyNotBound {
		t.Fatalf("unbound key without a policy: %v, %q", err, b)
	}
	if _, err := attest.VerifyCertification(unbound, name); err != nil {
		t.Fatalf("VerifyCertification (no policy) of an unbound key: %v", err)
	}
	for n, c := range map[string]*attest.Certification{"empty authPolicy": unbound, "another policy": bound7} {
		if _, _, err := attest.VerifyCertificationPolicy(c, name, keyPolicy); !errors.Is(err, attest.ErrKeyNotBound) {
			t.Errorf("%s: %v, want ErrKeyNotBound", n, err)
		}
	}
}
