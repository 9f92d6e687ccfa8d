package attest

// The TPM-resident client key (prover side): a P-256 signing key made in
// the TPM under the storage root key, used as the private key of the
// appliance's TLS client certificate for Vault. Its private part never
// leaves the TPM; a copy of the store holds only its blob, which loads in
// no other TPM. [CertifyClientKey] has the attestation key vouch for it
// (TPM2_Certify), so a CA can check, before issuing the certificate, that
// the key it certifies lives in the attested TPM (see [VerifyClientKey]).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
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

// clientKeyTemplate is an unrestricted ECDSA P-256/SHA-256 signing key,
// generated in and fixed to the TPM. Unrestricted: it signs digests the TPM
// did not make (TLS handshakes, the CSR). As written here it signs with an
// empty password; [CreateClientKey] given the sealing PCRs clears
// userWithAuth and sets authPolicy to TPM2_PolicyPCR over their values
// (keypolicy.go), so that only this appliance in its measured boot state
// can use the Vault certificate.
var clientKeyTemplate = tpm2.TPMTPublic{
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

// ClientKeyBlob is a stored client key: its TPMT_PUBLIC area and its
// SRK-encrypted private area. Neither is secret; both are needed to load it,
// and only the TPM that made it can. PCRs is the selection the key is bound
// to (TPM2_PolicyPCR), empty for a key that signs with its empty password.
type ClientKeyBlob struct {
	Public  []byte
	Private []byte
	PCRs    []int
}

// BoundTo reports whether the key is bound to exactly the PCR selection
// pcrs (in any order; empty: not bound). A key that is not must be made
// again (`keywarden vault csr -new-key`) to follow tpm.pcrs.
func (b *ClientKeyBlob) BoundTo(pcrs []int) bool { return samePCRs(b.PCRs, pcrs) }

const clientKeyBlobMagic = "KWCK"

// ErrBadClientKeyBlob: the stored client key blob cannot be decoded, or
// the TPM loaded a key other than the one it describes.
var ErrBadClientKeyBlob = errors.New("attest: malformed client key blob")

// ErrClientKeyClosed: the client key was flushed from the TPM.
var ErrClientKeyClosed = errors.New("attest: client key closed")

// MarshalBinary serializes the blob: "KWCK", version 1, then the public and
// private areas each with a 2-byte big-endian length; a key bound to PCRs
// is version 2 and adds the PCR count (one byte) and the PCR indices (one
// byte each, increasing).
func (b *ClientKeyBlob) MarshalBinary() ([]byte, error) {
	return marshalKeyBlob(clientKeyBlobMagic, ErrBadClientKeyBlob, b.Public, b.Private, b.PCRs)
}

// ParseClientKeyBlob decodes what [ClientKeyBlob.MarshalBinary] wrote and
// checks that the public area is a client key.
func ParseClientKeyBlob(data []byte) (*ClientKeyBlob, error) {
	pub, priv, pcrs, err := parseKeyBlob(data, clientKeyBlobMagic, ErrBadClientKeyBlob, func(b []byte) (*tpm2.TPMTPublic, error) {
		tp, _, err := parseClientKeyPublic(b)
		return tp, err
	})
	if err != nil {
		return nil, err
	}
	return &ClientKeyBlob{Public: pub, Private: priv, PCRs: pcrs}, nil
}

// CreateClientKey makes a new client key under the storage root key and
// leaves nothing loaded. With pcrs (the appliance's sealing PCRs,
// tpm.pcrs) the key signs only while those PCRs hold the values they hold
// now (authPolicy TPM2_PolicyPCR, userWithAuth clear); with none it signs
// with the empty password, for anyone with access to this TPM (dev mode,
// tpm.allow_no_pcr_policy).
func CreateClientKey(ctx context.Context, tpm transport.TPM, pcrs []int) (*ClientKeyBlob, error) {
	pcrs, err := keyPCRs(pcrs)
	if err != nil {
		return nil, err
	}
	tmpl, err := boundTemplate(ctx, tpm, clientKeyTemplate, pcrs)
	if err != nil {
		return nil, err
	}
	srk, err := createSRK(ctx, tpm)
	if err != nil {
		return nil, err
	}
	defer flush(tpm, srk.ObjectHandle)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: create client key: %w", err)
	}
	return &ClientKeyBlob{Public: bytes.Clone(rsp.OutPublic.Bytes()), Private: bytes.Clone(rsp.OutPrivate.Buffer), PCRs: pcrs}, nil
}

// ClientKey is a client key usable in the TPM; it is a [crypto.Signer]
// whose Sign runs TPM2_Sign. It holds no TPM handle between commands: the
// key is kept as a saved context and loaded for each signature
// (TPM2_ContextLoad, TPM2_Sign, TPM2_FlushContext), so it does not take one
// of the TPM's few object slots from the attestation key and the other
// resident keys. Signatures are rare: one per TLS connection to Vault. Its
// TPM commands are serialised.
type ClientKey struct {
	mu     sync.Mutex
	tpm    transport.TPM
	blob   *ClientKeyBlob
	saved  *tpm2.TPMSContext // nil: load from the blob again
	name   tpm2.TPM2BName
	public []byte
	key    *ecdsa.PublicKey
	closed bool
}

// LoadClientKey loads a stored client key once, to check it. It fails on
// any TPM other than the one that made the key (another storage root key
// cannot decrypt the private area), and refuses a key the TPM names
// differently from the blob.
func LoadClientKey(ctx context.Context, tpm transport.TPM, blob *ClientKeyBlob) (*ClientKey, error) {
	if blob == nil {
		return nil, ErrBadClientKeyBlob
	}
	pub, key, err := parseClientKeyPublic(blob.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadClientKeyBlob, err)
	}
	want, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadClientKeyBlob, err)
	}
	if err := checkBlobBinding(pub, blob.PCRs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadClientKeyBlob, err)
	}
	k := &ClientKey{tpm: tpm, blob: &ClientKeyBlob{Public: bytes.Clone(blob.Public), Private: bytes.Clone(blob.Private), PCRs: slices.Clone(blob.PCRs)},
		name: *want, public: bytes.Clone(blob.Public), key: key}
	h, err := k.load(ctx)
	if err != nil {
		return nil, err
	}
	flush(tpm, h)
	return k, nil
}

// load makes the key a transient object and returns its handle; the caller
// flushes it. It uses the saved context when it still loads (it does not
// after a TPM reset), else the blob under the storage root key. Call it
// with k.mu held.
func (k *ClientKey) load(ctx context.Context) (tpm2.TPMHandle, error) {
	if k.saved != nil {
		rsp, err := tpm2.ContextLoad{Context: *k.saved}.Execute(k.tpm)
		if err == nil {
			return rsp.LoadedHandle, nil
		}
		k.saved = nil
	}
	srk, err := createSRK(ctx, k.tpm)
	if err != nil {
		return 0, err
	}
	defer flush(k.tpm, srk.ObjectHandle)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: k.blob.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](k.blob.Public),
	}.Execute(k.tpm)
	if err != nil {
		return 0, fmt.Errorf("attest: load client key (was it made by another TPM?): %w", err)
	}
	if !bytes.Equal(rsp.Name.Buffer, k.name.Buffer) {
		flush(k.tpm, rsp.ObjectHandle)
		return 0, fmt.Errorf("%w: the TPM names the loaded key %x, the blob %x", ErrBadClientKeyBlob, rsp.Name.Buffer, k.name.Buffer)
	}
	if sv, err := (tpm2.ContextSave{SaveHandle: rsp.ObjectHandle}).Execute(k.tpm); err == nil {
		k.saved = &sv.Context
	}
	return rsp.ObjectHandle, nil
}

// Public returns the key's public half (*ecdsa.PublicKey).
func (k *ClientKey) Public() crypto.PublicKey { return k.key }

// PublicArea returns the key's TPMT_PUBLIC area.
func (k *ClientKey) PublicArea() []byte { return bytes.Clone(k.public) }

// Name returns the key's TPM Name.
func (k *ClientKey) Name() []byte { return bytes.Clone(k.name.Buffer) }

// PCRs returns the PCR selection the key is bound to (empty: not bound).
func (k *ClientKey) PCRs() []int { return slices.Clone(k.blob.PCRs) }

// Sign signs a SHA-256 digest with TPM2_Sign and returns the ASN.1 ECDSA
// signature (what crypto/tls and crypto/x509 expect of a crypto.Signer).
// A key bound to PCRs signs through a policy session (TPM2_PolicyPCR): in
// another boot state the TPM refuses ([ErrKeyPCRsChanged]).
// Other hashes are refused: the key's scheme is fixed to ECDSA-SHA256 (a
// TLS config using it offers only ecdsa_secp256r1_sha256).
func (k *ClientKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, errors.New("attest: the TPM client key signs SHA-256 digests only")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, ErrClientKeyClosed
	}
	h, err := k.load(context.Background())
	if err != nil {
		return nil, err
	}
	defer flush(k.tpm, h)
	auth, done, err := keyAuth(k.tpm, k.blob.PCRs)
	if err != nil {
		return nil, err
	}
	defer done()
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: h, Name: k.name, Auth: auth},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.tpm)
	if err != nil {
		return nil, signErr("attest: TPM2_Sign with the client key", err)
	}
	e, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("attest: TPM2_Sign answered no ECDSA signature: %w", err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer),
	})
}

// Close forgets the key's saved context; later signatures fail. It sends
// no TPM command (no handle is held). A second Close does nothing.
func (k *ClientKey) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed, k.saved = true, nil
	return nil
}

// CertifyClientKey has the attestation key certify the client key
// (TPM2_Certify) over [ExtraData](nonce, SubjectPublicKeyInfo DER of the
// client key). Both keys must be loaded in the same TPM. It returns the
// signed TPMS_ATTEST and its TPMT_SIGNATURE.
func CertifyClientKey(ctx context.Context, ak *AK, key *ClientKey, nonce, spki []byte) (attested, signature []byte, err error) {
	if n := len(nonce); n < MinNonce || n > MaxNonce {
		return nil, nil, ErrBadNonce
	}
	if ak == nil || key == nil {
		return nil, nil, errors.New("attest: certify needs an attestation key and a client key")
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ak.mu.Lock()
	defer ak.mu.Unlock()
	key.mu.Lock()
	defer key.mu.Unlock()
	if ak.closed {
		return nil, nil, ErrAKClosed
	}
	if key.closed {
		return nil, nil, ErrClientKeyClosed
	}
	h, err := key.load(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer flush(key.tpm, h)
	rsp, err := tpm2.Certify{
		ObjectHandle:   tpm2.AuthHandle{Handle: h, Name: key.name, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: ExtraData(nonce, spki)},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(ak.tpm)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: TPM2_Certify of the client key: %w", err)
	}
	return bytes.Clone(rsp.CertifyInfo.Bytes()), tpm2.Marshal(rsp.Signature), nil
}

// ClientKeyEvidenceOptions say what [MakeClientKeyEvidence] puts in.
type ClientKeyEvidenceOptions struct {
	// CommonName is the request's subject CN (e.g. the node's name).
	CommonName string
	// Nonce is the CA's nonce (16..64 bytes), or nil for a random one.
	Nonce []byte
	// PCRs are the PCRs to quote (tpm.attest_pcrs).
	PCRs []int
}

// MakeClientKeyEvidence makes a certificate request signed by the client
// key, has the attestation key certify the key and quote the PCRs over the
// same nonce (binding the key's SubjectPublicKeyInfo), and returns all of
// it. ak and key must be loaded in tpm.
func MakeClientKeyEvidence(ctx context.Context, tpm transport.TPM, ak *AK, key *ClientKey, opts ClientKeyEvidenceOptions) (*ClientKeyEvidence, error) {
	nonce := opts.Nonce
	if nonce == nil {
		nonce = make([]byte, 32)
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: opts.CommonName},
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("attest: certificate request: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	spki := csr.RawSubjectPublicKeyInfo
	att, sig, err := CertifyClientKey(ctx, ak, key, nonce, spki)
	if err != nil {
		return nil, err
	}
	q, err := Quote(ctx, tpm, ak, QuoteOptions{Nonce: nonce, BoundKey: spki, PCRs: opts.PCRs})
	if err != nil {
		return nil, err
	}
	return &ClientKeyEvidence{
		Format: ClientKeyEvidenceFormat, CSR: der, Nonce: bytes.Clone(nonce),
		KeyPublic: key.PublicArea(), Certify: att, CertifySignature: sig, Quote: q,
	}, nil
}
