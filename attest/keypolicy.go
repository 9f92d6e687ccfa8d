package attest

// The boot-state binding of the appliance's TPM keys (the Vault client key
// and the appliance signing key), verifier side: pure, like verify.go.
//
// A key made in the TPM with an empty password and userWithAuth set signs
// for anyone who can send the TPM commands: root on the host, or another
// operating system booted on the same machine. Such a key proves only
// "this TPM", not "this appliance in its measured state". Keywarden makes
// both keys with userWithAuth CLEAR and authPolicy = TPM2_PolicyPCR over the
// PCRs the root key is sealed to (tpm.pcrs), with the values they held when
// the key was made: the TPM then lets the key sign only while the machine
// is in that boot state, the same condition under which the root key
// unseals. Without tpm.pcrs (dev mode, tpm.allow_no_pcr_policy) the keys
// are made as before, and the verifiers say so ([KeyNotBound]).

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// KeyBinding says what [VerifyClientKey] and [VerifyCertificationPolicy]
// learned about the boot-state binding of a TPM key.
type KeyBinding string

const (
	// KeyBoundToPolicy: the key is usable only through TPM2_PolicyPCR over
	// exactly the PCR values of the verifier's key policy (one of their
	// combinations), and not with its password.
	KeyBoundToPolicy KeyBinding = "pcr_policy"
	// KeyPolicyUnchecked: the key is usable only through a policy (its
	// password does not authorise signing), but the verifier gave no key
	// policy to compare it with.
	KeyPolicyUnchecked KeyBinding = "policy_unchecked"
	// KeyNotBound: the key signs with its (empty) password: anyone with
	// access to this TPM, in any boot state, can use it. Keys made without
	// tpm.pcrs (dev mode, tpm.allow_no_pcr_policy) and keys made before
	// the binding existed are such keys.
	KeyNotBound KeyBinding = "not_bound"
)

// ErrKeyNotBound: given a key policy, the verifier found a key that is
// usable without it: an empty authPolicy, userWithAuth set (the password
// alone authorises signing), or a policy other than TPM2_PolicyPCR over the
// key policy's values.
var ErrKeyNotBound = &VerifyError{Reason: "key_not_bound"}

// maxPolicyCombinations bounds the PCR value combinations a key policy may
// expand to (each PCR may allow several values).
const maxPolicyCombinations = 256

// PCRPolicyDigest returns the authPolicy of a key bound with
// TPM2_PolicyPCR to the given SHA-256 PCR values: the policy digest of one
// PolicyPCR over the selection of the values' indices, with the digest of
// the values concatenated in index order.
func PCRPolicyDigest(values map[int][]byte) ([]byte, error) {
	if len(values) == 0 {
		return nil, refuse(ErrNoPolicy, "no PCR values", nil)
	}
	idx := make([]int, 0, len(values))
	for i, v := range values {
		if i < 0 || i > MaxPCR || len(v) != 32 {
			return nil, refuse(ErrBadPolicy, fmt.Sprintf("PCR %d: index outside 0..%d or a value of %d bytes", i, MaxPCR, len(v)), nil)
		}
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var cat bytes.Buffer
	sel := make([]uint, len(idx))
	for n, i := range idx {
		cat.Write(values[i])
		sel[n] = uint(i)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	pcrDigest := sha256.Sum256(cat.Bytes())
	err = tpm2.PolicyPCR{
		Pcrs: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
			Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(sel...),
		}}},
		PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest[:]},
	}.Update(calc)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(calc.Hash().Digest), nil
}

// policyDigests returns the authPolicy of every combination of the
// policy's allowed values.
func policyDigests(p *Policy) ([][]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	idx := p.Indices()
	n := 1
	for _, i := range idx {
		n *= len(p.PCRs[i])
		if n > maxPolicyCombinations {
			return nil, refuse(ErrBadOptions, fmt.Sprintf("the key policy allows more than %d combinations of PCR values", maxPolicyCombinations), nil)
		}
	}
	var out [][]byte
	pick := make(map[int][]byte, len(idx))
	var walk func(k int) error
	walk = func(k int) error {
		if k == len(idx) {
			d, err := PCRPolicyDigest(pick)
			if err != nil {
				return err
			}
			out = append(out, d)
			return nil
		}
		for _, v := range p.PCRs[idx[k]] {
			pick[idx[k]] = v
			if err := walk(k + 1); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(0)
}

// checkKeyBinding classifies a key's public area. With a key policy it
// refuses ([ErrKeyNotBound]) any key that is not bound to it; without one
// it only reports.
func checkKeyBinding(pub *tpm2.TPMTPublic, keyPolicy *Policy) (KeyBinding, error) {
	policyOnly := !pub.ObjectAttributes.UserWithAuth && len(pub.AuthPolicy.Buffer) > 0
	if keyPolicy == nil {
		if policyOnly {
			return KeyPolicyUnchecked, nil
		}
		return KeyNotBound, nil
	}
	want, err := policyDigests(keyPolicy)
	if err != nil {
		return "", err
	}
	switch {
	case pub.ObjectAttributes.UserWithAuth:
		return "", refuse(ErrKeyNotBound, "the key signs with its password (userWithAuth set): any boot state of this TPM can use it", nil)
	case len(pub.AuthPolicy.Buffer) == 0:
		return "", refuse(ErrKeyNotBound, "the key has no authorization policy", nil)
	}
	for _, d := range want {
		if subtle.ConstantTimeCompare(d, pub.AuthPolicy.Buffer) == 1 {
			return KeyBoundToPolicy, nil
		}
	}
	return "", refuse(ErrKeyNotBound, fmt.Sprintf("the key's policy %x is not TPM2_PolicyPCR over the key policy's PCR values", pub.AuthPolicy.Buffer), nil)
}
