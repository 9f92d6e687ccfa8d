package attest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxPolicySize bounds a policy file [ParsePolicy] accepts.
const MaxPolicySize = 1 << 20

// Policy is an operator's expectation of the appliance's PCRs: for each PCR
// of the SHA-256 bank, the values it may have (any one matches, so one
// policy can admit the firmware before and after an update). Every PCR the
// policy names must be covered by the quote and hold one of its values; a
// PCR the policy does not name is not checked.
//
// In JSON or YAML:
//
//	{"bank": "sha256", "pcrs": {"0": ["<64 hex digits>", …], "7": […]}}
//
// "bank" may be left out; only "sha256" is accepted. A policy that names no
// PCR is refused with [ErrNoPolicy] (decisions/11): it would accept any
// software on any machine with a TPM.
type Policy struct {
	// PCRs maps a PCR index (0..23) to the SHA-256 values it may hold.
	PCRs map[int][][]byte
}

type policyWire struct {
	Bank string              `json:"bank" yaml:"bank"`
	PCRs map[string][]string `json:"pcrs" yaml:"pcrs"`
}

// ParsePolicy reads a policy in YAML or JSON (JSON is read as YAML) and
// validates it. Unknown fields, duplicate keys, PCR indices outside 0..23
// or not in canonical decimal form, values that are not 64 hex digits and
// PCRs with no value are refused with [ErrBadPolicy]; a policy without PCRs
// with [ErrNoPolicy].
func ParsePolicy(data []byte) (*Policy, error) {
	if len(data) > MaxPolicySize {
		return nil, refuse(ErrBadPolicy, fmt.Sprintf("policy is %d bytes, more than %d", len(data), MaxPolicySize), nil)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var w policyWire
	if err := dec.Decode(&w); errors.Is(err, io.EOF) {
		return nil, refuse(ErrNoPolicy, "the policy is empty", nil)
	} else if err != nil {
		return nil, refuse(ErrBadPolicy, "cannot parse the policy", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, refuse(ErrBadPolicy, "more than one document in the policy", err)
	}
	return w.policy()
}

func (w *policyWire) policy() (*Policy, error) {
	if w.Bank != "" && w.Bank != "sha256" {
		return nil, refuse(ErrBadPolicy, fmt.Sprintf("bank %q: only sha256 is supported", w.Bank), nil)
	}
	p := &Policy{PCRs: make(map[int][][]byte, len(w.PCRs))}
	for k, vals := range w.PCRs {
		i, err := strconv.Atoi(k)
		if err != nil || strconv.Itoa(i) != k || i < 0 || i > MaxPCR {
			return nil, refuse(ErrBadPolicy, fmt.Sprintf("PCR %q: want a decimal index 0..%d", k, MaxPCR), nil)
		}
		if len(vals) == 0 {
			return nil, refuse(ErrBadPolicy, fmt.Sprintf("PCR %d has no allowed value", i), nil)
		}
		for _, v := range vals {
			b, err := hex.DecodeString(strings.TrimSpace(v))
			if err != nil || len(b) != 32 {
				return nil, refuse(ErrBadPolicy, fmt.Sprintf("PCR %d: value %q is not 64 hex digits", i, v), nil)
			}
			if !slices.ContainsFunc(p.PCRs[i], func(x []byte) bool { return bytes.Equal(x, b) }) {
				p.PCRs[i] = append(p.PCRs[i], b)
			}
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Validate checks the policy as [ParsePolicy] does: at least one PCR, each
// index in 0..23 with at least one 32-byte value.
func (p *Policy) Validate() error {
	if p == nil || len(p.PCRs) == 0 {
		return refuse(ErrNoPolicy, "the policy names no PCR", nil)
	}
	for i, vals := range p.PCRs {
		if i < 0 || i > MaxPCR {
			return refuse(ErrBadPolicy, fmt.Sprintf("PCR %d: index outside 0..%d", i, MaxPCR), nil)
		}
		if len(vals) == 0 {
			return refuse(ErrBadPolicy, fmt.Sprintf("PCR %d has no allowed value", i), nil)
		}
		for _, v := range vals {
			if len(v) != 32 {
				return refuse(ErrBadPolicy, fmt.Sprintf("PCR %d: a value of %d bytes, want 32", i, len(v)), nil)
			}
		}
	}
	return nil
}

// Indices returns the policy's PCR indices in increasing order.
func (p *Policy) Indices() []int {
	out := make([]int, 0, len(p.PCRs))
	for i := range p.PCRs {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// Allows reports whether value is one of the values the policy allows for
// PCR i. A PCR the policy does not name allows nothing.
func (p *Policy) Allows(i int, value []byte) bool {
	return slices.ContainsFunc(p.PCRs[i], func(x []byte) bool { return bytes.Equal(x, value) })
}

// PolicyFromPCRs makes a policy that allows exactly the given values, one
// per PCR: the starting point `keywarden attest policy` prints for the
// operator to review (and to extend with the values after a planned
// firmware update).
func PolicyFromPCRs(values map[int][]byte) (*Policy, error) {
	p := &Policy{PCRs: make(map[int][][]byte, len(values))}
	for i, v := range values {
		p.PCRs[i] = [][]byte{bytes.Clone(v)}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// MarshalJSON writes the policy in its file form, PCRs in numeric order.
func (p Policy) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"bank":"sha256","pcrs":{`)
	for n, i := range p.Indices() {
		if n > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":`, i)
		vals, err := json.Marshal(hexValues(p.PCRs[i]))
		if err != nil {
			return nil, err
		}
		b.Write(vals)
	}
	b.WriteString(`}}`)
	return b.Bytes(), nil
}

// UnmarshalJSON reads the file form and validates it like [ParsePolicy].
func (p *Policy) UnmarshalJSON(data []byte) error {
	var w policyWire
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return refuse(ErrBadPolicy, "cannot parse the policy", err)
	}
	q, err := w.policy()
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// MarshalYAML writes the file form, PCRs in numeric order.
func (p Policy) MarshalYAML() (any, error) {
	pcrs := &yaml.Node{Kind: yaml.MappingNode}
	for _, i := range p.Indices() {
		vals := &yaml.Node{Kind: yaml.SequenceNode}
		for _, v := range hexValues(p.PCRs[i]) {
			vals.Content = append(vals.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Style: yaml.DoubleQuotedStyle})
		}
		pcrs.Content = append(pcrs.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: strconv.Itoa(i), Style: yaml.DoubleQuotedStyle}, vals)
	}
	return &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "bank"}, {Kind: yaml.ScalarNode, Value: "sha256"},
		{Kind: yaml.ScalarNode, Value: "pcrs"}, pcrs,
	}}, nil
}

// UnmarshalYAML reads the file form and validates it like [ParsePolicy].
func (p *Policy) UnmarshalYAML(n *yaml.Node) error {
	var w policyWire
	if err := n.Decode(&w); err != nil {
		return refuse(ErrBadPolicy, "cannot parse the policy", err)
	}
	q, err := w.policy()
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

func hexValues(vals [][]byte) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = hex.EncodeToString(v)
	}
	return out
}
