package attest

// The boot-state binding of the appliance's TPM keys, prover side: the
// template of a PCR-bound key, the policy session that lets it sign, and
// the PCR list its blob records (see keypolicy.go).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrKeyPCRsChanged: the TPM refused to sign with a PCR-bound key because
// the PCRs no longer hold the values the key was bound to when it was made
// (another boot state: changed firmware, boot chain or Secure Boot
// configuration, or another operating system on the same TPM).
var ErrKeyPCRsChanged = errors.New("attest: the PCRs no longer hold the values this TPM key is bound to (another boot state)")

// keyPCRs checks and normalises a key's PCR selection: sorted, without
// duplicates, each in 0..23. Empty means no binding.
func keyPCRs(pcrs []int) ([]int, error) {
	out := slices.Clone(pcrs)
	slices.Sort(out)
	out = slices.Compact(out)
	for _, i := range out {
		if i < 0 || i > MaxPCR {
			return nil, fmt.Errorf("%w: PCR %d", ErrNoPCRs, i)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// samePCRs reports whether a blob's PCR list is the selection pcrs.
func samePCRs(blob, pcrs []int) bool {
	n, err := keyPCRs(pcrs)
	return err == nil && slices.Equal(blob, n)
}

// boundTemplate returns base bound to the current values of pcrs: with
// pcrs, userWithAuth clear and authPolicy = TPM2_PolicyPCR over their
// values now; without, base unchanged (signs with the empty password).
func boundTemplate(ctx context.Context, tpm transport.TPM, base tpm2.TPMTPublic, pcrs []int) (tpm2.TPMTPublic, error) {
	if len(pcrs) == 0 {
		return base, nil
	}
	values, err := ReadPCRs(ctx, tpm, pcrs)
	if err != nil {
		return base, err
	}
	digest, err := PCRPolicyDigest(values)
	if err != nil {
		return base, err
	}
	t := base
	t.ObjectAttributes.UserWithAuth = false
	t.AuthPolicy = tpm2.TPM2BDigest{Buffer: digest}
	return t, nil
}

// keyAuth returns the session that authorises a USER-role command (TPM2_Sign)
// with a key bound to pcrs: a policy session that ran TPM2_PolicyPCR over
// them, or the empty password for an unbound key. Call done after the
// command.
func keyAuth(tpm transport.TPM, pcrs []int) (auth tpm2.Session, done func(), err error) {
	if len(pcrs) == 0 {
		return tpm2.PasswordAuth(nil), func() {}, nil
	}
	sess, closer, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: start policy session: %w", err)
	}
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(pcrs)}).Execute(tpm); err != nil {
		_ = closer()
		return nil, nil, fmt.Errorf("attest: TPM2_PolicyPCR: %w", err)
	}
	return sess, func() { _ = closer() }, nil
}

// signErr maps the TPM's refusal of a bound key's policy to
// [ErrKeyPCRsChanged].
func signErr(what string, err error) error {
	if errors.Is(err, tpm2.TPMRCPolicyFail) || errors.Is(err, tpm2.TPMRCValue) {
		return fmt.Errorf("%s: %w (%v)", what, ErrKeyPCRsChanged, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// appendPCRs appends a blob's PCR list: one count byte, then one byte per PCR.
func appendPCRs(out []byte, pcrs []int) []byte {
	out = append(out, byte(len(pcrs)))
	for _, i := range pcrs {
		out = append(out, byte(i))
	}
	return out
}

// cutPCRs reads what appendPCRs wrote; the list must be a normalised
// selection.
func cutPCRs(b []byte) (pcrs []int, rest []byte, ok bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) || b[0] == 0 {
		return nil, nil, false
	}
	n := int(b[0])
	for _, v := range b[1 : 1+n] {
		pcrs = append(pcrs, int(v))
	}
	norm, err := keyPCRs(pcrs)
	if err != nil || !slices.Equal(norm, pcrs) {
		return nil, nil, false
	}
	return pcrs, b[1+n:], true
}

// checkBlobBinding checks that a blob's public area agrees with its PCR
// list: a bound key (PCRs listed) must be usable only through a policy.
func checkBlobBinding(pub *tpm2.TPMTPublic, pcrs []int) error {
	if len(pcrs) > 0 && (pub.ObjectAttributes.UserWithAuth || len(pub.AuthPolicy.Buffer) != 32) {
		return errors.New("the blob lists PCRs but its key is not bound by a policy")
	}
	return nil
}

// marshalKeyBlob is the blob layout the Vault client key and the appliance
// signing key share: magic, version 1, then the public and private areas
// each with a 2-byte big-endian length; a key bound to PCRs is version 2
// and adds the PCR count (one byte) and the PCR indices (one byte each,
// increasing). bad is the kind's error.
func marshalKeyBlob(magic string, bad error, pub, priv []byte, pcrs []int) ([]byte, error) {
	if len(pub) == 0 || len(priv) == 0 || len(pub) > 0xffff || len(priv) > 0xffff {
		return nil, bad
	}
	pcrs, err := keyPCRs(pcrs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", bad, err)
	}
	version := byte(1)
	if len(pcrs) > 0 {
		version = 2
	}
	out := append([]byte(magic), version)
	out = binary.BigEndian.AppendUint16(out, uint16(len(pub)))
	out = append(out, pub...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(priv)))
	out = append(out, priv...)
	if version == 2 {
		out = appendPCRs(out, pcrs)
	}
	return out, nil
}

// parseKeyBlob decodes what marshalKeyBlob wrote with magic, checks the
// public area with parsePublic (the right kind of key) and its binding to
// the PCRs the blob names, and returns copies of the areas.
func parseKeyBlob(data []byte, magic string, bad error, parsePublic func([]byte) (*tpm2.TPMTPublic, error)) (pub, priv []byte, pcrs []int, err error) {
	rest, ok := bytes.CutPrefix(data, []byte(magic))
	if !ok || len(rest) == 0 || (rest[0] != 1 && rest[0] != 2) {
		return nil, nil, nil, fmt.Errorf("%w: unknown header", bad)
	}
	version := rest[0]
	pub, rest, ok = cut16(rest[1:])
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: truncated public area", bad)
	}
	priv, rest, ok = cut16(rest)
	if !ok || len(priv) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: bad private area", bad)
	}
	if version == 2 {
		if pcrs, rest, ok = cutPCRs(rest); !ok {
			return nil, nil, nil, fmt.Errorf("%w: bad PCR list", bad)
		}
	}
	if len(rest) != 0 {
		return nil, nil, nil, fmt.Errorf("%w: trailing bytes", bad)
	}
	tp, err := parsePublic(pub)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", bad, err)
	}
	if err := checkBlobBinding(tp, pcrs); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", bad, err)
	}
	return bytes.Clone(pub), bytes.Clone(priv), pcrs, nil
}
