package passkey

import (
	"encoding/base64"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// The authentication/begin answer (and finish's) is written directly, not through
// encoding/json's reflection over go-webauthn's option types (their
// base64url members each go through a MarshalJSON of their own): it is on
// every release. The bytes are exactly what encoding/json writes
// (TestBeginJSONAsEncodingJSON); any value outside the plain shape (hints,
// extensions, a string that JSON would escape) and echo's pretty printing
// take the encoder instead.

// writeAuthenticationBegin answers with resp as c.JSON would.
func writeAuthenticationBegin(c echo.Context, resp *authenticationBeginResponse) error {
	if c.Request().URL.RawQuery == "" && !c.Echo().Debug {
		if b, ok := appendAuthenticationBegin(make([]byte, 0, 512), resp); ok {
			return c.JSONBlob(http.StatusOK, b)
		}
	}
	return c.JSON(http.StatusOK, resp)
}

// appendAuthenticationBegin appends resp as encoding/json's Encoder writes
// it (a newline last), or reports false for a shape it does not write.
func appendAuthenticationBegin(b []byte, resp *authenticationBeginResponse) ([]byte, bool) {
	o := &resp.PublicKey
	if o.Challenge == nil || len(o.Hints) > 0 || !o.Extensions.IsZero() || !plainJSON(resp.CeremonyID) || !plainJSON(resp.Nonce) ||
		!plainJSON(o.RelyingPartyID) || !plainJSON(string(o.UserVerification)) {
		return nil, false
	}
	b = append(b, `{"ceremonyId":"`...)
	b = append(b, resp.CeremonyID...)
	b = append(b, `","publicKey":{"challenge":"`...)
	b = base64.RawURLEncoding.AppendEncode(b, o.Challenge)
	b = append(b, '"')
	if o.Timeout != 0 {
		b = append(b, `,"timeout":`...)
		b = strconv.AppendInt(b, int64(o.Timeout), 10)
	}
	if o.RelyingPartyID != "" {
		b = append(b, `,"rpId":"`...)
		b = append(b, o.RelyingPartyID...)
		b = append(b, '"')
	}
	if len(o.AllowedCredentials) > 0 {
		b = append(b, `,"allowCredentials":[`...)
		for i, d := range o.AllowedCredentials {
			if d.CredentialID == nil || !plainJSON(string(d.Type)) {
				return nil, false
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":"`...)
			b = append(b, d.Type...)
			b = append(b, `","id":"`...)
			b = base64.RawURLEncoding.AppendEncode(b, d.CredentialID)
			b = append(b, '"')
			if len(d.Transport) > 0 {
				b = append(b, `,"transports":[`...)
				for j, t := range d.Transport {
					if !plainJSON(string(t)) {
						return nil, false
					}
					if j > 0 {
						b = append(b, ',')
					}
					b = append(b, '"')
					b = append(b, t...)
					b = append(b, '"')
				}
				b = append(b, ']')
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if o.UserVerification != "" {
		b = append(b, `,"userVerification":"`...)
		b = append(b, o.UserVerification...)
		b = append(b, '"')
	}
	b = append(b, '}')
	if resp.Nonce != "" {
		b = append(b, `,"nonce":"`...)
		b = append(b, resp.Nonce...)
		b = append(b, '"')
	}
	t, err := resp.ExpiresAt.MarshalJSON()
	if err != nil {
		return nil, false
	}
	b = append(b, `,"expiresAt":`...)
	b = append(b, t...)
	return append(b, "}\n"...), true
}

// plainJSON reports whether s is written in JSON as is, between quotes
// (no byte encoding/json escapes: controls, quote, backslash, <, >, &,
// anything not ASCII).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// writeAuthenticationFinish answers with resp as c.JSON would, written
// directly as the begin answer is.
func writeAuthenticationFinish(c echo.Context, resp *authenticationFinishResponse) error {
	if c.Request().URL.RawQuery == "" && !c.Echo().Debug {
		if b, ok := appendAuthenticationFinish(make([]byte, 0, 256), resp); ok {
			return c.JSONBlob(http.StatusOK, b)
		}
	}
	return c.JSON(http.StatusOK, resp)
}

// appendAuthenticationFinish appends resp as encoding/json's Encoder
// writes it, or reports false when a value would need escaping.
func appendAuthenticationFinish(b []byte, resp *authenticationFinishResponse) ([]byte, bool) {
	fields := [...]struct {
		name, value string
		omitEmpty   bool
	}{
		{"userId", resp.UserID, false},
		{"credentialId", resp.CredentialID, false},
		{"key", resp.Key, true},
		{"sealedKey", resp.SealedKey, true},
		{"enc", resp.Enc, true},
		{"suite", resp.Suite, true},
		{"assertionCeremonyId", resp.AssertionCeremonyID, true},
	}
	b = append(b, '{')
	first := true
	for _, f := range fields {
		if f.omitEmpty && f.value == "" {
			continue
		}
		if !plainJSON(f.value) {
			return nil, false
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, f.name...)
		b = append(b, `":"`...)
		b = append(b, f.value...)
		b = append(b, '"')
	}
	return append(b, "}\n"...), true
}
