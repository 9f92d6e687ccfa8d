package attestapi_test

import (
	"bytes"
	"crypto/hpke"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/server/attestapi"
)

// newHPKEKey returns a fresh ML-KEM-768+X25519 public key, the kind the
// appliance has.
func newHPKEKey() ([]byte, error) {
	k, err := hpke.MLKEM768X25519().GenerateKey()
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

// FuzzParseNonce: the nonce query parameter is untrusted input. Whatever
// it is, ParseNonce either refuses it with bad_nonce or returns exactly the
// bytes its hex spells, 16..64 of them.
func FuzzParseNonce(f *testing.F) {
	for _, s := range []string{"", "00", "0011223344556677889900aabbccddeeff", "ZZ", "0x00112233445566778899aabbccddeeff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := attestapi.ParseNonce(s)
		if err != nil {
			if b != nil {
				t.Fatal("bytes returned with an error")
			}
			if err != attest.ErrBadNonce && err.Error() != attest.ErrBadNonce.WithMessage("the nonce must be 16 to 64 bytes in hex").Error() {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(b) < attest.MinNonce || len(b) > attest.MaxNonce {
			t.Fatalf("accepted a nonce of %d bytes", len(b))
		}
		want, err := hex.DecodeString(s)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("ParseNonce(%q) = %x", s, b)
		}
	})
}

// FuzzParseApplianceKey: the body of GET /v1/appliance-key comes from the
// network. Accepted keys are usable HPKE keys with the matching suite.
func FuzzParseApplianceKey(f *testing.F) {
	key, err := newHPKEKey()
	if err != nil {
		f.Fatal(err)
	}
	good := `{"hpkePublicKey":"` + base64.StdEncoding.EncodeToString(key) + `","suite":"` + enclave.SuiteMLKEM768X25519 + `"}`
	f.Add([]byte(good))
	f.Add([]byte(`{"hpkePublicKey":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `","suite":"` + enclave.SuiteX25519 + `"}`))
	f.Add([]byte(`{"hpkePublicKey":"AAAA","suite":"x"}`))
	f.Add([]byte(good + `{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := attestapi.ParseApplianceKey(data)
		if err != nil {
			return
		}
		if enclave.ValidRecipientKey(k.HPKEPublicKey) != nil || k.Suite != attestapi.Suite(k.HPKEPublicKey) {
			t.Fatalf("accepted %q", data)
		}
	})
}

func TestParseApplianceKey(t *testing.T) {
	key, err := newHPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(key)
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{
		{"good", `{"hpkePublicKey":"` + b64 + `","suite":"` + enclave.SuiteMLKEM768X25519 + `"}`, true},
		{"wrong suite for the key", `{"hpkePublicKey":"` + b64 + `","suite":"` + enclave.SuiteX25519 + `"}`, false},
		{"unknown field", `{"hpkePublicKey":"` + b64 + `","suite":"` + enclave.SuiteMLKEM768X25519 + `","x":1}`, false},
		{"trailing data", `{"hpkePublicKey":"` + b64 + `","suite":"` + enclave.SuiteMLKEM768X25519 + `"} {}`, false},
		{"short key", `{"hpkePublicKey":"AAAA","suite":""}`, false},
		{"no key", `{"suite":"` + enclave.SuiteMLKEM768X25519 + `"}`, false},
		{"not JSON", `hpkePublicKey`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := attestapi.ParseApplianceKey([]byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("ParseApplianceKey = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
