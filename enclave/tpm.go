package enclave

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/secret"
)

// ErrPolicyMismatch means the TPM refused to unseal the root key because
// the current PCR values differ from those it was sealed to (a changed boot
// chain, firmware or kernel). Nothing is destroyed: restore the expected
// state, or reseal from an unsealed node / recover with the recovery shares.
var ErrPolicyMismatch = errors.New("enclave: the TPM refused to unseal the root key: PCR values differ from those it was sealed to")

// SealedRoot is the root key sealed by a TPM. It is safe to store: only the
// TPM that made it, in the PCR state it names, can unseal it.
type SealedRoot struct {
	Version int    `json:"version"`
	Public  []byte `json:"public"`  // TPM2B_PUBLIC of the keyed-hash object
	Private []byte `json:"private"` // TPM2B_PRIVATE, encrypted by the storage root key
	PCRs    []int  `json:"pcrs"`    // SHA-256 bank; empty = no PCR policy (dev)
}

// Marshal encodes s for the store.
func (s *SealedRoot) Marshal() ([]byte, error) { return json.Marshal(s) }

// UnmarshalSealedRoot decodes a stored SealedRoot.
func UnmarshalSealedRoot(b []byte) (*SealedRoot, error) {
	var s SealedRoot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("enclave: sealed root key record is damaged: %w", err)
	}
	if s.Version != 1 || len(s.Public) == 0 || len(s.Private) == 0 {
		return nil, fmt.Errorf("enclave: sealed root key record is damaged or of an unknown version %d", s.Version)
	}
	return &s, nil
}

// srk creates the storage root key: the TCG reference ECC P-256 template
// under the owner hierarchy. It is derived from the TPM's owner seed, so it
// is the same key after every boot and is never stored.
func srk(tpm transport.TPM) (*tpm2.CreatePrimaryResponse, func(), error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, nil, fmt.Errorf("enclave: create storage root key: %w", err)
	}
	return rsp, func() { flush(tpm, rsp.ObjectHandle) }, nil
}

func flush(tpm transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
}

func pcrSelection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	sel := make([]uint, 0, len(pcrs))
	for _, p := range pcrs {
		if p < 0 || p > 23 {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("enclave: PCR %d out of range 0..23", p)
		}
		sel = append(sel, uint(p))
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(sel...),
	}}}, nil
}

// pcrDigest reads the selected PCRs and returns SHA-256 of their
// concatenation, the digest TPM2_PolicyPCR compares.
func pcrDigest(tpm transport.TPM, pcrs []int) ([]byte, error) {
	h := sha256.New()
	// PCRRead returns at most 8 values per call; read in chunks, in order.
	for i := 0; i < len(pcrs); i += 8 {
		chunk := pcrs[i:min(i+8, len(pcrs))]
		sel, err := pcrSelection(chunk)
		if err != nil {
			return nil, err
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("enclave: read PCRs: %w", err)
		}
		if len(rsp.PCRValues.Digests) != len(chunk) {
			return nil, fmt.Errorf("enclave: TPM returned %d PCR values, want %d", len(rsp.PCRValues.Digests), len(chunk))
		}
		for _, d := range rsp.PCRValues.Digests {
			h.Write(d.Buffer)
		}
	}
	return h.Sum(nil), nil
}

func normalizePCRs(pcrs []int) []int {
	p := slices.Clone(pcrs)
	slices.Sort(p)
	return slices.Compact(p)
}

// SealRoot seals key to the TPM under the storage root key. With pcrs, the
// key unseals only while those SHA-256 PCRs hold the values they hold now;
// with none, anyone with this TPM can unseal it (dev mode). The sensitive
// data travels to the TPM encrypted under a session salted with the
// storage root key.
func SealRoot(ctx context.Context, tpm transport.TPM, key secret.Bytes, pcrs []int) (*SealedRoot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pcrs = normalizePCRs(pcrs)
	primary, done, err := srk(tpm)
	if err != nil {
		return nil, err
	}
	defer done()
	attrs := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true}
	var policy tpm2.TPM2BDigest
	if len(pcrs) > 0 {
		digest, err := pcrDigest(tpm, pcrs)
		if err != nil {
			return nil, err
		}
		sel, _ := pcrSelection(pcrs)
		calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
		if err != nil {
			return nil, err
		}
		if err := (tpm2.PolicyPCR{Pcrs: sel, PcrDigest: tpm2.TPM2BDigest{Buffer: digest}}).Update(calc); err != nil {
			return nil, err
		}
		policy = tpm2.TPM2BDigest{Buffer: calc.Hash().Digest}
	} else {
		attrs.UserWithAuth = true
	}
	pub, err := primary.OutPublic.Contents()
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: primary.ObjectHandle,
			Name:   primary.Name,
			Auth:   tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(primary.ObjectHandle, *pub)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: key.Reveal()}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgKeyedHash,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			AuthPolicy:       policy,
		}),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("enclave: seal root key: %w", err)
	}
	return &SealedRoot{
		Version: 1,
		Public:  tpm2.Marshal(rsp.OutPublic),
		Private: tpm2.Marshal(rsp.OutPrivate),
		PCRs:    pcrs,
	}, nil
}

// UnsealRoot asks the TPM for the root key. It runs once at start: the
// session is salted with the storage root key and encrypts the response, so
// the key does not cross the TPM bus in the clear.
func UnsealRoot(ctx context.Context, tpm transport.TPM, s *SealedRoot) (secret.Bytes, error) {
	if err := ctx.Err(); err != nil {
		return secret.Bytes{}, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](s.Public)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("enclave: sealed root key: public area: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](s.Private)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("enclave: sealed root key: private area: %w", err)
	}
	primary, done, err := srk(tpm)
	if err != nil {
		return secret.Bytes{}, err
	}
	defer done()
	loaded, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: primary.ObjectHandle, Name: primary.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub,
	}.Execute(tpm)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("enclave: load sealed root key (was it sealed by another TPM?): %w", err)
	}
	defer flush(tpm, loaded.ObjectHandle)
	srkPub, err := primary.OutPublic.Contents()
	if err != nil {
		return secret.Bytes{}, err
	}
	var auth tpm2.Session
	if len(s.PCRs) > 0 {
		sess, closeSess, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16,
			tpm2.Salted(primary.ObjectHandle, *srkPub), tpm2.AESEncryption(128, tpm2.EncryptOut))
		if err != nil {
			return secret.Bytes{}, fmt.Errorf("enclave: start policy session: %w", err)
		}
		defer func() { _ = closeSess() }()
		sel, err := pcrSelection(s.PCRs)
		if err != nil {
			return secret.Bytes{}, err
		}
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(tpm); err != nil {
			return secret.Bytes{}, fmt.Errorf("enclave: policy PCR: %w", err)
		}
		auth = sess
	} else {
		auth = tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(primary.ObjectHandle, *srkPub))
	}
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: auth}}.Execute(tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCPolicyFail) || errors.Is(err, tpm2.TPMRCValue) {
			return secret.Bytes{}, ErrPolicyMismatch
		}
		return secret.Bytes{}, fmt.Errorf("enclave: unseal root key: %w", err)
	}
	return secret.NewBytes(rsp.OutData.Buffer), nil
}
