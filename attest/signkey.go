package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The appliance signing key: an ECDSA P-256 key in the TPM that signs what
// the appliance states publicly (the certificate of the in-memory key that
// signs audit anchors and release receipts; see package receipt). Unlike
// the AK it is not restricted, so it can sign any digest; it is fixedTPM
// and made in the TPM (sensitiveDataOrigin), a child of the same SRK, and
// its blob is kept like the AK's. The AK certifies it with TPM2_Certify
// ([Certify]), so a verifier who trusts the AK trusts it
// ([VerifyCertification]). As written here it signs with an empty
// password; [CreateSigningKey] given the sealing PCRs clears userWithAuth
// and sets authPolicy to TPM2_PolicyPCR over their values (keypolicy.go),
// so that another boot state of the same TPM cannot certify a batch key of
// its own and forge receipts and anchors.
var signingKeyTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// ErrBadSigningKeyBlob: a stored signing key blob does not decode or is
// not a signing key.
var ErrBadSigningKeyBlob = errors.New("attest: bad signing key blob")

// SigningKeyBlob is a persistent appliance signing key, as [AKBlob] is for
// the AK: the public area and the SRK-encrypted private area (not secret).
// PCRs is the selection the key is bound to (TPM2_PolicyPCR), empty for a
// key that signs with its empty password.
type SigningKeyBlob struct {
	Public  []byte
	Private []byte
	PCRs    []int
}

const signingKeyBlobMagic = "KWSK"

// BoundTo reports whether the key is bound to exactly the PCR selection
// pcrs (in any order; empty: not bound). The appliance makes a new signing
// key at start when the stored one is not bound to tpm.pcrs.
func (b *SigningKeyBlob) BoundTo(pcrs []int) bool { return samePCRs(b.PCRs, pcrs) }

// MarshalBinary serializes the blob: "KWSK", version 1, then the public and
// private areas each with a 2-byte big-endian length; a key bound to PCRs
// is version 2 and adds the PCR count (one byte) and the PCR indices (one
// byte each, increasing).
func (b *SigningKeyBlob) MarshalBinary() ([]byte, error) {
	return marshalKeyBlob(signingKeyBlobMagic, ErrBadSigningKeyBlob, b.Public, b.Private, b.PCRs)
}

// ParseSigningKeyBlob decodes what MarshalBinary wrote and checks that the
// public area is a signing key fixed to a TPM.
func ParseSigningKeyBlob(data []byte) (*SigningKeyBlob, error) {
	pub, priv, pcrs, err := parseKeyBlob(data, signingKeyBlobMagic, ErrBadSigningKeyBlob, func(b []byte) (*tpm2.TPMTPublic, error) {
		tp, _, err := parseSigningKeyPublic(b)
		return tp, err
	})
	if err != nil {
		return nil, err
	}
	return &SigningKeyBlob{Public: pub, Private: priv, PCRs: pcrs}, nil
}

// CreateSigningKey makes a new appliance signing key under the SRK. It
// leaves no object loaded. Keep the blob: verifiers learn the key once.
// With pcrs (the appliance's sealing PCRs, tpm.pcrs) the key signs only
// while those PCRs hold the values they hold now (authPolicy
// TPM2_PolicyPCR, userWithAuth clear); with none it signs with the empty
// password, for anyone with access to this TPM (dev mode,
// tpm.allow_no_pcr_policy).
func CreateSigningKey(ctx context.Context, tpm transport.TPM, pcrs []int) (*SigningKeyBlob, error) {
	pcrs, err := keyPCRs(pcrs)
	if err != nil {
		return nil, err
	}
	tmpl, err := boundTemplate(ctx, tpm, signingKeyTemplate, pcrs)
	if err != nil {
		return nil, err
	}
	srk, err := createSRK(ctx, tpm)
	if err != nil {
		return nil, err
	}
	defer flush(tpm, srk.ObjectHandle)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: create signing key: %w", err)
	}
	return &SigningKeyBlob{Public: bytes.Clone(rsp.OutPublic.Bytes()), Private: bytes.Clone(rsp.OutPrivate.Buffer), PCRs: pcrs}, nil
}

// SigningKey is the appliance signing key loaded in the TPM: a
// crypto.Signer whose Sign is one TPM2_Sign (ASN.1 DER ECDSA over a
// SHA-256 digest). It holds one transient handle until Close; its methods
// serialise their TPM commands. A key bound to PCRs signs through a policy
// session (TPM2_PolicyPCR): in another boot state the TPM refuses
// ([ErrKeyPCRsChanged]).
type SigningKey struct {
	mu     sync.Mutex
	tpm    transport.TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte
	key    *ecdsa.PublicKey
	pcrs   []int // the PCRs the key is bound to; empty: not bound
	closed bool
}

// LoadSigningKey loads a stored signing key; the caller closes it.
func LoadSigningKey(ctx context.Context, tpm transport.TPM, blob *SigningKeyBlob) (*SigningKey, error) {
	if blob == nil {
		return nil, ErrBadSigningKeyBlob
	}
	pub, key, err := parseSigningKeyPublic(blob.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSigningKeyBlob, err)
	}
	want, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSigningKeyBlob, err)
	}
	if err := checkBlobBinding(pub, blob.PCRs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSigningKeyBlob, err)
	}
	srk, err := createSRK(ctx, tpm)
	if err != nil {
		return nil, err
	}
	defer flush(tpm, srk.ObjectHandle)
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: blob.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](blob.Public),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: load signing key: %w", err)
	}
	if !bytes.Equal(rsp.Name.Buffer, want.Buffer) {
		flush(tpm, rsp.ObjectHandle)
		return nil, fmt.Errorf("%w: the TPM names the loaded key differently from the blob", ErrBadSigningKeyBlob)
	}
	return &SigningKey{tpm: tpm, handle: rsp.ObjectHandle, name: rsp.Name, public: bytes.Clone(blob.Public), key: key, pcrs: slices.Clone(blob.PCRs)}, nil
}

// Public returns the ECDSA public key (crypto.Signer).
func (k *SigningKey) Public() crypto.PublicKey { return k.key }

// PublicKey returns the ECDSA public key.
func (k *SigningKey) PublicKey() *ecdsa.PublicKey { return k.key }

// TPMPublic returns the key's TPMT_PUBLIC area.
func (k *SigningKey) TPMPublic() []byte { return bytes.Clone(k.public) }

// PCRs returns the PCR selection the key is bound to (empty: not bound).
func (k *SigningKey) PCRs() []int { return slices.Clone(k.pcrs) }

// Sign signs a SHA-256 digest in the TPM and returns an ASN.1 DER ECDSA
// signature. One TPM command: never call it per request.
func (k *SigningKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != 32 {
		return nil, errors.New("attest: the signing key signs SHA-256 digests only")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, errors.New("attest: signing key closed")
	}
	auth, done, err := keyAuth(k.tpm, k.pcrs)
	if err != nil {
		return nil, err
	}
	defer done()
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: auth},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA,
			&tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.tpm)
	if err != nil {
		return nil, signErr("attest: TPM2_Sign with the signing key", err)
	}
	e, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("attest: TPM2_Sign: %w", err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer)})
}

// Close flushes the key from the TPM. A second Close does nothing.
func (k *SigningKey) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if _, err := (tpm2.FlushContext{FlushHandle: k.handle}).Execute(k.tpm); err != nil {
		return fmt.Errorf("attest: flush signing key: %w", err)
	}
	return nil
}

// Certify has the AK certify the signing key (TPM2_Certify, qualifying data
// [CertifyQualifier]): the statement, signed by the AK, that a key with
// this Name is loaded in the same TPM. One TPM command: do it at start.
func Certify(ctx context.Context, ak *AK, key *SigningKey) (*Certification, error) {
	if ak == nil || key == nil {
		return nil, errors.New("attest: certify: no key")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ak.mu.Lock()
	defer ak.mu.Unlock()
	key.mu.Lock()
	defer key.mu.Unlock()
	if ak.closed || key.closed {
		return nil, ErrAKClosed
	}
	rsp, err := tpm2.Certify{
		ObjectHandle:   tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: CertifyQualifier()},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(ak.tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: TPM2_Certify: %w", err)
	}
	return &Certification{
		AKPublic:    bytes.Clone(ak.public),
		KeyPublic:   bytes.Clone(key.public),
		CertifyInfo: bytes.Clone(rsp.CertifyInfo.Bytes()),
		Signature:   tpm2.Marshal(rsp.Signature),
	}, nil
}
