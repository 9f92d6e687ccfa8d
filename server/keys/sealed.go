package keys

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
)

// StoreSuite is the one HPKE suite of keys sealed to the appliance key:
// the appliance's own key is ML-KEM-768+X25519 (enclave.Root.HPKEKey),
// with HKDF-SHA256 and AES-256-GCM.
const StoreSuite = enclave.SuiteMLKEM768X25519

// The routes a sealed key can be sent to; each is part of the HPKE info,
// so a blob sealed for one is refused by every other.
const (
	RouteFirebase            = "/v1/firebase/key"
	RoutePasskeyRegistration = "/v1/passkeys/registration/finish"
	RouteImport              = "/v1/admin/keys/import"
	RoutePIN                 = "/v1/pin/registrations"
)

var (
	// ErrSuite refuses a sealed key that names another suite than
	// StoreSuite.
	ErrSuite = apierr.New(http.StatusBadRequest, "unsupported_suite", "suite must be "+StoreSuite+", the suite of the appliance key (GET /v1/appliance-key)")
	// ErrSealedEncoding refuses sealedKey or enc that is not base64.
	ErrSealedEncoding = apierr.New(http.StatusBadRequest, "invalid_sealed_key", "sealedKey and enc must be base64 (standard or URL alphabet, padded or not)")
	// ErrSealedOpen refuses a sealed key that does not open with the
	// appliance key and this route's info: sealed to another key, for
	// another route, owner or method, or altered.
	ErrSealedOpen = apierr.New(http.StatusBadRequest, "hpke_open_failed", "the sealed key does not open with the appliance key and the info of this route and owner")
	// ErrSealedSize refuses a sealed key whose plaintext is not 1 to 1024
	// bytes.
	ErrSealedSize = apierr.New(http.StatusBadRequest, "invalid_key", "the sealed key must hold 1 to 1024 bytes")
)

// SealedKey is a client key sealed with HPKE (base mode) to the
// appliance's key, as store routes accept it instead of "key".
type SealedKey struct {
	SealedKey string `json:"sealedKey"` // the HPKE ciphertext, base64
	Enc       string `json:"enc"`       // the encapsulated key, base64
	Suite     string `json:"suite"`     // StoreSuite
}

// StoreInfo is the HPKE info a client seals a key to store with:
//
//	"keywarden store v1" 0x00 route 0x00 owner 0x00 method
//
// Binding the route, the owner and the method means a sealed blob sent
// for another owner, route or method does not open.
func StoreInfo(route string, owner enclave.Owner, method string) []byte {
	return []byte("keywarden store v1\x00" + route + "\x00" + string(owner) + "\x00" + method)
}

// OpenSealed opens k with the appliance key and the info of (route, owner,
// method). The plaintext is the key to store (1 to 1024 bytes).
func (s *Service) OpenSealed(k SealedKey, route string, owner enclave.Owner, method string) (secret.Bytes, error) {
	if k.Suite != StoreSuite {
		return secret.Bytes{}, ErrSuite
	}
	ct, ok1 := decodeB64(k.SealedKey)
	enc, ok2 := decodeB64(k.Enc)
	if !ok1 || !ok2 || len(ct) == 0 || len(enc) == 0 {
		return secret.Bytes{}, ErrSealedEncoding
	}
	pt, err := s.custody.Root().OpenSealedToAppliance(enc, ct, StoreInfo(route, owner, method))
	if err != nil {
		return secret.Bytes{}, ErrSealedOpen.Wrap(err)
	}
	if len(pt) < enclave.MinKeyBytes || len(pt) > enclave.MaxKeyBytes {
		clear(pt)
		return secret.Bytes{}, ErrSealedSize
	}
	return secret.NewBytes(pt), nil
}

func decodeB64(s string) ([]byte, bool) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b, true
	}
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, true
	}
	return nil, false
}
