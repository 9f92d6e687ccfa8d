package attest

// This file is the verifier. It is a pure function of the evidence and the
// options: no TPM, no file, no network, and nothing from the prover's files
// (ak.go, quote.go, ek.go, enroll_tpm.go). TestVerifierIsPure holds it to
// that.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// VerifyOptions say what the verifier expects. Nonce and Policy are
// required; the zero value of every other field is documented with it.
type VerifyOptions struct {
	// Nonce is the fresh random value (16..64 bytes) the verifier sent with
	// its request. Guards against replay: a recorded quote of a machine
	// that was good once is refused.
	Nonce []byte
	// BoundKey is the public key the verifier expects the appliance to
	// hold: the TLS SubjectPublicKeyInfo DER it saw on the connection, or
	// the HPKE public key it is about to seal to. Guards against a
	// machine-in-the-middle that relays a genuine quote but terminates TLS
	// (or hands out its own HPKE key) itself.
	//
	// Nil means "learn the key": the key the evidence carries is checked
	// against the quote and returned as [Facts.BoundKey]; the caller must
	// then use that key and no other.
	BoundKey []byte
	// Policy is the set of PCR values the verifier accepts. Required, with
	// at least one PCR (decisions/11); guards against a machine running
	// other firmware, boot chain or software.
	Policy *Policy
	// AKName pins the attestation key by its TPM Name ([AKName],
	// [AKBlob.Name]), recorded when the appliance was initialised or
	// enrolled. Guards against evidence signed by any other key, including
	// a software key dressed up as a TPM key.
	//
	// Nil means not pinned: the checks then prove that the evidence is
	// consistent and signed by the key it names, NOT that this key lives in
	// a TPM. [Facts.AKPinned] reports it. Pin the AK in production.
	AKName []byte
	// EKRoots, when set, requires an EK certificate in the evidence that
	// chains to one of these roots (through the evidence's EKChain). It
	// shows which TPM maker vouches for the TPM; it binds the AK only
	// together with enrollment ([MakeEnrollChallenge]) and AKName.
	// Nil skips the check and leaves [Facts.EKCertificate] nil.
	EKRoots *x509.CertPool
	// Now is the time for checking certificate validity. Zero means
	// time.Now().
	Now time.Time
	// KeyPolicy, for [VerifyClientKey] only, is the PCR values the client
	// key must be bound to: the appliance's sealing PCRs (tpm.pcrs, which
	// may differ from the quoted tpm.attest_pcrs) and the values they may
	// hold. Set, a key whose authPolicy is not TPM2_PolicyPCR over one
	// combination of them, or that signs with its password, is refused
	// ([ErrKeyNotBound]). Nil accepts any key and reports its binding in
	// [ClientKeyFacts.KeyBinding]. [Verify] ignores it.
	KeyPolicy *Policy
}

// Facts are what [Verify] established. They are returned only when every
// check passed.
type Facts struct {
	// AKName is the TPM Name of the key that signed the quote.
	AKName []byte
	// AKPinned is true when the key was compared with VerifyOptions.AKName.
	AKPinned bool
	// BoundKey is the public key the quote binds: the verifier's own
	// VerifyOptions.BoundKey, or the evidence's when that was nil.
	BoundKey []byte
	// PCRs are every quoted PCR (SHA-256 bank) with its value, each checked
	// against the quote's digest; those the policy names are within it.
	PCRs map[int][]byte
	// ClockInfo and FirmwareVersion come from the signed quote. ResetCount
	// and RestartCount count the TPM's reboots; Safe is the TPM's
	// assurance that its clock never went backwards.
	Clock           uint64
	ResetCount      uint32
	RestartCount    uint32
	Safe            bool
	FirmwareVersion uint64
	// EKCertificate is the EK certificate that chained to
	// VerifyOptions.EKRoots; nil when no roots were given.
	EKCertificate *x509.Certificate

	// Reported, not verified: the appliance's own claims, copied from the
	// evidence. They become facts only through a policy on a PCR into which
	// the boot measured them.
	ReportedVersion      string
	ReportedBinaryDigest string
	EventLog             []byte
}

// Verify checks evidence against the verifier's expectations and returns
// the facts it established, or a [*VerifyError] naming the first check that
// failed. It is pure: no TPM, no I/O, safe for concurrent use. The checks,
// in order:
//
//  1. Options: the nonce is 16..64 bytes ([ErrBadOptions]); the policy is
//     valid and names at least one PCR ([ErrNoPolicy], [ErrBadPolicy]).
//  2. Shape: the format tag is [EvidenceFormat], the PCR bank is "sha256",
//     and sizes are within bounds ([ErrMalformed]).
//  3. Attestation key: its TPMT_PUBLIC decodes with no trailing bytes and is
//     a fixedTPM, sensitiveDataOrigin, restricted signing ECC P-256 key
//     with the ECDSA-SHA256 scheme and SHA-256 names ([ErrBadAK]).
//  4. Pin: when VerifyOptions.AKName is set, the key's Name equals it
//     ([ErrAKMismatch]).
//  5. Signature: the TPMT_SIGNATURE is ECDSA with SHA-256 and verifies over
//     SHA-256(quote) under the attestation key ([ErrBadSignature]).
//  6. Structure: the signed bytes decode as TPMS_ATTEST with no trailing
//     bytes, magic TPM_GENERATED_VALUE and type TPM_ST_ATTEST_QUOTE
//     ([ErrNotAQuote]).
//  7. Freshness and key binding: the quote's extraData equals
//     [ExtraData](nonce, bound key). If it instead equals ExtraData(nonce,
//     evidence's key) the quote is fresh but binds another key
//     ([ErrBoundKeyMismatch]); otherwise it was made for another nonce
//     ([ErrNonceMismatch]).
//  8. PCR digest: the quote selects exactly one bank, SHA-256, with PCRs in
//     0..23; the evidence carries a 32-byte value for each selected PCR and
//     no other; SHA-256 of the values in selection order equals the quote's
//     pcrDigest ([ErrPCRDigestMismatch]).
//  9. Coverage: every PCR the policy names is in the quote's selection
//     ([ErrPCRNotQuoted]).
//  10. Values: each such PCR holds one of the values the policy allows
//     ([ErrPCRNotAllowed]).
//  11. EK (only when VerifyOptions.EKRoots is set): an EK certificate is
//     present ([ErrNoEKCertificate]) and one of them chains to the roots,
//     with the evidence's EKChain as intermediates ([ErrEKUntrusted]).
//
// Not checked: the event log (reported in [Facts.EventLog], not replayed),
// the version and binary digest (reported), the quote's clock (freshness
// comes from the nonce), and the AK's qualified name.
func Verify(ev *Evidence, opts VerifyOptions) (*Facts, error) {
	// 1. Options.
	if n := len(opts.Nonce); n < MinNonce || n > MaxNonce {
		return nil, refuse(ErrBadOptions, fmt.Sprintf("nonce of %d bytes, want %d..%d", n, MinNonce, MaxNonce), nil)
	}
	if err := opts.Policy.Validate(); err != nil {
		return nil, err
	}

	// 2. Shape.
	if ev == nil {
		return nil, refuse(ErrMalformed, "no evidence", nil)
	}
	if ev.Format != EvidenceFormat {
		return nil, refuse(ErrMalformed, fmt.Sprintf("format %q, want %q", ev.Format, EvidenceFormat), nil)
	}
	if ev.PCRBank != "sha256" {
		return nil, refuse(ErrMalformed, fmt.Sprintf("PCR bank %q, want sha256", ev.PCRBank), nil)
	}
	if len(ev.Quote) == 0 || len(ev.Quote) > 4096 || len(ev.Signature) == 0 || len(ev.Signature) > 1024 {
		return nil, refuse(ErrMalformed, "quote or signature missing or too large", nil)
	}
	if len(ev.PCRs) > MaxPCR+1 {
		return nil, refuse(ErrMalformed, fmt.Sprintf("%d PCR values", len(ev.PCRs)), nil)
	}

	// 3. Attestation key.
	akPub, akKey, err := parseAKPublic(ev.AKPublic)
	if err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(akPub)
	if err != nil {
		return nil, refuse(ErrBadAK, "cannot compute the key's name", err)
	}
	facts := &Facts{AKName: name.Buffer}

	// 4. Pin.
	if opts.AKName != nil {
		if !bytes.Equal(name.Buffer, opts.AKName) {
			return nil, refuse(ErrAKMismatch, fmt.Sprintf("key %s is not the pinned %s", hex.EncodeToString(name.Buffer), hex.EncodeToString(opts.AKName)), nil)
		}
		facts.AKPinned = true
	}

	// 5. Signature.
	if err := verifySignature(akKey, ev.Quote, ev.Signature); err != nil {
		return nil, err
	}

	// 6. Structure.
	att, err := unmarshalExact[tpm2.TPMSAttest](ev.Quote)
	if err != nil {
		return nil, refuse(ErrNotAQuote, "signed data is not a TPMS_ATTEST", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return nil, refuse(ErrNotAQuote, fmt.Sprintf("magic %#x, want TPM_GENERATED_VALUE", uint32(att.Magic)), nil)
	}
	if att.Type != tpm2.TPMSTAttestQuote {
		return nil, refuse(ErrNotAQuote, fmt.Sprintf("attestation type %#x, want TPM_ST_ATTEST_QUOTE", uint16(att.Type)), nil)
	}
	quote, err := att.Attested.Quote()
	if err != nil {
		return nil, refuse(ErrNotAQuote, "no quote information", err)
	}

	// 7. Freshness and key binding.
	boundKey := opts.BoundKey
	if boundKey == nil {
		boundKey = ev.BoundKey
	}
	extra := att.ExtraData.Buffer
	if subtle.ConstantTimeCompare(extra, ExtraData(opts.Nonce, boundKey)) != 1 {
		if opts.BoundKey != nil && subtle.ConstantTimeCompare(extra, ExtraData(opts.Nonce, ev.BoundKey)) == 1 {
			return nil, refuse(ErrBoundKeyMismatch, "the quote binds another public key", nil)
		}
		return nil, refuse(ErrNonceMismatch, "the quote's qualifying data does not commit to this nonce and bound key", nil)
	}
	facts.BoundKey = bytes.Clone(boundKey)

	// 8. PCR digest.
	selected, err := quotedPCRs(&quote.PCRSelect)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	facts.PCRs = make(map[int][]byte, len(selected))
	for _, i := range selected {
		v, ok := ev.PCRs[i]
		if !ok || len(v) != sha256.Size {
			return nil, refuse(ErrPCRDigestMismatch, fmt.Sprintf("no 32-byte value for quoted PCR %d", i), nil)
		}
		h.Write(v)
		facts.PCRs[i] = bytes.Clone(v)
	}
	if len(ev.PCRs) != len(selected) {
		return nil, refuse(ErrPCRDigestMismatch, "the evidence carries values for PCRs the quote does not cover", nil)
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), quote.PCRDigest.Buffer) != 1 {
		return nil, refuse(ErrPCRDigestMismatch, "the PCR values are not the ones the TPM quoted", nil)
	}

	// 9 and 10. Coverage and values.
	for _, i := range opts.Policy.Indices() {
		v, ok := facts.PCRs[i]
		if !ok {
			return nil, refuse(ErrPCRNotQuoted, fmt.Sprintf("policy PCR %d is not in the quote", i), nil)
		}
		if !opts.Policy.Allows(i, v) {
			return nil, refuse(ErrPCRNotAllowed, fmt.Sprintf("PCR %d = %s is not allowed by the policy", i, hex.EncodeToString(v)), nil)
		}
	}

	// 11. EK.
	if opts.EKRoots != nil {
		cert, err := verifyEKChain(ev, opts.EKRoots, opts.Now)
		if err != nil {
			return nil, err
		}
		facts.EKCertificate = cert
	}

	facts.Clock = att.ClockInfo.Clock
	facts.ResetCount = att.ClockInfo.ResetCount
	facts.RestartCount = att.ClockInfo.RestartCount
	facts.Safe = bool(att.ClockInfo.Safe)
	facts.FirmwareVersion = att.FirmwareVersion
	facts.ReportedVersion = ev.Version
	facts.ReportedBinaryDigest = ev.BinaryDigest
	facts.EventLog = ev.EventLog
	return facts, nil
}

// verifySignature checks a TPMT_SIGNATURE (ECDSA, SHA-256) over msg.
func verifySignature(key *ecdsa.PublicKey, msg, sigBytes []byte) error {
	sig, err := unmarshalExact[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		return refuse(ErrBadSignature, "signature does not decode", err)
	}
	if sig.SigAlg != tpm2.TPMAlgECDSA {
		return refuse(ErrBadSignature, fmt.Sprintf("signature algorithm %v, want ECDSA", sig.SigAlg), nil)
	}
	e, err := sig.Signature.ECDSA()
	if err != nil {
		return refuse(ErrBadSignature, "signature does not decode", err)
	}
	if e.Hash != tpm2.TPMAlgSHA256 {
		return refuse(ErrBadSignature, fmt.Sprintf("signature hash %v, want SHA-256", e.Hash), nil)
	}
	digest := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(e.SignatureR.Buffer)
	s := new(big.Int).SetBytes(e.SignatureS.Buffer)
	if !ecdsa.Verify(key, digest[:], r, s) {
		return refuse(ErrBadSignature, "the quote's signature does not verify under the attestation key", nil)
	}
	return nil
}

// quotedPCRs returns the PCR indices a quote selects, in the order the TPM
// hashed them, after checking that it selects the SHA-256 bank only.
func quotedPCRs(sel *tpm2.TPMLPCRSelection) ([]int, error) {
	if len(sel.PCRSelections) != 1 || sel.PCRSelections[0].Hash != tpm2.TPMAlgSHA256 {
		return nil, refuse(ErrPCRDigestMismatch, "the quote must select exactly one PCR bank, SHA-256", nil)
	}
	var out []int
	for byteIdx, b := range sel.PCRSelections[0].PCRSelect {
		for bit := 0; bit < 8; bit++ {
			if b&(1<<bit) == 0 {
				continue
			}
			i := byteIdx*8 + bit
			if i > MaxPCR {
				return nil, refuse(ErrPCRDigestMismatch, fmt.Sprintf("the quote selects PCR %d, beyond %d", i, MaxPCR), nil)
			}
			out = append(out, i)
		}
	}
	return out, nil
}

// verifyEKChain finds an EK certificate in the evidence that chains to
// roots.
func verifyEKChain(ev *Evidence, roots *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	if len(ev.EKCertificates) == 0 {
		return nil, refuse(ErrNoEKCertificate, "the evidence has no EK certificate", nil)
	}
	// Intermediates are only candidates for path building: one that does
	// not parse is skipped, and a chain that needed it fails below.
	inter := x509.NewCertPool()
	for _, der := range ev.EKChain {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if now.IsZero() {
		now = time.Now()
	}
	var lastErr error
	for _, der := range ev.EKCertificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			lastErr = err
			continue
		}
		_, err = c.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			CurrentTime:   now,
			// EK certificates carry the TCG EK purpose (2.23.133.8.1) or
			// none; the purpose is not what is being checked here.
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, refuse(ErrEKUntrusted, "no EK certificate chains to the given roots", lastErr)
}
