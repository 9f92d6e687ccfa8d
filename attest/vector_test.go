package attest_test

// These tests need neither cgo nor a TPM: they check the pure verifier
// against a quote the simulator made once (testdata/vector.json; regenerate
// with go test -run TestWriteVector -update).

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/attest"
)

type vector struct {
	Nonce    []byte           `json:"nonce"`
	AKName   []byte           `json:"akName"`
	Policy   *attest.Policy   `json:"policy"`
	Evidence *attest.Evidence `json:"evidence"`
}

func loadVector(t testing.TB) (raw []byte, v vector) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "vector.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	raw, err = json.Marshal(v.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	return raw, v
}

func TestVerifyVector(t *testing.T) {
	raw, v := loadVector(t)
	ev, err := attest.ParseEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	facts, err := attest.Verify(ev, attest.VerifyOptions{Nonce: v.Nonce, BoundKey: v.Evidence.BoundKey, Policy: v.Policy, AKName: v.AKName})
	if err != nil {
		t.Fatalf("Verify of the test vector: %v", err)
	}
	if facts.ReportedVersion != "v0.0.0-test" || !facts.AKPinned {
		t.Fatalf("facts: %+v", facts)
	}
	// The same evidence, a different nonce: refused. (The TPM cases are in
	// quote_test.go; this one runs without cgo.)
	other := bytes.Clone(v.Nonce)
	other[0] ^= 1
	if _, err := attest.Verify(ev, attest.VerifyOptions{Nonce: other, Policy: v.Policy, AKName: v.AKName}); !errors.Is(err, attest.ErrNonceMismatch) {
		t.Fatalf("other nonce: %v", err)
	}
}

func TestParseEvidence(t *testing.T) {
	raw, _ := loadVector(t)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"not JSON", []byte("quote")},
		{"trailing data", append(bytes.Clone(raw), []byte(" {}")...)},
		{"wrong format", bytes.Replace(raw, []byte(attest.EvidenceFormat), []byte("other"), 1)},
		{"too large", make([]byte, attest.MaxEvidenceSize+1)},
		{"PCR key not a number", []byte(`{"format":"` + attest.EvidenceFormat + `","pcrs":{"x":""}}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := attest.ParseEvidence(tc.in); !errors.Is(err, attest.ErrMalformed) {
				t.Fatalf("ParseEvidence = %v, want ErrMalformed", err)
			}
		})
	}
}

// FuzzVerify feeds the verifier hostile evidence. It must never panic, and
// whatever it accepts under the pinned AK must carry the vector's signed
// quote and PCR values (the signature cannot be moved to other content).
func FuzzVerify(f *testing.F) {
	raw, v := loadVector(f)
	f.Add(raw)
	f.Add([]byte(`{"format":"` + attest.EvidenceFormat + `","pcrBank":"sha256"}`))
	opts := attest.VerifyOptions{Nonce: v.Nonce, Policy: v.Policy, AKName: v.AKName}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := attest.ParseEvidence(data)
		if err != nil {
			return
		}
		facts, err := attest.Verify(ev, opts)
		if err != nil {
			var ve *attest.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if !bytes.Equal(ev.Quote, v.Evidence.Quote) || !bytes.Equal(ev.AKPublic, v.Evidence.AKPublic) {
			t.Fatal("accepted evidence with another quote or key")
		}
		for i, val := range facts.PCRs {
			if !bytes.Equal(val, v.Evidence.PCRs[i]) {
				t.Fatalf("accepted another value for PCR %d", i)
			}
		}
	})
}

// FuzzVerifyFields mutates the binary TPM structures directly, which the
// JSON fuzzer reaches only through base64. The decoders must not panic, and
// every refusal must carry a reason.
func FuzzVerifyFields(f *testing.F) {
	_, v := loadVector(f)
	f.Add(v.Evidence.Quote, v.Evidence.Signature, v.Evidence.AKPublic)
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0, 0x18, 0, 0x0b}, []byte{0, 0x23, 0, 0x0b})
	f.Fuzz(func(t *testing.T, quote, sig, akPublic []byte) {
		ev := *v.Evidence
		ev.Quote, ev.Signature, ev.AKPublic = quote, sig, akPublic
		_, err := attest.Verify(&ev, attest.VerifyOptions{Nonce: v.Nonce, Policy: v.Policy})
		var ve *attest.VerifyError
		if err != nil && !errors.As(err, &ve) {
			t.Fatalf("error without a reason: %v", err)
		}
		_, _ = attest.AKName(akPublic)
		_, _ = attest.AKPublicKeyPEM(akPublic)
	})
}

func FuzzParseAKBlob(f *testing.F) {
	_, v := loadVector(f)
	good, err := (&attest.AKBlob{Public: v.Evidence.AKPublic, Private: []byte{0, 1, 2}}).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("KWAK\x01\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := attest.ParseAKBlob(data)
		if err != nil {
			if !errors.Is(err, attest.ErrBadAKBlob) {
				t.Fatalf("error not ErrBadAKBlob: %v", err)
			}
			return
		}
		again, err := b.MarshalBinary()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("blob does not round-trip: %v", err)
		}
	})
}

func randBytesNoTPM(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
