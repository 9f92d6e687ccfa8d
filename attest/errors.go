package attest

import (
	"errors"
	"net/http"

	"github.com/keywarden/keywarden/internal/apierr"
)

// Reason names why [Verify] refused a piece of evidence. Reasons are stable
// strings for programs, logs and metrics labels.
type Reason string

// VerifyError is the error [Verify] (and [ParsePolicy]) returns: a named
// [Reason], a public detail, and the underlying cause when there is one.
// errors.Is matches it against the sentinels below by Reason, so
// errors.Is(err, attest.ErrNonceMismatch) works on any VerifyError with that
// reason. Nothing in a VerifyError is secret.
type VerifyError struct {
	Reason Reason
	Detail string // public, for people: which PCR, which value, which field
	Err    error  // underlying cause (a parse error, an x509 error), or nil
}

func (e *VerifyError) Error() string {
	s := "attest: " + string(e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *VerifyError) Unwrap() error { return e.Err }

// Is matches another *VerifyError by Reason.
func (e *VerifyError) Is(target error) bool {
	t, ok := target.(*VerifyError)
	return ok && t.Reason == e.Reason
}

func refuse(sentinel *VerifyError, detail string, cause error) *VerifyError {
	return &VerifyError{Reason: sentinel.Reason, Detail: detail, Err: cause}
}

// Sentinels for [Verify]'s refusals; compare with errors.Is. Each one is one
// check in [Verify]'s documentation.
var (
	// ErrBadOptions: the verifier's own options are unusable (a nonce
	// outside 16..64 bytes). A programming error, not an attack.
	ErrBadOptions = &VerifyError{Reason: "bad_options"}
	// ErrNoPolicy: the policy names no PCR. A quote checked against nothing
	// proves only that some TPM signed something (decisions/11).
	ErrNoPolicy = &VerifyError{Reason: "no_policy"}
	// ErrBadPolicy: the policy file cannot be parsed or is inconsistent.
	ErrBadPolicy = &VerifyError{Reason: "bad_policy"}
	// ErrMalformed: the evidence cannot be decoded, has the wrong format
	// tag, or carries fields beyond their bounds.
	ErrMalformed = &VerifyError{Reason: "malformed_evidence"}
	// ErrBadAK: the attestation key's public area is not a TPM-resident,
	// restricted ECDSA P-256/SHA-256 signing key. A key that is not
	// restricted can sign a forged quote structure with TPM2_Sign.
	ErrBadAK = &VerifyError{Reason: "bad_attestation_key"}
	// ErrAKMismatch: the evidence's attestation key is not the pinned one.
	ErrAKMismatch = &VerifyError{Reason: "ak_mismatch"}
	// ErrBadSignature: the quote's signature does not verify under the
	// attestation key.
	ErrBadSignature = &VerifyError{Reason: "bad_signature"}
	// ErrNotAQuote: the signed structure does not start with
	// TPM_GENERATED_VALUE or is not of type TPM_ST_ATTEST_QUOTE.
	ErrNotAQuote = &VerifyError{Reason: "not_a_quote"}
	// ErrNonceMismatch: the quote was not made for this nonce: a stale or
	// replayed quote, or one made for another verifier's challenge.
	ErrNonceMismatch = &VerifyError{Reason: "nonce_mismatch"}
	// ErrBoundKeyMismatch: the quote is fresh for this nonce but binds a
	// public key other than the expected one (a swapped TLS or HPKE key).
	ErrBoundKeyMismatch = &VerifyError{Reason: "bound_key_mismatch"}
	// ErrPCRDigestMismatch: the PCR values in the evidence are not the ones
	// the TPM quoted (changed, missing or added values), or the quote
	// selects a bank other than SHA-256.
	ErrPCRDigestMismatch = &VerifyError{Reason: "pcr_digest_mismatch"}
	// ErrPCRNotQuoted: the policy names a PCR that the quote does not cover.
	ErrPCRNotQuoted = &VerifyError{Reason: "pcr_not_quoted"}
	// ErrPCRNotAllowed: a quoted PCR's value is not one the policy allows.
	ErrPCRNotAllowed = &VerifyError{Reason: "pcr_not_allowed"}
	// ErrNoEKCertificate: EK roots were given but the evidence has no EK
	// certificate.
	ErrNoEKCertificate = &VerifyError{Reason: "no_ek_certificate"}
	// ErrEKUntrusted: no EK certificate in the evidence chains to the
	// given roots.
	ErrEKUntrusted = &VerifyError{Reason: "ek_untrusted"}
	// ErrCredentialMismatch: the answer to an enrollment challenge is not
	// the secret the challenge carried: the attestation key is not resident
	// in the TPM that holds the certified EK.
	ErrCredentialMismatch = &VerifyError{Reason: "credential_mismatch"}
)

// Errors of the prover side. The request-shaped ones are *apierr.Error so
// an HTTP handler can return them as they are.
var (
	// ErrBadNonce: the client's nonce is not 16 to 64 bytes.
	ErrBadNonce = apierr.New(http.StatusBadRequest, "bad_nonce", "the nonce must be 16 to 64 bytes")
	// ErrNoPCRs: a quote was asked for without a PCR selection, or with a
	// PCR outside 0..23.
	ErrNoPCRs = errors.New("attest: quote needs a PCR selection of 0..23")
	// ErrNoBoundKey: a quote was asked for without a key to bind.
	ErrNoBoundKey = errors.New("attest: quote needs a public key to bind")
	// ErrBadAKBlob: the stored attestation key blob cannot be decoded, or
	// the TPM loaded a key other than the one the blob describes.
	ErrBadAKBlob = errors.New("attest: malformed attestation key blob")
	// ErrAKClosed: the attestation key was flushed from the TPM.
	ErrAKClosed = errors.New("attest: attestation key closed")
)
