package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// maxAKPublic bounds a TPMT_PUBLIC; a P-256 signing key's is about 90 bytes.
const maxAKPublic = 1024

// AKName returns the TPM Name of an attestation key from its TPMT_PUBLIC
// area: the name algorithm (2 bytes, SHA-256) followed by the SHA-256 of the
// area. The Name covers the key and its attributes, so it is what an
// operator pins ([VerifyOptions.AKName]) after enrollment.
func AKName(akPublic []byte) ([]byte, error) {
	pub, _, err := parseAKPublic(akPublic)
	if err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, refuse(ErrBadAK, "cannot compute the key's name", err)
	}
	return name.Buffer, nil
}

// AKPublicKeyPEM returns the attestation key as a PEM "PUBLIC KEY" block
// (SubjectPublicKeyInfo), the form tpm2_checkquote's -u and OpenSSL read.
func AKPublicKeyPEM(akPublic []byte) ([]byte, error) {
	_, key, err := parseAKPublic(akPublic)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, refuse(ErrBadAK, "cannot encode the key", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// parseAKPublic decodes a TPMT_PUBLIC and checks that it describes what an
// attestation key must be: an ECC NIST P-256 key with name algorithm
// SHA-256, the ECDSA-SHA256 scheme, and the attributes restricted, sign,
// not decrypt, fixedTPM, fixedParent and sensitiveDataOrigin. A restricted
// signing key refuses to sign data that starts with TPM_GENERATED_VALUE, so
// only the TPM's own attestation commands produce such structures with it;
// fixedTPM and sensitiveDataOrigin say the TPM made the key and it cannot
// leave. (The attributes are only as trustworthy as the AK itself: pin its
// Name, or enroll it against the EK.)
func parseAKPublic(b []byte) (*tpm2.TPMTPublic, *ecdsa.PublicKey, error) {
	if len(b) == 0 || len(b) > maxAKPublic {
		return nil, nil, refuse(ErrMalformed, fmt.Sprintf("attestation key public area of %d bytes", len(b)), nil)
	}
	pub, err := unmarshalExact[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, nil, refuse(ErrMalformed, "attestation key public area", err)
	}
	a := pub.ObjectAttributes
	switch {
	case pub.Type != tpm2.TPMAlgECC:
		return nil, nil, refuse(ErrBadAK, fmt.Sprintf("key type %v, want ECC", pub.Type), nil)
	case pub.NameAlg != tpm2.TPMAlgSHA256:
		return nil, nil, refuse(ErrBadAK, fmt.Sprintf("name algorithm %v, want SHA-256", pub.NameAlg), nil)
	case !a.Restricted || !a.SignEncrypt || a.Decrypt:
		return nil, nil, refuse(ErrBadAK, "not a restricted signing key", nil)
	case !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin:
		return nil, nil, refuse(ErrBadAK, "key is not fixed to the TPM or was not generated in it", nil)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, nil, refuse(ErrBadAK, "ECC parameters", err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, nil, refuse(ErrBadAK, fmt.Sprintf("curve %v, want NIST P-256", parms.CurveID), nil)
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, nil, refuse(ErrBadAK, fmt.Sprintf("signing scheme %v, want ECDSA", parms.Scheme.Scheme), nil)
	}
	scheme, err := parms.Scheme.Details.ECDSA()
	if err != nil || scheme.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, refuse(ErrBadAK, "signing scheme is not ECDSA with SHA-256", err)
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, nil, refuse(ErrBadAK, "public point", err)
	}
	key, err := p256Key(point.X.Buffer, point.Y.Buffer)
	if err != nil {
		return nil, nil, refuse(ErrBadAK, "public point", err)
	}
	return pub, key, nil
}

// p256Key builds a P-256 public key from big-endian coordinates, checking
// that the point is on the curve.
func p256Key(x, y []byte) (*ecdsa.PublicKey, error) {
	if len(x) > 32 || len(y) > 32 {
		return nil, fmt.Errorf("coordinates longer than 32 bytes")
	}
	raw := make([]byte, 65)
	raw[0] = 4
	copy(raw[1+32-len(x):33], x)
	copy(raw[33+32-len(y):], y)
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
}

// unmarshalExact decodes a TPM structure and refuses trailing bytes (go-tpm's
// Unmarshal ignores them), by encoding the result again and comparing. It
// turns a panic in the decoder into an error: its input may be hostile.
func unmarshalExact[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (out *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("malformed TPM structure: %v", r)
		}
	}()
	v, err := tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	if again := tpm2.Marshal(*v); string(again) != string(b) {
		return nil, fmt.Errorf("TPM structure has %d bytes that do not belong to it", len(b)-len(again))
	}
	return v, nil
}
