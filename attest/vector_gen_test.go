//go:build cgo

package attest_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/attest"
)

var update = flag.Bool("update", false, "rewrite testdata/vector.json from the simulator")

// TestWriteVector regenerates the verifier's test vector (go test -run
// TestWriteVector -update ./attest/). The vector lets the pure verifier's
// tests and fuzzers run without cgo or a TPM.
func TestWriteVector(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate testdata/vector.json")
	}
	tpm := openSim(t)
	_, ak := newAK(t, tpm)
	extend(t, tpm, 23, "keywarden test vector")
	nonce := randBytes(t, 32)
	key := randBytes(t, 32)
	ev := quote(t, tpm, ak, nonce, key, quotedPCRs)
	ev.Version, ev.BinaryDigest = "v0.0.0-test", "sha256:00"
	v := vector{Nonce: nonce, AKName: ak.Name(), Policy: mustPolicy(t, ev.PCRs), Evidence: ev}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "vector.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = attest.EvidenceFormat
}
