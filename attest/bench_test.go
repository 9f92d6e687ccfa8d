//go:build cgo

package attest_test

import (
	"context"
	"testing"

	"github.com/keywarden/keywarden/attest"
)

// BenchmarkQuote measures a quote on the in-process simulator: the cost of
// the Go side and the command round trips, not of a hardware TPM (which
// takes tens of milliseconds per command).
func BenchmarkQuote(b *testing.B) {
	tpm := openSim(b)
	_, ak := newAK(b, tpm)
	opts := attest.QuoteOptions{Nonce: randBytes(b, 32), BoundKey: randBytes(b, 32), PCRs: quotedPCRs}
	for b.Loop() {
		if _, err := attest.Quote(context.Background(), tpm, ak, opts); err != nil {
			b.Fatal(err)
		}
	}
}
