//go:build cgo

package attest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/tpmdev"
)

// Tests that use the simulator must not call t.Parallel: it is one per
// process, and simulator.Get blocks until the previous user closed it.

// openSim returns a freshly manufactured simulator, closed when the test ends.
func openSim(t testing.TB) transport.TPM {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return transport.FromReadWriter(sim)
}

// wantTransient fails the test unless exactly n transient objects are
// loaded: the leaked-handle check after each TPM operation.
func wantTransient(t testing.TB, tpm transport.TPM, n int, after string) {
	t.Helper()
	hs, err := tpmdev.TransientHandles(tpm)
	if err != nil {
		t.Fatalf("list transient handles: %v", err)
	}
	if len(hs) != n {
		t.Fatalf("after %s: %d transient handles loaded (%v), want %d", after, len(hs), hs, n)
	}
}

func newAK(t testing.TB, tpm transport.TPM) (*attest.AKBlob, *attest.AK) {
	t.Helper()
	ctx := context.Background()
	blob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		t.Fatalf("CreateAK: %v", err)
	}
	ak, err := attest.LoadAK(ctx, tpm, blob)
	if err != nil {
		t.Fatalf("LoadAK: %v", err)
	}
	t.Cleanup(func() { _ = ak.Close() })
	return blob, ak
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func extend(t testing.TB, tpm transport.TPM, pcr int, data string) {
	t.Helper()
	d := sha256.Sum256([]byte(data))
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("extend PCR %d: %v", pcr, err)
	}
}

func quote(t testing.TB, tpm transport.TPM, ak *attest.AK, nonce, key []byte, pcrs []int) *attest.Evidence {
	t.Helper()
	ev, err := attest.Quote(context.Background(), tpm, ak, attest.QuoteOptions{Nonce: nonce, BoundKey: key, PCRs: pcrs})
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	return ev
}

// clone deep-copies evidence through its JSON form (which also exercises
// the wire format).
func clone(t testing.TB, ev *attest.Evidence) *attest.Evidence {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	out, err := attest.ParseEvidence(b)
	if err != nil {
		t.Fatalf("ParseEvidence of marshalled evidence: %v", err)
	}
	return out
}

func mustPolicy(t testing.TB, values map[int][]byte) *attest.Policy {
	t.Helper()
	p, err := attest.PolicyFromPCRs(values)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }

// openSeeded opens the simulator with fixed seeds, so a "restart" (Close,
// then openSeeded with the same seed) finds the same hierarchy keys.
func openSeeded(t testing.TB, seed int64) transport.TPMCloser {
	t.Helper()
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	return transport.FromReadWriteCloser(sim)
}
