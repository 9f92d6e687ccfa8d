package clientshares

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzPutRequest checks the validation of the untrusted PUT body: whatever
// decodes and validates is a non-empty UTF-8 cipherText within the limit.
func FuzzPutRequest(f *testing.F) {
	for _, s := range []string{
		`{"cipherText":"abc"}`, `{"cipherText":"abc","stored":true}`, `{"cipherText":""}`,
		`{"stored":false}`, `{"cipherText":null}`, `{"cipherText":"\ud800"}`, `{}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r putRequest
		if json.Unmarshal(body, &r) != nil {
			return
		}
		if r.Validate() != nil {
			return
		}
		ct := *r.CipherText
		if ct == "" || len(ct) > MaxCipherTextBytes || !utf8.ValidString(ct) {
			t.Fatalf("accepted cipherText of %d bytes (valid UTF-8: %v)", len(ct), utf8.ValidString(ct))
		}
	})
}

// FuzzMethod checks that only the five method names pass.
func FuzzMethod(f *testing.F) {
	for _, m := range append([]string{"", "password", "PASSWORD\x00", "GDRIVE ", "default"}, Methods...) {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, m string) {
		ok := ValidMethod(m) == nil
		known := false
		for _, x := range Methods {
			known = known || x == m
		}
		if ok != known {
			t.Fatalf("ValidMethod(%q) = %v", m, ok)
		}
	})
}
