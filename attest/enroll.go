package attest

// Enrollment, verifier side (pure, like verify.go): bind the attestation
// key to a TPM whose endorsement key a TPM maker certified.
//
// The verifier checks the EK certificate (VerifyOptions.EKRoots), then
// encrypts a random secret to that EK for the AK's Name with
// [MakeEnrollChallenge] (TPM2_MakeCredential done in software). Only the TPM
// holding that EK can decrypt it, and its TPM2_ActivateCredential releases
// the secret only when an object with exactly that Name is loaded in it
// ([ActivateCredential]). A correct answer ([CheckEnrollAnswer]) therefore
// shows that the AK is resident in the certified TPM; the verifier then
// pins the AK's Name (VerifyOptions.AKName) for every later quote.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/internal/secret"
)

// EK key types an [EnrollChallenge] can be addressed to: the TCG default
// (low range) EK templates whose certificates live at [EKCertIndexECC] and
// [EKCertIndexRSA].
const (
	EKTypeECC = "ecc-p256"
	EKTypeRSA = "rsa-2048"
)

// EnrollChallenge is a credential encrypted to a TPM's EK for one AK Name.
// It is not secret: only that TPM can open it.
type EnrollChallenge struct {
	// EKType says which standard EK the TPM must recreate to open it.
	EKType string `json:"ekType"`
	// Credential is the TPM2B_ID_OBJECT's contents.
	Credential []byte `json:"credential"`
	// Secret is the TPM2B_ENCRYPTED_SECRET's contents (the seed encrypted
	// to the EK).
	Secret []byte `json:"secret"`
}

// MakeEnrollChallenge makes a challenge for the attestation key akPublic
// (TPMT_PUBLIC, which must be a proper AK: see [Verify] check 3) addressed
// to the EK whose public key is ek (from a verified EK certificate). It
// returns the challenge for the appliance and the secret its answer must
// equal. rand is the randomness source (crypto/rand.Reader).
func MakeEnrollChallenge(rand io.Reader, ek crypto.PublicKey, akPublic []byte) (*EnrollChallenge, secret.Bytes, error) {
	pub, _, err := parseAKPublic(akPublic)
	if err != nil {
		return nil, secret.Bytes{}, err
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, secret.Bytes{}, refuse(ErrBadAK, "cannot compute the key's name", err)
	}
	ekPub, ekType, err := ekPublicArea(ek)
	if err != nil {
		return nil, secret.Bytes{}, err
	}
	encKey, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		return nil, secret.Bytes{}, fmt.Errorf("attest: EK public key: %w", err)
	}
	value := make([]byte, 32)
	if _, err := io.ReadFull(rand, value); err != nil {
		return nil, secret.Bytes{}, fmt.Errorf("attest: challenge secret: %w", err)
	}
	cred, seed, err := tpm2.CreateCredential(rand, encKey, name.Buffer, value)
	if err != nil {
		return nil, secret.Bytes{}, fmt.Errorf("attest: make credential: %w", err)
	}
	return &EnrollChallenge{EKType: ekType, Credential: cred, Secret: seed}, secret.NewBytes(value), nil
}

// CheckEnrollAnswer compares the appliance's answer with the challenge's
// secret in constant time ([ErrCredentialMismatch]).
func CheckEnrollAnswer(want secret.Bytes, answer secret.Bytes) error {
	if want.Len() == 0 || !want.Equal(answer) {
		return refuse(ErrCredentialMismatch, "the answer is not the challenge's secret", nil)
	}
	return nil
}

// ekPublicArea rebuilds the EK's TPMT_PUBLIC from its public key and the TCG
// default template the key was made with.
func ekPublicArea(ek crypto.PublicKey) (*tpm2.TPMTPublic, string, error) {
	switch k := ek.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", fmt.Errorf("attest: EK curve %s, want P-256", k.Curve.Params().Name)
		}
		raw, err := k.Bytes() // uncompressed point: 0x04 ‖ X ‖ Y
		if err != nil || len(raw) != 65 {
			return nil, "", fmt.Errorf("attest: EK public key: %v", err)
		}
		x, y := raw[1:33], raw[33:65]
		pub := tpm2.ECCEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x},
			Y: tpm2.TPM2BECCParameter{Buffer: y},
		})
		return &pub, EKTypeECC, nil
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 || k.E != 65537 {
			return nil, "", fmt.Errorf("attest: EK is RSA-%d with exponent %d, want RSA-2048 with 65537", k.N.BitLen(), k.E)
		}
		pub := tpm2.RSAEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
		return &pub, EKTypeRSA, nil
	default:
		return nil, "", fmt.Errorf("attest: EK key type %T not supported", ek)
	}
}
