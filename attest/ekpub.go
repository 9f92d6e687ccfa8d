package attest

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ReadEKPublic recreates the TPM's standard ECC P-256 endorsement key (TCG
// default template, the key [ActivateCredential] of type [EKTypeECC]
// uses) and returns its public key. The EK is not left loaded.
func ReadEKPublic(ctx context.Context, tpm transport.TPM) (crypto.PublicKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.ECCEKTemplate)}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: create EK: %w", err)
	}
	defer flush(tpm, rsp.ObjectHandle)
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("attest: EK public area: %w", err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("attest: EK public key: %w", err)
	}
	return k, nil
}

// EKFingerprint is the hex SHA-256 of an EK's SubjectPublicKeyInfo DER: what
// an operator compares out of band (on the joining host and on the
// approving one).
func EKFingerprint(ek crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(ek)
	if err != nil {
		return "", fmt.Errorf("attest: EK public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
