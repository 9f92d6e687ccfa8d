//go:build cgo

package attest_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
)

// TestTPM2CheckQuote hands the appliance's evidence to tpm2_checkquote from
// tpm2-tools, an independent verifier: the AK as a PEM public key, the
// TPMS_ATTEST as the message, the TPMT_SIGNATURE, the PCR values (raw,
// ascending, with -l naming the selection) and the qualifying data.
func TestTPM2CheckQuote(t *testing.T) {
	bin := swtpmtest.Require(t, "tpm2_checkquote")
	tpm := openSim(t)
	_, ak := newAK(t, tpm)
	_, other := newAK(t, tpm)
	extend(t, tpm, 23, "appliance v1")
	nonce, key := randBytes(t, 32), randBytes(t, 32)
	ev := quote(t, tpm, ak, nonce, key, quotedPCRs)

	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pem, err := attest.AKPublicKeyPEM(ev.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, err := attest.AKPublicKeyPEM(other.Public())
	if err != nil {
		t.Fatal(err)
	}
	pcrs := slices.Sorted(func(yield func(int) bool) {
		for i := range ev.PCRs {
			if !yield(i) {
				return
			}
		}
	})
	var values []byte
	var list []string
	for _, i := range pcrs {
		values = append(values, ev.PCRs[i]...)
		list = append(list, fmt.Sprint(i))
	}
	tampered := slices.Clone(values)
	tampered[0] ^= 1

	args := func(pub, pcrFile, qual string) []string {
		return []string{
			"-u", pub,
			"-m", write("quote.msg", ev.Quote),
			"-s", write("quote.sig", ev.Signature),
			"-f", pcrFile,
			"-l", "sha256:" + strings.Join(list, ","),
			"-g", "sha256",
			"-q", qual,
		}
	}
	goodQual := hex.EncodeToString(attest.ExtraData(nonce, key))
	for _, tc := range []struct {
		name   string
		args   []string
		accept bool
		why    string // in tpm2_checkquote's output when it refuses
	}{
		{"genuine quote", args(write("ak.pem", pem), write("pcrs.bin", values), goodQual), true, ""},
		{"wrong qualification (another nonce)", args(write("ak.pem", pem), write("pcrs.bin", values), hex.EncodeToString(attest.ExtraData(randBytes(t, 32), key))), false, "nonce"},
		{"wrong qualification (another bound key)", args(write("ak.pem", pem), write("pcrs.bin", values), hex.EncodeToString(attest.ExtraData(nonce, randBytes(t, 32)))), false, "nonce"},
		{"PCR value changed", args(write("ak.pem", pem), write("bad-pcrs.bin", tampered), goodQual), false, "PCR"},
		{"another AK", args(write("other.pem", otherPEM), write("pcrs.bin", values), goodQual), false, "public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.CommandContext(context.Background(), bin, tc.args...).CombinedOutput()
			t.Logf("tpm2_checkquote: %v\n%s", err, out)
			if tc.accept && err != nil {
				t.Fatalf("tpm2_checkquote refused the appliance's quote: %v\n%s", err, out)
			}
			if !tc.accept && err == nil {
				t.Fatalf("tpm2_checkquote accepted it:\n%s", out)
			}
			if !tc.accept {
				var exit *exec.ExitError
				if !asExit(err, &exit) {
					t.Fatalf("tpm2_checkquote did not run: %v", err)
				}
				if !strings.Contains(string(out), tc.why) {
					t.Fatalf("tpm2_checkquote refused for another reason than %q:\n%s", tc.why, out)
				}
			}
		})
	}
}

func asExit(err error, target **exec.ExitError) bool { return errors.As(err, target) }
