package passkey

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// parseAssertionReference is the parse as it was, every member through
// go-webauthn's own types: the differential tests hold parseAssertion to
// exactly its outcome.
func parseAssertionReference(raw []byte) (*protocol.ParsedCredentialAssertionData, *string, error) {
	var a struct {
		protocol.PublicKeyCredential
		Response *struct {
			protocol.AuthenticatorResponse
			AuthenticatorData protocol.URLEncodedBase64 `json:"authenticatorData"`
			Signature         protocol.URLEncodedBase64 `json:"signature"`
			UserHandle        json.RawMessage           `json:"userHandle"`
		} `json:"response"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&a); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("trailing data")
	}
	if a.Response == nil {
		return nil, nil, errors.New("no response")
	}
	var handle *string
	if uh := bytes.TrimSpace(a.Response.UserHandle); len(uh) > 0 && !bytes.Equal(uh, []byte("null")) {
		var h string
		if err := json.Unmarshal(uh, &h); err != nil {
			return nil, nil, err
		}
		handle = &h
	}
	car := protocol.CredentialAssertionResponse{
		PublicKeyCredential: a.PublicKeyCredential,
		AssertionResponse: protocol.AuthenticatorAssertionResponse{
			AuthenticatorResponse: a.Response.AuthenticatorResponse,
			AuthenticatorData:     a.Response.AuthenticatorData,
			Signature:             a.Response.Signature,
		},
	}
	parsed, err := car.Parse()
	return parsed, handle, err
}

// sameParse fails t when parseAssertion and the reference disagree on in:
// one refuses what the other accepts, or they parse it differently.
func sameParse(t *testing.T, in []byte) {
	t.Helper()
	raw, err := unquoteCredential(in)
	if err != nil {
		return
	}
	p, h, err := parseAssertion(raw)
	rp, rh, rerr := parseAssertionReference(raw)
	if (err == nil) != (rerr == nil) {
		t.Fatalf("%s: parse error %v, reference error %v", in, err, rerr)
	}
	if err != nil {
		if _, ok := err.(interface{ Unwrap() error }); !ok && !errors.Is(err, ErrInvalidCredential) {
			t.Fatalf("%s: error %v is not invalid_credential", in, err)
		}
		return
	}
	if !reflect.DeepEqual(p, rp) || !reflect.DeepEqual(h, rh) {
		t.Fatalf("%s: parsed\n%+v %v\nreference\n%+v %v", in, p, h, rp, rh)
	}
	if len(p.Response.UserHandle) != 0 {
		t.Fatal("user handle reached go-webauthn")
	}
}

// TestParseAssertionAsGoWebauthn: the assertion parser decodes the
// base64url members itself; on hostile spellings (escapes, padding, null,
// wrong types, case variants, duplicates, extension outputs of every
// shape, trailing data) it accepts and parses exactly what go-webauthn's
// own types do.
func TestParseAssertionAsGoWebauthn(t *testing.T) {
	v := newEnv(t, nil)
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	cred, err := v.auth.Get(v.beginAuth(user("alice")).PublicKey, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	sameParse(t, cred)
	var m map[string]any
	if err := json.Unmarshal(cred, &m); err != nil {
		t.Fatal(err)
	}
	resp := m["response"].(map[string]any)
	id := m["id"].(string)
	with := func(top map[string]any, r map[string]any) []byte {
		mm := map[string]any{}
		for k, x := range m {
			mm[k] = x
		}
		rr := map[string]any{}
		for k, x := range resp {
			rr[k] = x
		}
		for k, x := range top {
			if x == "DELETE" {
				delete(mm, k)
			} else {
				mm[k] = x
			}
		}
		for k, x := range r {
			if x == "DELETE" {
				delete(rr, k)
			} else {
				rr[k] = x
			}
		}
		mm["response"] = rr
		b, _ := json.Marshal(mm)
		return b
	}
	cases := [][]byte{
		with(map[string]any{"rawId": id + "=="}, nil),
		with(map[string]any{"rawId": nil}, nil),
		with(map[string]any{"rawId": ""}, nil),
		with(map[string]any{"rawId": 7}, nil),
		with(map[string]any{"rawId": "DELETE"}, nil),
		with(map[string]any{"rawId": id + "!"}, nil),
		with(map[string]any{"rawId": "AQ"}, nil),
		with(nil, map[string]any{"signature": nil}),
		with(nil, map[string]any{"signature": ""}),
		with(nil, map[string]any{"signature": true}),
		with(nil, map[string]any{"signature": []int{1}}),
		with(nil, map[string]any{"authenticatorData": "DELETE"}),
		with(nil, map[string]any{"clientDataJSON": "e30"}),
		with(nil, map[string]any{"clientDataJSON": "e30="}),
		with(nil, map[string]any{"userHandle": "alice"}),
		with(nil, map[string]any{"userHandle": 7}),
		with(nil, map[string]any{"userHandle": nil}),
		with(map[string]any{"clientExtensionResults": map[string]any{"appid": true}}, nil),
		with(map[string]any{"clientExtensionResults": map[string]any{"foo": []int{1}}}, nil),
		with(map[string]any{"clientExtensionResults": map[string]any{"appid": nil}}, nil),
		with(map[string]any{"clientExtensionResults": nil}, nil),
		with(map[string]any{"clientExtensionResults": []int{}}, nil),
		with(map[string]any{"clientExtensionResults": "x"}, nil),
		with(map[string]any{"clientExtensionResults": "DELETE"}, nil),
		with(map[string]any{"authenticatorAttachment": "cross-platform"}, nil),
		with(map[string]any{"authenticatorAttachment": 1}, nil),
		with(map[string]any{"type": "other"}, nil),
		with(map[string]any{"id": nil}, nil),
		with(map[string]any{"response": nil}, nil),
		with(map[string]any{"RAWID": id}, nil),
		append(bytes.Clone(cred), " {}"...),
		append(bytes.Clone(cred), "x"...),
		bytes.Replace(cred, []byte(`"rawId":"`), []byte(`"rawId":"\u0041`), 1),
		bytes.Replace(cred, []byte(`"rawId":"`), []byte(`"rawId":"\r\n`), 1),
		bytes.Replace(cred, []byte(`"rawId":"`), []byte(`"rawId":"AQ","rawId":"`), 1),
		bytes.Replace(cred, []byte(`"clientExtensionResults":{}`), []byte(`"clientExtensionResults":{ }`), 1),
		bytes.Replace(cred, []byte(`"clientExtensionResults":{}`), []byte(`"clientExtensionResults":{"credProps":{"rk":true}}`), 1),
	}
	for _, in := range cases {
		sameParse(t, in)
	}
}

// TestParseAssertionAllocs bounds the allocations of decoding an
// assertion (53 when every base64url member went through go-webauthn's
// UnmarshalJSON). Counts are deterministic: no timing is asserted.
func TestParseAssertionAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	v := newEnv(t, nil)
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	cred, err := v.auth.Get(v.beginAuth(user("alice")).PublicKey, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := parseAssertion(cred); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 40 {
		t.Errorf("parsing an assertion made %v allocations, want at most 40", allocs)
	}
}
