package attest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
)

// TestSwtpm runs the production path against a separate TPM process: swtpm
// over its TCP command port, opened with tpmdev. It needs no cgo.
func TestSwtpm(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	ctx := context.Background()
	raw, err := tpmdev.Open(ctx, sw.Spec)
	if err != nil {
		t.Fatalf("tpmdev.Open(%s): %v\n%s", sw.Spec, err, sw.Log())
	}
	defer raw.Close()
	tpm := tpmdev.NewCounting(raw)
	transient := func(want int, after string) {
		t.Helper()
		hs, err := tpmdev.TransientHandles(tpm)
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) != want {
			t.Fatalf("after %s: transient handles %v, want %d", after, hs, want)
		}
	}

	blob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		t.Fatalf("CreateAK: %v", err)
	}
	transient(0, "CreateAK")
	ak, err := attest.LoadAK(ctx, tpm, blob)
	if err != nil {
		t.Fatalf("LoadAK: %v", err)
	}
	transient(1, "LoadAK")

	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 23}
	nonce, key := randBytesNoTPM(t, 32), randBytesNoTPM(t, 65)
	before := tpm.Count()
	ev, err := attest.Quote(ctx, tpm, ak, attest.QuoteOptions{Nonce: nonce, BoundKey: key, PCRs: pcrs})
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	if tpm.Count() == before {
		t.Fatal("Quote sent no TPM command")
	}
	transient(1, "Quote")
	values, err := attest.ReadPCRs(ctx, tpm, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := blob.Name()
	policy, err := attest.PolicyFromPCRs(values)
	if err != nil {
		t.Fatal(err)
	}
	opts := attest.VerifyOptions{Nonce: nonce, BoundKey: key, Policy: policy, AKName: name}
	if _, err := attest.Verify(ev, opts); err != nil {
		t.Fatalf("Verify of swtpm's quote: %v", err)
	}
	opts.Nonce = randBytesNoTPM(t, 32)
	if _, err := attest.Verify(ev, opts); !errors.Is(err, attest.ErrNonceMismatch) {
		t.Fatalf("Verify with another nonce: %v", err)
	}
	if err := ak.Close(); err != nil {
		t.Fatal(err)
	}
	transient(0, "AK.Close")
	if certs, chain, err := attest.ReadEKCertificates(ctx, tpm); err != nil || len(certs)+len(chain) != 0 {
		t.Fatalf("ReadEKCertificates on swtpm without swtpm_setup: %d, %d, %v", len(certs), len(chain), err)
	}
}
