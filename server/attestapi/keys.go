package attestapi

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/receipt"
)

// KeysFormat is the format tag of [ApplianceKeys].
const KeysFormat = "keywarden-appliance-keys-v1"

// ErrKeysUnavailable: the appliance has no certified signing key (no
// usable attestation key, or the signing key could not be made).
var ErrKeysUnavailable = apierr.New(http.StatusServiceUnavailable, "signing_key_unavailable",
	"the appliance has no certified signing key; its operator has been told")

// ApplianceKeys is the body of GET /v1/appliance-keys: the public keys that
// make the appliance's statements (signed audit anchors, release receipts)
// checkable by anyone. The chain of trust is AK → (TPM2_Certify) signing
// key → (KeyCert) batch key; [VerifyApplianceKeys] checks the first link.
type ApplianceKeys struct {
	Format string `json:"format"`
	Node   string `json:"node,omitempty"`
	// AKName is the hex TPM Name of the attestation key: compare it with
	// the one pinned after `keywarden attest verify`.
	AKName string `json:"ak_name"`
	// Certification is the AK's TPM2_Certify of the signing key (byte
	// fields base64 in JSON).
	Certification attest.Certification `json:"certification"`
	// SigningKeyPEM is the signing key as a PEM "PUBLIC KEY" (what
	// `keywarden audit verify -key` also takes), and SigningKeyID its
	// receipt.KeyID (the signer named by batch key certificates).
	SigningKeyPEM string `json:"signing_key_pem"`
	SigningKeyID  string `json:"signing_key_id"`
	// SigningKeyBinding is what the signing key is bound to (its
	// TPM2_PolicyPCR): a verifier who expects given PCR values recomputes
	// the policy digest (attest.PCRPolicyDigest over PCRs) and compares.
	// [VerifyApplianceKeys] refuses a document whose binding is not its
	// certified key's. Absent from documents of earlier versions.
	SigningKeyBinding *SigningKeyBinding `json:"signing_key_binding,omitempty"`
	// BatchKey is the certificate of the batch key in use since the last
	// start (informational: each anchor and receipt carries its own).
	BatchKey *receipt.KeyCert `json:"batch_key,omitempty"`
}

// SigningKeyBinding is the boot-state binding of the appliance signing
// key.
type SigningKeyBinding struct {
	// Kind is "pcr_policy" (the key signs only through TPM2_PolicyPCR over
	// PCRs, with the values they held when it was made, never with its
	// password) or "not_bound" (it signs with its empty password in any
	// boot state of this TPM: dev mode, tpm.allow_no_pcr_policy, or a key
	// made before the binding).
	Kind string `json:"kind"`
	// PCRs are the indices (SHA-256 bank) the policy covers: the PCRs the
	// root key is sealed to.
	PCRs []int `json:"pcrs,omitempty"`
	// PolicyDigest is the key's authPolicy (hex) as in its certified TPM
	// public area.
	PolicyDigest string `json:"policy_digest,omitempty"`
}

// keyBinding reads the binding from a certified key's public area; pcrs is
// the selection the key was made with (kept with its blob: the public area
// holds only the policy digest).
func keyBinding(keyPublic []byte, pcrs []int) (*SigningKeyBinding, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](keyPublic)
	if err != nil {
		return nil, fmt.Errorf("appliance keys: the signing key's public area: %w", err)
	}
	if pub.ObjectAttributes.UserWithAuth || len(pub.AuthPolicy.Buffer) == 0 {
		return &SigningKeyBinding{Kind: string(attest.KeyNotBound)}, nil
	}
	return &SigningKeyBinding{Kind: string(attest.KeyBoundToPolicy), PCRs: slices.Sorted(slices.Values(pcrs)),
		PolicyDigest: hex.EncodeToString(pub.AuthPolicy.Buffer)}, nil
}

// NewApplianceKeys builds the document from a certification; pcrs is the
// PCR selection the signing key is bound to (attest.SigningKey.PCRs).
func NewApplianceKeys(c *attest.Certification, node string, batch *receipt.KeyCert, pcrs []int) (*ApplianceKeys, error) {
	key, err := attest.VerifyCertification(c, nil)
	if err != nil {
		return nil, err
	}
	name, err := attest.AKName(c.AKPublic)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	binding, err := keyBinding(c.KeyPublic, pcrs)
	if err != nil {
		return nil, err
	}
	if binding.Kind == string(attest.KeyBoundToPolicy) && len(pcrs) == 0 {
		return nil, errors.New("appliance keys: the signing key has a policy but no PCR selection was given")
	}
	return &ApplianceKeys{Format: KeysFormat, Node: node, AKName: hex.EncodeToString(name), Certification: *c,
		SigningKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		SigningKeyID:  receipt.KeyID(key), SigningKeyBinding: binding, BatchKey: batch}, nil
}

// VerifyApplianceKeys parses a GET /v1/appliance-keys body and returns the
// signing key its certification vouches for. akName pins the AK (hex or
// raw bytes as [attest.VerifyCertification] takes them); nil checks only
// that the document is consistent with the AK it names (then trust it only
// as far as the channel it came over). The PEM and key id in the document
// are ignored: the key comes from the certified TPM public area.
func VerifyApplianceKeys(body []byte, akName []byte) (*ecdsa.PublicKey, *ApplianceKeys, error) {
	var d ApplianceKeys
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, nil, fmt.Errorf("appliance keys: not JSON: %w", err)
	}
	if d.Format != KeysFormat {
		return nil, nil, fmt.Errorf("appliance keys: format %q, want %q", d.Format, KeysFormat)
	}
	key, err := attest.VerifyCertification(&d.Certification, akName)
	if err != nil {
		return nil, nil, fmt.Errorf("appliance keys: %w", err)
	}
	if b := d.SigningKeyBinding; b != nil {
		// The kind and digest must be the certified key's; the PCR
		// selection (not in the public area) is checked by whoever
		// recomputes the digest from expected values.
		got, err := keyBinding(d.Certification.KeyPublic, b.PCRs)
		if err != nil {
			return nil, nil, err
		}
		if got.Kind != b.Kind || got.PolicyDigest != b.PolicyDigest || (b.Kind == string(attest.KeyBoundToPolicy)) != (len(b.PCRs) > 0) {
			return nil, nil, fmt.Errorf("appliance keys: the signing key binding (%s %v %s) is not the certified key's (%s %s)",
				b.Kind, b.PCRs, b.PolicyDigest, got.Kind, got.PolicyDigest)
		}
	}
	return key, &d, nil
}

// ApplianceKeys is GET /v1/appliance-keys.
func (h *Handler) ApplianceKeys(c echo.Context) error {
	if h.opts.Keys == nil {
		why := h.opts.KeysUnavailable
		if why == "" {
			why = "no signing key"
		}
		return ErrKeysUnavailable.Wrap(errors.New(why))
	}
	return c.JSON(http.StatusOK, h.opts.Keys)
}
