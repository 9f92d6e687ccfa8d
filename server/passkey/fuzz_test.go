package passkey

import (
	"testing"
)

// FuzzAssertionParsing runs the parsing an untrusted assertion goes
// through before any check: it must never panic, a user handle it
// reports must be gone from what go-webauthn parses, and it must accept
// and parse exactly what go-webauthn's own types do (sameParse).
func FuzzAssertionParsing(f *testing.F) {
	f.Add([]byte(`{"id":"AQ","rawId":"AQ","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA","userHandle":"alice"}}`))
	f.Add([]byte(`"{\"id\":\"AQ\",\"response\":{\"userHandle\":null}}"`))
	f.Add([]byte(`{"response":{"userHandle":7}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"id":"AQ","rawId":"AQ==","type":"public-key","clientExtensionResults":{"appid":true},"response":{"clientDataJSON":"e30","authenticatorData":null,"signature":"","userHandle":"alice"}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		sameParse(t, in)
		raw, err := unquoteCredential(in)
		if err != nil {
			return
		}
		p, handle, err := parseAssertion(raw)
		if err != nil {
			return
		}
		if handle != nil {
			_ = userHandleMatches(*handle, "alice")
		}
		if len(p.Response.UserHandle) != 0 {
			t.Fatal("user handle reached go-webauthn")
		}
	})
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add(testFP)
	f.Add("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if b, err := ParseFingerprint(s); err == nil && len(b) != 32 {
			t.Fatalf("%q parsed to %d bytes", s, len(b))
		}
	})
}
