package attestapi_test

import (
	"errors"
	"testing"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/server/attestapi"
)

// dummyTPM answers nothing: Validate never sends a command.
type dummyTPM struct{}

func (dummyTPM) Send([]byte) ([]byte, error) { return nil, errors.New("no TPM") }

func TestOptionsValidate(t *testing.T) {
	key, err := newHPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts attestapi.Options
		ok   bool
	}{
		{"minimal", attestapi.Options{PCRs: []int{16}}, true},
		{"with HPKE key", attestapi.Options{PCRs: []int{0, 7, 16}, HPKEPublicKey: key}, true},
		{"no PCRs, no AK", attestapi.Options{}, true},
		{"AK without PCRs", attestapi.Options{TPM: dummyTPM{}, AK: &attest.AK{}}, false},
		{"PCR 24", attestapi.Options{PCRs: []int{24}}, false},
		{"PCR -1", attestapi.Options{PCRs: []int{-1}}, false},
		{"AK without TPM", attestapi.Options{PCRs: []int{16}, AK: &attest.AK{}}, false},
		{"AK with TPM", attestapi.Options{PCRs: []int{16}, TPM: dummyTPM{}, AK: &attest.AK{}}, true},
		{"bad HPKE key", attestapi.Options{PCRs: []int{16}, HPKEPublicKey: []byte("short")}, false},
		{"negative rate", attestapi.Options{PCRs: []int{16}, Rate: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := attestapi.New(tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("New = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
