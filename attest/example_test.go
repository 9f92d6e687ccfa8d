package attest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/keywarden/keywarden/attest"
)

func ExampleParsePolicy() {
	p, err := attest.ParsePolicy([]byte(`
bank: sha256
pcrs:
  "7": ["` + "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969" + `"]
  "11":
    - "` + "0000000000000000000000000000000000000000000000000000000000000000" + `"
    - "` + "1111111111111111111111111111111111111111111111111111111111111111" + `"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, i := range p.Indices() {
		fmt.Printf("PCR %d: %d allowed value(s)\n", i, len(p.PCRs[i]))
	}
	_, err = attest.ParsePolicy([]byte(`pcrs: {}`))
	fmt.Println(err)
	// Output:
	// PCR 7: 1 allowed value(s)
	// PCR 11: 2 allowed value(s)
	// attest: no_policy: the policy names no PCR
}

func ExampleVerify() {
	// A client checks the appliance before sealing a key to it. It chose
	// nonce, fetched GET /v1/attestation?nonce=…, and has the operator's
	// policy and the appliance's pinned AK Name.
	var (
		nonce, body, policyFile, akName []byte
	)
	ev, err := attest.ParseEvidence(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	policy, err := attest.ParsePolicy(policyFile)
	if err != nil {
		fmt.Println(err)
		return
	}
	facts, err := attest.Verify(ev, attest.VerifyOptions{Nonce: nonce, Policy: policy, AKName: akName})
	switch {
	case errors.Is(err, attest.ErrPCRNotAllowed):
		fmt.Println("the appliance runs software the policy does not allow:", err)
	case err != nil:
		fmt.Println("refused:", err)
	default:
		// facts.BoundKey is the appliance's HPKE key, bound to this quote:
		// seal to it, and to no other key.
		_ = facts.BoundKey
	}
}

// TestExtraData recomputes decisions/10's qualifying data by hand.
func TestExtraData(t *testing.T) {
	nonce := []byte("0123456789abcdef")
	key := []byte("appliance HPKE public key")
	kh := sha256.Sum256(key)
	want := sha256.Sum256(append(append([]byte("keywarden-quote-v1"), nonce...), kh[:]...))
	if got := attest.ExtraData(nonce, key); hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
		t.Fatalf("ExtraData = %x, want %x", got, want)
	}
	if hex.EncodeToString(attest.ExtraData(nonce, key)) == hex.EncodeToString(attest.ExtraData(nonce, append(key, 0))) {
		t.Fatal("ExtraData ignores the key")
	}
}

// TestBuildsWithoutCgo: the release build is CGO_ENABLED=0, and the server
// links this package.
func TestBuildsWithoutCgo(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	cmd := exec.Command(gobin, "build", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
}

func BenchmarkVerify(b *testing.B) {
	_, v := loadVector(b)
	opts := attest.VerifyOptions{Nonce: v.Nonce, BoundKey: v.Evidence.BoundKey, Policy: v.Policy, AKName: v.AKName}
	for b.Loop() {
		if _, err := attest.Verify(v.Evidence, opts); err != nil {
			b.Fatal(err)
		}
	}
}
