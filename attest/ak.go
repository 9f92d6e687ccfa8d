package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The attestation key lives in the owner (storage) hierarchy, under the
// TCG's standard ECC P-256 storage root key template (tpm2.ECCSRKTemplate,
// TCG Provisioning Guidance). The SRK is recreated from the hierarchy's seed
// when needed and never stored; the AK's private area, encrypted by the
// SRK, is stored in the store's meta bucket as an [AKBlob]. Its Name
// ([AKBlob.Name]) identifies it to verifiers. Clearing the owner hierarchy
// (TPM2_Clear) changes the seed and makes the blob unloadable.
const AKParent = "owner hierarchy, TCG ECC P-256 SRK template"

// akTemplate is the attestation key: a restricted ECDSA P-256/SHA-256
// signing key, generated in and fixed to the TPM, usable with an empty
// password (the TPM, not a password, is what protects it: the key can only
// sign structures the TPM itself produced).
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
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

// AKBlob is a persistent attestation key: what the TPM returned when it
// created the key. Neither part is secret (the private area is encrypted
// by the SRK and useless outside this TPM), but both are needed to load it.
type AKBlob struct {
	// Public is the key's TPMT_PUBLIC area.
	Public []byte
	// Private is the key's TPM2B_PRIVATE contents, encrypted by the SRK.
	Private []byte
}

// akBlobMagic starts a serialized AKBlob; the byte after it is the version.
const akBlobMagic = "KWAK"

// MarshalBinary serializes the blob: "KWAK", version 1, then the public and
// private areas each with a 2-byte big-endian length.
func (b *AKBlob) MarshalBinary() ([]byte, error) {
	if len(b.Public) == 0 || len(b.Private) == 0 || len(b.Public) > 0xffff || len(b.Private) > 0xffff {
		return nil, ErrBadAKBlob
	}
	out := append([]byte(akBlobMagic), 1)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.Public)))
	out = append(out, b.Public...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.Private)))
	out = append(out, b.Private...)
	return out, nil
}

// UnmarshalBinary reads what MarshalBinary wrote and checks that the public
// area is an attestation key.
func (b *AKBlob) UnmarshalBinary(data []byte) error {
	rest, ok := bytes.CutPrefix(data, []byte(akBlobMagic+"\x01"))
	if !ok {
		return fmt.Errorf("%w: unknown header", ErrBadAKBlob)
	}
	pub, rest, ok := cut16(rest)
	if !ok {
		return fmt.Errorf("%w: truncated public area", ErrBadAKBlob)
	}
	priv, rest, ok := cut16(rest)
	if !ok || len(priv) == 0 || len(rest) != 0 {
		return fmt.Errorf("%w: bad private area", ErrBadAKBlob)
	}
	if _, _, err := parseAKPublic(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrBadAKBlob, err)
	}
	b.Public, b.Private = bytes.Clone(pub), bytes.Clone(priv)
	return nil
}

// ParseAKBlob decodes a serialized [AKBlob].
func ParseAKBlob(data []byte) (*AKBlob, error) {
	var b AKBlob
	if err := b.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	return &b, nil
}

func cut16(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, false
	}
	return b[2 : 2+n], b[2+n:], true
}

// Name returns the key's TPM Name (see [AKName]).
func (b *AKBlob) Name() ([]byte, error) { return AKName(b.Public) }

// CreateAK makes a new attestation key under the storage root key. It
// leaves no object loaded in the TPM. Call it once, at init, and keep the
// blob: a new key has a new Name, which verifiers have pinned.
func CreateAK(ctx context.Context, tpm transport.TPM) (*AKBlob, error) {
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
		InPublic:     tpm2.New2B(akTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: create attestation key: %w", err)
	}
	return &AKBlob{
		Public:  bytes.Clone(rsp.OutPublic.Bytes()),
		Private: bytes.Clone(rsp.OutPrivate.Buffer),
	}, nil
}

// AK is an attestation key loaded in the TPM. It holds one transient
// handle until Close. Its methods serialise their TPM commands, so one AK
// may serve concurrent requests (rate-limit them: TPM commands are slow and
// the TPM is shared).
type AK struct {
	mu     sync.Mutex
	tpm    transport.TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte
	key    *ecdsa.PublicKey
	closed bool
}

// LoadAK loads a stored attestation key into the TPM. The caller closes the
// returned key. It refuses a blob whose public area the TPM names
// differently from the blob's own (a blob not made by [CreateAK] for this
// TPM's storage hierarchy fails to load at all).
func LoadAK(ctx context.Context, tpm transport.TPM, blob *AKBlob) (*AK, error) {
	if blob == nil {
		return nil, ErrBadAKBlob
	}
	pub, key, err := parseAKPublic(blob.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAKBlob, err)
	}
	want, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAKBlob, err)
	}
	srk, err := createSRK(ctx, tpm)
	if err != nil {
		return nil, err
	}
	defer flush(tpm, srk.ObjectHandle)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: blob.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](blob.Public),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: load attestation key: %w", err)
	}
	if !bytes.Equal(rsp.Name.Buffer, want.Buffer) {
		flush(tpm, rsp.ObjectHandle)
		return nil, fmt.Errorf("%w: the TPM names the loaded key %x, the blob %x", ErrBadAKBlob, rsp.Name.Buffer, want.Buffer)
	}
	return &AK{
		tpm:    tpm,
		handle: rsp.ObjectHandle,
		name:   rsp.Name,
		public: bytes.Clone(blob.Public),
		key:    key,
	}, nil
}

// Public returns the key's TPMT_PUBLIC area (what [Evidence.AKPublic]
// carries).
func (k *AK) Public() []byte { return bytes.Clone(k.public) }

// Name returns the key's TPM Name.
func (k *AK) Name() []byte { return bytes.Clone(k.name.Buffer) }

// PublicKey returns the key as an ECDSA public key.
func (k *AK) PublicKey() *ecdsa.PublicKey { return k.key }

// Close flushes the key from the TPM. A second Close does nothing.
func (k *AK) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if _, err := (tpm2.FlushContext{FlushHandle: k.handle}).Execute(k.tpm); err != nil {
		return fmt.Errorf("attest: flush attestation key: %w", err)
	}
	return nil
}

// createSRK recreates the storage root key from the owner hierarchy's seed.
// The caller flushes it.
func createSRK(ctx context.Context, tpm transport.TPM) (*tpm2.CreatePrimaryResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: create storage root key: %w", err)
	}
	return rsp, nil
}

// flush drops a transient object; errors are ignored because the caller is
// already returning (a failed flush of a transient object leaves it to the
// resource manager or the next TPM reset).
func flush(tpm transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
}
