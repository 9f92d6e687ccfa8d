package attest

// The client key's verifier: what a CA (or `keywarden vault verify-csr`)
// checks before it issues the appliance's Vault client certificate. Pure,
// like verify.go: no TPM, no file, no network, nothing from the prover's
// files.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// ClientKeyEvidenceFormat tags [ClientKeyEvidence] of this version.
const ClientKeyEvidenceFormat = "keywarden-client-key-v1"

// ClientKeyEvidence is what `keywarden vault csr` writes: a certificate
// request signed by the TPM client key, the attestation key's
// certification of that key (TPM2_Certify), and a quote by the same
// attestation key that binds the key, all over one nonce. Byte fields are
// base64 in JSON.
type ClientKeyEvidence struct {
	// Format is [ClientKeyEvidenceFormat].
	Format string `json:"format"`
	// CSR is the PKCS #10 request (DER), signed by the client key.
	CSR []byte `json:"csr"`
	// Nonce is the nonce the certification and the quote were made over:
	// the CA's own when it gave one, else one the appliance picked.
	Nonce []byte `json:"nonce"`
	// KeyPublic is the client key's TPMT_PUBLIC area.
	KeyPublic []byte `json:"keyPublic"`
	// Certify is the TPMS_ATTEST (TPM_ST_ATTEST_CERTIFY) exactly as the
	// attestation key signed it; CertifySignature its TPMT_SIGNATURE.
	Certify          []byte `json:"certify"`
	CertifySignature []byte `json:"certifySignature"`
	// Quote is a quote by the same attestation key over the same nonce,
	// binding the client key's SubjectPublicKeyInfo.
	Quote *Evidence `json:"quote"`
}

// ClientKeyFacts are what [VerifyClientKey] established.
type ClientKeyFacts struct {
	// CSR is the verified request; issue the certificate for its key.
	CSR *x509.CertificateRequest
	// KeyName is the client key's TPM Name.
	KeyName []byte
	// Quote are the facts of the quote (AK, PCRs), as [Verify] returns them.
	Quote *Facts
	// KeyBinding says whether the key is bound to the boot state:
	// [KeyBoundToPolicy] (checked against VerifyOptions.KeyPolicy),
	// [KeyPolicyUnchecked] (usable only through a policy, no key policy
	// given) or [KeyNotBound] (it signs with its empty password in any boot
	// state of this TPM: dev mode, tpm.allow_no_pcr_policy, or a key made
	// before the binding; make a new one with `keywarden vault csr
	// -new-key`).
	KeyBinding KeyBinding
}

// Refusals of [VerifyClientKey] beyond [Verify]'s.
var (
	// ErrBadCSR: the certificate request does not parse, its signature
	// does not verify, or its key is not ECDSA P-256.
	ErrBadCSR = &VerifyError{Reason: "bad_csr"}
	// ErrBadClientKey: the client key's public area is not a fixedTPM,
	// TPM-generated ECDSA P-256 signing key that cannot decrypt.
	ErrBadClientKey = &VerifyError{Reason: "bad_client_key"}
	// ErrClientKeyMismatch: the TPM key is not the key of the request, or
	// the certification certifies another key.
	ErrClientKeyMismatch = &VerifyError{Reason: "client_key_mismatch"}
)

// ParseClientKeyEvidence decodes JSON client key evidence of at most
// [MaxEvidenceSize] bytes; it checks the format tag only.
func ParseClientKeyEvidence(data []byte) (*ClientKeyEvidence, error) {
	if len(data) > MaxEvidenceSize {
		return nil, refuse(ErrMalformed, fmt.Sprintf("evidence is %d bytes, more than %d", len(data), MaxEvidenceSize), nil)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var ev ClientKeyEvidence
	if err := dec.Decode(&ev); err != nil {
		return nil, refuse(ErrMalformed, "client key evidence is not valid JSON", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, refuse(ErrMalformed, "trailing data after the evidence", nil)
	}
	if ev.Format != ClientKeyEvidenceFormat {
		return nil, refuse(ErrMalformed, fmt.Sprintf("format %q, want %q", ev.Format, ClientKeyEvidenceFormat), nil)
	}
	return &ev, nil
}

// VerifyClientKey checks that the request's key is resident in the
// attested TPM, and returns the facts only when every check passes:
//
//  1. The request parses, its self-signature verifies and its key is ECDSA
//     P-256 ([ErrBadCSR]).
//  2. The TPM key's public area is a fixedTPM, fixedParent,
//     sensitiveDataOrigin ECDSA P-256 signing key that cannot decrypt
//     ([ErrBadClientKey]), and its point is the request's key
//     ([ErrClientKeyMismatch]).
//  3. The quote passes [Verify] with opts, bound to the request's
//     SubjectPublicKeyInfo (opts.BoundKey is replaced by it): the AK is
//     the pinned one, the PCRs are within the policy, the nonce is the
//     verifier's.
//  4. The certification is signed by the quote's attestation key
//     ([ErrBadSignature]), is a TPM-made TPM_ST_ATTEST_CERTIFY
//     ([ErrNotACertification]) over [ExtraData](nonce, request's key)
//     ([ErrNonceMismatch]), and certifies the Name of the TPM key of step 2
//     ([ErrClientKeyMismatch]).
//  5. With opts.KeyPolicy, the TPM key is usable only through
//     TPM2_PolicyPCR over the key policy's values (userWithAuth clear,
//     authPolicy equal to [PCRPolicyDigest] of one combination of them)
//     ([ErrKeyNotBound]); without, the binding is reported in
//     [ClientKeyFacts.KeyBinding].
//
// A key that only software holds cannot pass step 4: only the TPM
// certifies with a restricted AK, and only keys it holds.
func VerifyClientKey(ev *ClientKeyEvidence, opts VerifyOptions) (*ClientKeyFacts, error) {
	if ev == nil || ev.Format != ClientKeyEvidenceFormat || ev.Quote == nil {
		return nil, refuse(ErrMalformed, "no client key evidence, or not of format "+ClientKeyEvidenceFormat, nil)
	}
	if len(ev.Certify) == 0 || len(ev.Certify) > 4096 || len(ev.CertifySignature) == 0 || len(ev.CertifySignature) > 1024 {
		return nil, refuse(ErrMalformed, "certification or its signature missing or too large", nil)
	}

	// 1. The request.
	csr, err := x509.ParseCertificateRequest(ev.CSR)
	if err != nil {
		return nil, refuse(ErrBadCSR, "the certificate request does not parse", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(ErrBadCSR, "the certificate request's signature does not verify", err)
	}
	csrKey, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || csrKey.Curve.Params().Name != "P-256" {
		return nil, refuse(ErrBadCSR, "the certificate request's key is not ECDSA P-256", nil)
	}
	spki := csr.RawSubjectPublicKeyInfo

	// 2. The TPM key.
	keyPub, tpmKey, err := parseClientKeyPublic(ev.KeyPublic)
	if err != nil {
		return nil, err
	}
	if !tpmKey.Equal(csrKey) {
		return nil, refuse(ErrClientKeyMismatch, "the TPM key is not the certificate request's key", nil)
	}
	keyName, err := tpm2.ObjectName(keyPub)
	if err != nil {
		return nil, refuse(ErrBadClientKey, "cannot compute the key's name", err)
	}

	// 3. The quote.
	opts.BoundKey = spki
	facts, err := Verify(ev.Quote, opts)
	if err != nil {
		return nil, err
	}

	// 4. The certification, by the same (now checked) attestation key.
	_, akKey, err := parseAKPublic(ev.Quote.AKPublic)
	if err != nil {
		return nil, err
	}
	if err := verifySignature(akKey, ev.Certify, ev.CertifySignature); err != nil {
		return nil, refuse(ErrBadSignature, "the certification is not signed by the quote's attestation key", err)
	}
	att, err := unmarshalExact[tpm2.TPMSAttest](ev.Certify)
	if err != nil {
		return nil, refuse(ErrNotACertification, "signed data is not a TPMS_ATTEST", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue || att.Type != tpm2.TPMSTAttestCertify {
		return nil, refuse(ErrNotACertification, fmt.Sprintf("magic %#x type %#x, want TPM_GENERATED_VALUE and TPM_ST_ATTEST_CERTIFY", uint32(att.Magic), uint16(att.Type)), nil)
	}
	if subtle.ConstantTimeCompare(att.ExtraData.Buffer, ExtraData(opts.Nonce, spki)) != 1 {
		return nil, refuse(ErrNonceMismatch, "the certification was not made for this nonce and key", nil)
	}
	info, err := att.Attested.Certify()
	if err != nil {
		return nil, refuse(ErrNotACertification, "no certify information", err)
	}
	if !bytes.Equal(info.Name.Buffer, keyName.Buffer) {
		return nil, refuse(ErrClientKeyMismatch, "the certification certifies another key than the certificate request's", nil)
	}

	// 5. The boot-state binding. The Name certified in step 4 covers the
	// public area, so its authPolicy is the TPM's.
	binding, err := checkKeyBinding(keyPub, opts.KeyPolicy)
	if err != nil {
		return nil, err
	}
	return &ClientKeyFacts{CSR: csr, KeyName: keyName.Buffer, Quote: facts, KeyBinding: binding}, nil
}

// parseClientKeyPublic decodes a TPMT_PUBLIC and checks that it is a
// client key: ECC NIST P-256 with SHA-256 names, signing and not
// decrypting, fixedTPM, fixedParent and sensitiveDataOrigin (made in the
// TPM and unable to leave it).
func parseClientKeyPublic(b []byte) (*tpm2.TPMTPublic, *ecdsa.PublicKey, error) {
	if len(b) == 0 || len(b) > maxAKPublic {
		return nil, nil, refuse(ErrMalformed, fmt.Sprintf("client key public area of %d bytes", len(b)), nil)
	}
	pub, err := unmarshalExact[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, nil, refuse(ErrMalformed, "client key public area", err)
	}
	a := pub.ObjectAttributes
	switch {
	case pub.Type != tpm2.TPMAlgECC:
		return nil, nil, refuse(ErrBadClientKey, fmt.Sprintf("key type %v, want ECC", pub.Type), nil)
	case pub.NameAlg != tpm2.TPMAlgSHA256:
		return nil, nil, refuse(ErrBadClientKey, fmt.Sprintf("name algorithm %v, want SHA-256", pub.NameAlg), nil)
	case !a.SignEncrypt || a.Decrypt:
		return nil, nil, refuse(ErrBadClientKey, "not a signing-only key", nil)
	case !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin:
		return nil, nil, refuse(ErrBadClientKey, "key is not fixed to the TPM or was not generated in it", nil)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, nil, refuse(ErrBadClientKey, "ECC parameters", err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, nil, refuse(ErrBadClientKey, fmt.Sprintf("curve %v, want NIST P-256", parms.CurveID), nil)
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, nil, refuse(ErrBadClientKey, "public point", err)
	}
	key, err := p256Key(point.X.Buffer, point.Y.Buffer)
	if err != nil {
		return nil, nil, refuse(ErrBadClientKey, "public point", err)
	}
	return pub, key, nil
}
