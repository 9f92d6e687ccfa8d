package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
)

// EvidenceFormat tags [Evidence] of this version.
const EvidenceFormat = "keywarden-evidence-v1"

// QuoteLabel starts the hashed qualifying data of every quote (decisions/10).
const QuoteLabel = "keywarden-quote-v1"

// Bounds on nonces, PCR indices and evidence.
const (
	MinNonce = 16 // bytes
	MaxNonce = 64 // bytes
	// MaxPCR is the highest PCR index Keywarden quotes or accepts in a
	// policy (the PC Client profile's 24 PCRs, 0..23).
	MaxPCR = 23
	// MaxEvidenceSize bounds a serialized [Evidence] that [ParseEvidence]
	// accepts; the event log is its largest part.
	MaxEvidenceSize = 4 << 20
	// MaxEventLog bounds the event log the prover includes.
	MaxEventLog = 2 << 20
)

// Evidence is what the appliance sends to prove itself: a TPM quote and
// everything a verifier needs to check it. Byte fields are base64 in JSON.
// Only the fields [Verify] checks are evidence; the rest is reported.
type Evidence struct {
	// Format is [EvidenceFormat].
	Format string `json:"format"`
	// Quote is the TPMS_ATTEST structure exactly as the TPM signed it.
	Quote []byte `json:"quote"`
	// Signature is the TPMT_SIGNATURE over Quote.
	Signature []byte `json:"signature"`
	// AKPublic is the attestation key's TPMT_PUBLIC area.
	AKPublic []byte `json:"akPublic"`
	// PCRBank is the hash bank of PCRs: always "sha256".
	PCRBank string `json:"pcrBank"`
	// PCRs are the quoted PCR values by index (JSON keys "0".."23").
	PCRs map[int][]byte `json:"pcrs"`
	// BoundKey is the public key the quote binds (the appliance's HPKE
	// public key, or its TLS SubjectPublicKeyInfo DER).
	BoundKey []byte `json:"boundKey"`
	// EKCertificates are the endorsement key certificates (DER) found in
	// the TPM's NV: the ECC one first, then the RSA one. They identify the
	// TPM's maker; they say nothing about the AK unless the AK was
	// enrolled against the EK (see [MakeEnrollChallenge]).
	EKCertificates [][]byte `json:"ekCertificates,omitempty"`
	// EKChain holds intermediate CA certificates (DER) the TPM's maker
	// stored in NV for the EK certificates.
	EKChain [][]byte `json:"ekChain,omitempty"`
	// EventLog is the TCG event log (binary_bios_measurements) when the
	// appliance could read it. [Verify] does not replay it.
	EventLog []byte `json:"eventLog,omitempty"`
	// Version and BinaryDigest are what the running build says about
	// itself. They are informational unless the boot measured the binary
	// into a quoted PCR that the policy pins.
	Version      string `json:"version,omitempty"`
	BinaryDigest string `json:"binaryDigest,omitempty"`
}

// ExtraData is the quote's qualifying data for a nonce and a bound public
// key: SHA-256("keywarden-quote-v1" ‖ nonce ‖ SHA-256(boundKey)). TPM2B_DATA
// holds one digest, so both are folded into it; the nonce is 16..64 bytes
// and the key's hash has a fixed length, so the concatenation is
// unambiguous.
func ExtraData(nonce, boundKey []byte) []byte {
	kh := sha256.Sum256(boundKey)
	h := sha256.New()
	h.Write([]byte(QuoteLabel))
	h.Write(nonce)
	h.Write(kh[:])
	return h.Sum(nil)
}

// ParseEvidence decodes JSON evidence of at most [MaxEvidenceSize] bytes.
// It checks the format tag only; [Verify] checks the rest.
func ParseEvidence(data []byte) (*Evidence, error) {
	if len(data) > MaxEvidenceSize {
		return nil, refuse(ErrMalformed, fmt.Sprintf("evidence is %d bytes, more than %d", len(data), MaxEvidenceSize), nil)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var ev Evidence
	if err := dec.Decode(&ev); err != nil {
		return nil, refuse(ErrMalformed, "evidence is not valid JSON", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, refuse(ErrMalformed, "trailing data after the evidence", nil)
	}
	if ev.Format != EvidenceFormat {
		return nil, refuse(ErrMalformed, fmt.Sprintf("format %q, want %q", ev.Format, EvidenceFormat), nil)
	}
	return &ev, nil
}
