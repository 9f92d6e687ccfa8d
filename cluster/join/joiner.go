package join

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/secret"
)

// Prepare is the joiner's first step: with the nonce the cluster issued it
// makes a fresh attestation key in tpm, reads the TPM's standard ECC EK
// (and its certificate, when the TPM maker stored one) and quotes the
// selected PCRs over the nonce, bound to the EK, name and peer URLs. It
// returns the request and the loaded AK, which the caller keeps until the
// answer arrives (the answer opens only with this very key loaded) and
// then closes.
func Prepare(ctx context.Context, tpm transport.TPM, n *Nonce, name string, peerURLs []string) (*Request, *attest.AK, error) {
	if n == nil || len(n.Nonce) != NonceSize || len(n.PCRSelection) == 0 {
		return nil, nil, errors.New("join: the cluster's nonce answer is malformed")
	}
	if err := ValidName(name); err != nil {
		return nil, nil, err
	}
	for _, p := range peerURLs {
		if err := ValidPeerURL(p); err != nil {
			return nil, nil, err
		}
	}
	ek, err := attest.ReadEKPublic(ctx, tpm)
	if err != nil {
		return nil, nil, err
	}
	ekDER, err := x509.MarshalPKIXPublicKey(ek)
	if err != nil {
		return nil, nil, err
	}
	var ekCert []byte
	if certs, _, err := attest.ReadEKCertificates(ctx, tpm); err == nil {
		for _, der := range certs {
			if c, err := x509.ParseCertificate(der); err == nil {
				if pk, err := x509.MarshalPKIXPublicKey(c.PublicKey); err == nil && string(pk) == string(ekDER) {
					ekCert = der
					break
				}
			}
		}
	}
	blob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		return nil, nil, err
	}
	ak, err := attest.LoadAK(ctx, tpm, blob)
	if err != nil {
		return nil, nil, err
	}
	ev, err := attest.Quote(ctx, tpm, ak, attest.QuoteOptions{
		Nonce:    n.Nonce,
		BoundKey: Binding(ekDER, name, peerURLs),
		PCRs:     n.PCRSelection,
	})
	if err != nil {
		_ = ak.Close()
		return nil, nil, err
	}
	return &Request{Nonce: n.Nonce, Name: name, PeerURLs: peerURLs, EKPublic: ekDER, EKCertificate: ekCert, Evidence: ev}, ak, nil
}

// Recover is the joiner's last step: it has its TPM release the
// credential's secret (TPM2_ActivateCredential with its EK and the AK of
// the request, still loaded), derives the key and opens the root key. It
// fails on any other TPM, with any other AK, and for an answer made for
// another request or cluster.
func Recover(ctx context.Context, tpm transport.TPM, ak *attest.AK, requestID, name string, ans *Answer) (cluster.Joined, error) {
	if ans == nil || ans.Credential == nil {
		return cluster.Joined{}, errors.New("join: the answer carries no credential")
	}
	credSecret, err := attest.ActivateCredential(ctx, tpm, ak, ans.Credential)
	if err != nil {
		return cluster.Joined{}, fmt.Errorf("join: this TPM cannot open the answer (it was made for another TPM or key): %w", err)
	}
	defer credSecret.Wipe()
	aead, err := rootKeyAEAD(credSecret.Reveal())
	if err != nil {
		return cluster.Joined{}, err
	}
	if len(ans.Nonce) != aead.NonceSize() {
		return cluster.Joined{}, errors.New("join: the answer's nonce is malformed")
	}
	key, err := aead.Open(nil, ans.Nonce, ans.Ciphertext, additionalData(uint64(ans.ClusterID), requestID, ak.Name()))
	if err != nil {
		return cluster.Joined{}, errors.New("join: the root key does not open (answer for another request, cluster or key)")
	}
	if len(key) != enclave.RootKeySize {
		clear(key)
		return cluster.Joined{}, fmt.Errorf("join: the root key is %d bytes, want %d", len(key), enclave.RootKeySize)
	}
	return cluster.Joined{
		RootKey:        secret.NewBytes(key),
		Name:           name,
		InitialCluster: ans.InitialCluster,
		ClusterID:      uint64(ans.ClusterID),
		MemberID:       uint64(ans.MemberID),
	}, nil
}

// AKNameHex is the AK Name as printed to the operator.
func AKNameHex(ak *attest.AK) string { return hex.EncodeToString(ak.Name()) }
