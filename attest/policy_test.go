package attest_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/keywarden/keywarden/attest"
)

var (
	hexA = strings.Repeat("a", 64)
	hexB = strings.Repeat("0B", 32)
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want map[int]int // PCR → number of allowed values
		err  error
	}{
		{"json", `{"pcrs":{"0":["` + hexA + `"],"7":["` + hexA + `","` + hexB + `"]}}`, map[int]int{0: 1, 7: 2}, nil},
		{"json with bank", `{"bank":"sha256","pcrs":{"23":["` + hexA + `"]}}`, map[int]int{23: 1}, nil},
		{"yaml", "pcrs:\n  \"0\": [\"" + hexA + "\"]\n  11:\n    - " + hexB + "\n", map[int]int{0: 1, 11: 1}, nil},
		{"yaml all-digit value", "pcrs:\n  7:\n    - " + strings.Repeat("0", 64) + "\n", map[int]int{7: 1}, nil},
		{"duplicate values collapse", `{"pcrs":{"0":["` + hexA + `","` + strings.ToUpper(hexA) + `"]}}`, map[int]int{0: 1}, nil},
		{"empty document", "", nil, attest.ErrNoPolicy},
		{"empty object", "{}", nil, attest.ErrNoPolicy},
		{"no PCRs", `{"pcrs":{}}`, nil, attest.ErrNoPolicy},
		{"PCR without values", `{"pcrs":{"0":[]}}`, nil, attest.ErrBadPolicy},
		{"PCR 24", `{"pcrs":{"24":["` + hexA + `"]}}`, nil, attest.ErrBadPolicy},
		{"PCR -1", `{"pcrs":{"-1":["` + hexA + `"]}}`, nil, attest.ErrBadPolicy},
		{"PCR 07", `{"pcrs":{"07":["` + hexA + `"]}}`, nil, attest.ErrBadPolicy},
		{"PCR name", `{"pcrs":{"boot":["` + hexA + `"]}}`, nil, attest.ErrBadPolicy},
		{"short value", `{"pcrs":{"0":["` + hexA[:62] + `"]}}`, nil, attest.ErrBadPolicy},
		{"sha1-sized value", `{"pcrs":{"0":["` + hexA[:40] + `"]}}`, nil, attest.ErrBadPolicy},
		{"not hex", `{"pcrs":{"0":["` + strings.Repeat("g", 64) + `"]}}`, nil, attest.ErrBadPolicy},
		{"bank sha1", `{"bank":"sha1","pcrs":{"0":["` + hexA + `"]}}`, nil, attest.ErrBadPolicy},
		{"unknown field", `{"pcr":{"0":["` + hexA + `"]}}`, nil, attest.ErrBadPolicy},
		{"duplicate key", "pcrs:\n  0: [\"" + hexA + "\"]\n  0: [\"" + hexB + "\"]\n", nil, attest.ErrBadPolicy},
		{"two documents", "pcrs:\n  0: [\"" + hexA + "\"]\n---\npcrs: {}\n", nil, attest.ErrBadPolicy},
		{"not a policy", "[1, 2]", nil, attest.ErrBadPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := attest.ParsePolicy([]byte(tc.in))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParsePolicy = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if len(p.PCRs) != len(tc.want) {
				t.Fatalf("PCRs %v, want %v", p.Indices(), tc.want)
			}
			for i, n := range tc.want {
				if len(p.PCRs[i]) != n {
					t.Fatalf("PCR %d has %d values, want %d", i, len(p.PCRs[i]), n)
				}
			}
		})
	}
}

func TestPolicyRoundTrip(t *testing.T) {
	in, err := attest.ParsePolicy([]byte(`{"pcrs":{"10":["` + hexA + `"],"2":["` + hexB + `","` + hexA + `"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"bank":"sha256","pcrs":{"2":["` + strings.ToLower(hexB) + `","` + hexA + `"],"10":["` + hexA + `"]}}`
	if string(j) != want {
		t.Fatalf("JSON:\n%s\nwant\n%s", j, want)
	}
	var fromJSON attest.Policy
	if err := json.Unmarshal(j, &fromJSON); err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := attest.ParsePolicy(y)
	if err != nil {
		t.Fatalf("ParsePolicy of its own YAML:\n%s\n%v", y, err)
	}
	for _, p := range []*attest.Policy{&fromJSON, fromYAML} {
		for _, i := range in.Indices() {
			for _, v := range in.PCRs[i] {
				if !p.Allows(i, v) {
					t.Fatalf("round trip lost PCR %d value %x", i, v)
				}
			}
		}
		if len(p.PCRs) != len(in.PCRs) {
			t.Fatal("round trip changed the PCR set")
		}
	}
	var bad attest.Policy
	if err := json.Unmarshal([]byte(`{"pcrs":{}}`), &bad); !errors.Is(err, attest.ErrNoPolicy) {
		t.Fatalf("UnmarshalJSON of an empty policy: %v", err)
	}
	if err := yaml.Unmarshal([]byte(`pcrs: {0: ["zz"]}`), &bad); !errors.Is(err, attest.ErrBadPolicy) {
		t.Fatalf("UnmarshalYAML of a bad value: %v", err)
	}
}

func TestPolicyFromPCRs(t *testing.T) {
	v := make([]byte, 32)
	p, err := attest.PolicyFromPCRs(map[int][]byte{7: v, 0: v})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Indices(); len(got) != 2 || got[0] != 0 || got[1] != 7 {
		t.Fatalf("Indices = %v", got)
	}
	v[0] = 1 // the policy keeps its own copy
	if !p.Allows(7, make([]byte, 32)) || p.Allows(7, v) || p.Allows(1, make([]byte, 32)) {
		t.Fatal("Allows is wrong")
	}
	if _, err := attest.PolicyFromPCRs(nil); !errors.Is(err, attest.ErrNoPolicy) {
		t.Fatalf("PolicyFromPCRs(nil) = %v", err)
	}
	if _, err := attest.PolicyFromPCRs(map[int][]byte{0: {1, 2}}); !errors.Is(err, attest.ErrBadPolicy) {
		t.Fatalf("PolicyFromPCRs with a short value = %v", err)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"pcrs":{"0":["` + hexA + `"]}}`))
	f.Add([]byte("pcrs:\n  7: [" + hexB + "]\n"))
	f.Add([]byte(`{"bank":"sha256","pcrs":{"23":[]}}`))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := attest.ParsePolicy(data)
		if err != nil {
			var ve *attest.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParsePolicy returned an invalid policy: %v", err)
		}
		j, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := attest.ParsePolicy(j); err != nil {
			t.Fatalf("policy does not parse back from %s: %v", j, err)
		}
	})
}

// TestPolicyValueMarshals: a Policy value (not only a pointer) marshals in
// the file form.
func TestPolicyValueMarshals(t *testing.T) {
	p, err := attest.PolicyFromPCRs(map[int][]byte{3: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(struct{ P attest.Policy }{*p})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"P":{"bank":"sha256","pcrs":{"3":["` + strings.Repeat("0", 64) + `"]}}}`; string(j) != want {
		t.Fatalf("JSON %s, want %s", j, want)
	}
	y, err := yaml.Marshal(*p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.ParsePolicy(y); err != nil {
		t.Fatalf("YAML of a value does not parse back:\n%s\n%v", y, err)
	}
}
