package firebase

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"
)

// TestKeyResponseMatchesJSON: a released key's answer is what c.JSON
// wrote before (encoding/json's bytes and a newline) for every shape of
// answer; a member JSON would escape is left to encoding/json.
func TestKeyResponseMatchesJSON(t *testing.T) {
	var cases []KeyResponse
	for n := range 80 {
		k := make([]byte, n*13+1)
		rand.Read(k)
		b := base64.StdEncoding.EncodeToString(k)
		cases = append(cases, KeyResponse{Key: b}, KeyResponse{SealedKey: b, Enc: b[:len(b)/2+1], Suite: "DHKEM(X25519)-HKDF-SHA256-AES-256-GCM"})
	}
	cases = append(cases, KeyResponse{}, KeyResponse{Suite: "x"}, KeyResponse{Key: "+/=", Enc: "e"})
	for _, r := range cases {
		want, _ := json.Marshal(r)
		want = append(want, '\n')
		got, ok := appendKeyResponse(nil, &r)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("%+v: got %q (ok %v), want %q", r, got, ok, want)
		}
	}
	for _, bad := range []string{`a"b`, `a\b`, "<", ">", "&", "\n", "\x7f", "é"} {
		if _, ok := appendKeyResponse(nil, &KeyResponse{Key: bad}); ok {
			t.Errorf("%q encoded by hand; encoding/json escapes it", bad)
		}
	}
}
