package attest

// The verifier of a signing key's certification: pure (no TPM, no I/O),
// like verify.go; TestVerifierIsPure holds it to that.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// certifyDomain makes the qualifying data of a signing key's certification:
// a verifier knows the AK signed this structure to vouch for an appliance
// signing key, not for another purpose.
const certifyDomain = "keywarden-signing-key-certify-v1"

// CertifyQualifier is the qualifying data (extraData) of every
// certification of an appliance signing key: SHA-256 of a fixed label. A
// certification needs no nonce: it states a fact that does not change
// (this key lives in the TPM of this AK); a quote proves freshness.
func CertifyQualifier() []byte {
	s := sha256.Sum256([]byte(certifyDomain))
	return s[:]
}

// Certification is the AK's TPM2_Certify of the appliance signing key, as
// GET /v1/appliance-keys publishes it.
type Certification struct {
	AKPublic    []byte `json:"ak_public"`    // the AK's TPMT_PUBLIC
	KeyPublic   []byte `json:"key_public"`   // the signing key's TPMT_PUBLIC
	CertifyInfo []byte `json:"certify_info"` // the TPMS_ATTEST the AK signed
	Signature   []byte `json:"signature"`    // the AK's TPMT_SIGNATURE over it
}

// Errors of [VerifyCertification] (reasons of a [*VerifyError]).
var (
	// ErrNotACertification: the signed structure is not a TPM-made
	// TPM2_Certify (TPM_ST_ATTEST_CERTIFY) of the key it is presented for
	// (the appliance signing key, or the Vault client key of
	// VerifyClientKey), or certifies another key.
	ErrNotACertification = &VerifyError{Reason: "not_a_certification"}
	// ErrBadSigningKey: the certified key is not a TPM-resident P-256
	// ECDSA signing key.
	ErrBadSigningKey = &VerifyError{Reason: "bad_signing_key"}
)

// VerifyCertification checks that c is the AK's certification of an
// appliance signing key and returns that key. akName, when set, pins the
// AK (as [VerifyOptions.AKName]); nil proves only that the certification
// is consistent with the AK it carries — pin it. The checks: the AK is an
// attestation key ([ErrBadAK]) with the pinned Name ([ErrAKMismatch]); the
// signature verifies under it ([ErrBadSignature]); the signed bytes are a
// TPMS_ATTEST with magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_CERTIFY,
// extraData [CertifyQualifier], naming exactly the key's public area
// ([ErrNotACertification]); the key is a fixedTPM, sensitiveDataOrigin,
// non-decrypting ECC P-256 ECDSA-SHA256 signing key ([ErrBadSigningKey]).
func VerifyCertification(c *Certification, akName []byte) (*ecdsa.PublicKey, error) {
	key, _, err := VerifyCertificationPolicy(c, akName, nil)
	return key, err
}

// VerifyCertificationPolicy is [VerifyCertification] that also checks the
// signing key's boot-state binding. With keyPolicy (the appliance's
// sealing PCRs, tpm.pcrs, and the values they may hold) it refuses
// ([ErrKeyNotBound]) a key that signs with its password (userWithAuth set,
// or no authPolicy) or whose authPolicy is not TPM2_PolicyPCR over one
// combination of the policy's values: such a key could certify a batch key
// in another boot state of the same TPM. Without one it accepts and
// reports the binding ([KeyNotBound] for keys made in dev mode, with
// tpm.allow_no_pcr_policy, or before the binding existed).
func VerifyCertificationPolicy(c *Certification, akName []byte, keyPolicy *Policy) (*ecdsa.PublicKey, KeyBinding, error) {
	pub, key, err := verifyCertification(c, akName)
	if err != nil {
		return nil, "", err
	}
	binding, err := checkKeyBinding(pub, keyPolicy)
	if err != nil {
		return nil, "", err
	}
	return key, binding, nil
}

func verifyCertification(c *Certification, akName []byte) (*tpm2.TPMTPublic, *ecdsa.PublicKey, error) {
	if c == nil || len(c.CertifyInfo) == 0 || len(c.CertifyInfo) > 4096 || len(c.Signature) == 0 || len(c.Signature) > 1024 {
		return nil, nil, refuse(ErrMalformed, "certification sizes", nil)
	}
	_, akKey, err := parseAKPublic(c.AKPublic)
	if err != nil {
		return nil, nil, err
	}
	if akName != nil {
		name, err := AKName(c.AKPublic)
		if err != nil {
			return nil, nil, err
		}
		if subtle.ConstantTimeCompare(name, akName) != 1 {
			return nil, nil, refuse(ErrAKMismatch, fmt.Sprintf("certified by AK %x, pinned %x", name, akName), nil)
		}
	}
	if err := verifySignature(akKey, c.CertifyInfo, c.Signature); err != nil {
		return nil, nil, err
	}
	att, err := unmarshalExact[tpm2.TPMSAttest](c.CertifyInfo)
	if err != nil {
		return nil, nil, refuse(ErrNotACertification, "signed data is not a TPMS_ATTEST", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue || att.Type != tpm2.TPMSTAttestCertify {
		return nil, nil, refuse(ErrNotACertification, "not a TPM2_Certify structure", nil)
	}
	if !bytes.Equal(att.ExtraData.Buffer, CertifyQualifier()) {
		return nil, nil, refuse(ErrNotACertification, "made for another purpose (extra data)", nil)
	}
	info, err := att.Attested.Certify()
	if err != nil {
		return nil, nil, refuse(ErrNotACertification, "no certify information", err)
	}
	pub, key, err := parseSigningKeyPublic(c.KeyPublic)
	if err != nil {
		return nil, nil, err
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil || !bytes.Equal(name.Buffer, info.Name.Buffer) {
		return nil, nil, refuse(ErrNotACertification, "the certification names another key", err)
	}
	return pub, key, nil
}

// parseSigningKeyPublic checks a TPMT_PUBLIC of an appliance signing key.
func parseSigningKeyPublic(b []byte) (*tpm2.TPMTPublic, *ecdsa.PublicKey, error) {
	if len(b) == 0 || len(b) > maxAKPublic {
		return nil, nil, refuse(ErrMalformed, "signing key public area size", nil)
	}
	pub, err := unmarshalExact[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, nil, refuse(ErrMalformed, "signing key public area", err)
	}
	a := pub.ObjectAttributes
	switch {
	case pub.Type != tpm2.TPMAlgECC || pub.NameAlg != tpm2.TPMAlgSHA256:
		return nil, nil, refuse(ErrBadSigningKey, "not an ECC key with SHA-256 names", nil)
	case !a.SignEncrypt || a.Decrypt:
		return nil, nil, refuse(ErrBadSigningKey, "not a signing-only key", nil)
	case !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin:
		return nil, nil, refuse(ErrBadSigningKey, "key is not fixed to the TPM or was not generated in it", nil)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil || parms.CurveID != tpm2.TPMECCNistP256 || parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, nil, refuse(ErrBadSigningKey, "not an ECDSA P-256 key", err)
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, nil, refuse(ErrBadSigningKey, "public point", err)
	}
	key, err := p256Key(point.X.Buffer, point.Y.Buffer)
	if err != nil {
		return nil, nil, refuse(ErrBadSigningKey, "public point", err)
	}
	return pub, key, nil
}
