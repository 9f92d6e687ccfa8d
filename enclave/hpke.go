package enclave

import (
	"crypto/hpke"
	"fmt"

	"github.com/keywarden/keywarden/internal/apierr"
)

// HPKE suites. Clients name their key by its length: a 32-byte X25519 key
// or a 1216-byte ML-KEM-768+X25519 hybrid key (post-quantum; the default
// for the appliance's own key).
const (
	SuiteX25519         = "DHKEM(X25519)-HKDF-SHA256-AES-256-GCM"
	SuiteMLKEM768X25519 = "MLKEM768-X25519-HKDF-SHA256-AES-256-GCM"
)

var errBadRecipient = apierr.New(400, "invalid_recipient_key", "recipientPublicKey must be an X25519 (32 bytes) or ML-KEM-768+X25519 (1216 bytes) HPKE public key")

func kemFor(pub []byte) (hpke.KEM, string, error) {
	switch len(pub) {
	case 32:
		return hpke.DHKEM(ecdhX25519()), SuiteX25519, nil
	case 1216:
		return hpke.MLKEM768X25519(), SuiteMLKEM768X25519, nil
	}
	return nil, "", errBadRecipient
}

// SealToRecipient encrypts plaintext to a client's HPKE public key (base
// mode, HKDF-SHA256, AES-256-GCM). info binds the ciphertext to its use
// (the ceremony, the user): the client passes the same info to open it.
func SealToRecipient(recipientPublicKey, plaintext, info []byte) (enc, ciphertext []byte, suite string, err error) {
	kem, suite, err := kemFor(recipientPublicKey)
	if err != nil {
		return nil, nil, "", err
	}
	pk, err := kem.NewPublicKey(recipientPublicKey)
	if err != nil {
		return nil, nil, "", errBadRecipient.Wrap(err)
	}
	enc, s, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info)
	if err != nil {
		return nil, nil, "", fmt.Errorf("enclave: hpke: %w", err)
	}
	ct, err := s.Seal(nil, plaintext)
	if err != nil {
		return nil, nil, "", fmt.Errorf("enclave: hpke: %w", err)
	}
	return enc, ct, suite, nil
}

// ValidRecipientKey checks a client's HPKE public key without using it.
func ValidRecipientKey(pub []byte) error {
	kem, _, err := kemFor(pub)
	if err != nil {
		return err
	}
	if _, err := kem.NewPublicKey(pub); err != nil {
		return errBadRecipient.Wrap(err)
	}
	return nil
}

// OpenFromRecipient is the client side of SealToRecipient (tests, SDKs in Go).
func OpenFromRecipient(priv hpke.PrivateKey, enc, ciphertext, info []byte) ([]byte, error) {
	r, err := hpke.NewRecipient(enc, priv, hpke.HKDFSHA256(), hpke.AES256GCM(), info)
	if err != nil {
		return nil, err
	}
	return r.Open(nil, ciphertext)
}

// HPKEKey is the appliance's own HPKE key pair (ML-KEM-768+X25519),
// derived from the root key so every start has the same one (decisions/09).
// Its public key is published and bound in attestation quotes; clients seal
// keys they store to it.
func (r *Root) HPKEKey() (hpke.PrivateKey, error) {
	ikm := r.derive(nil, "keywarden hpke appliance key v1", 64)
	defer clear(ikm)
	return hpke.MLKEM768X25519().DeriveKeyPair(ikm)
}

// OpenSealedToAppliance opens a value a client sealed to the appliance's
// HPKE public key with info.
func (r *Root) OpenSealedToAppliance(enc, ciphertext, info []byte) ([]byte, error) {
	k, err := r.HPKEKey()
	if err != nil {
		return nil, err
	}
	pt, err := OpenFromRecipient(k, enc, ciphertext, info)
	if err != nil {
		return nil, apierr.New(400, "hpke_open_failed", "the sealed value does not open with the appliance key and this info").Wrap(err)
	}
	return pt, nil
}
