package attest

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/secret"
)

// ActivateCredential answers an [EnrollChallenge] (prover side): it
// recreates the TPM's standard EK of the challenge's type in the
// endorsement hierarchy, satisfies the EK's policy (PolicySecret of the
// endorsement hierarchy, empty password) and has the TPM release the
// challenge's secret for the loaded AK. The TPM refuses when the challenge
// was made for another EK or another AK Name. It leaves nothing loaded but
// the AK.
func ActivateCredential(ctx context.Context, tpm transport.TPM, ak *AK, ch *EnrollChallenge) (secret.Bytes, error) {
	if ch == nil {
		return secret.Bytes{}, fmt.Errorf("attest: no challenge")
	}
	var tmpl tpm2.TPMTPublic
	switch ch.EKType {
	case EKTypeECC:
		tmpl = tpm2.ECCEKTemplate
	case EKTypeRSA:
		tmpl = tpm2.RSAEKTemplate
	default:
		return secret.Bytes{}, fmt.Errorf("attest: unknown EK type %q", ch.EKType)
	}
	if err := ctx.Err(); err != nil {
		return secret.Bytes{}, err
	}
	ek, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("attest: create EK: %w", err)
	}
	defer flush(tpm, ek.ObjectHandle)

	ak.mu.Lock()
	defer ak.mu.Unlock()
	if ak.closed {
		return secret.Bytes{}, ErrAKClosed
	}
	if err := ctx.Err(); err != nil {
		return secret.Bytes{}, err
	}
	ekPolicy := func(t transport.TPM, s tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: s, NonceTPM: nonce}.Execute(t)
		return err
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: ek.ObjectHandle, Name: ek.Name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy)},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: ch.Credential},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: ch.Secret},
	}.Execute(tpm)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("attest: TPM2_ActivateCredential: %w", err)
	}
	return secret.NewBytes(bytes.Clone(rsp.CertInfo.Buffer)), nil
}
