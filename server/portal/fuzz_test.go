package portal

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/apierr"
)

// FuzzParseClient: Portal's answer is untrusted input. Whatever it is,
// ParseClient either fails with portal_bad_answer or returns a client id
// of the documented form and a custodian id.
func FuzzPortalParseClient(f *testing.F) {
	for _, s := range []string{
		`{"id":"cl1","custodian":{"id":"cu1","name":"A"}}`,
		`{"id":"","custodian":{"id":"cu1"}}`,
		`{"id":"a b","custodian":{"id":"cu"}}`,
		`{"id":"x","custodian":null}`,
		`[]`, `null`, `{"id":"x","custodian":{"id":"y"}} 1`, "\x00", `{"id":"\u00e9","custodian":{"id":"y"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ParseClient(body)
		if err != nil {
			if e, ok := apierr.As(err); !ok || e.Code != ErrPortalBadAnswer.Code {
				t.Fatalf("error %v is not portal_bad_answer", err)
			}
			return
		}
		if CheckClientID(c.ID) != nil || c.CustodianID == "" {
			t.Fatalf("accepted %+v", c)
		}
	})
}

// FuzzCeremonyOf: a sessionId is untrusted input. Only the one the
// adapter issued for that client and kind yields its ceremony id.
func FuzzPortalCeremonyOf(f *testing.F) {
	a := sessionAdapter()
	good := a.sessionID(sessionAuthentication, ClientOwner("c1"), "ceremony-1")
	for _, s := range []string{good, "", ".", "a.b", good + "x", "ceremony-1.", strings.Repeat(".", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sid string) {
		id, err := a.ceremonyOf(sessionAuthentication, ClientOwner("c1"), sid)
		if err != nil {
			if !errors.Is(err, ErrSessionInvalid) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if sid != a.sessionID(sessionAuthentication, ClientOwner("c1"), id) {
			t.Fatalf("accepted %q for ceremony %q", sid, id)
		}
	})
}

// FuzzBind: request bodies are untrusted input. bind never panics, and a
// body it accepts validates.
func FuzzPortalBind(f *testing.F) {
	for _, s := range []string{
		`{"encryptionKey":"abc"}`,
		`{"attestation":"{\"id\":\"x\"}","sessionId":"s.t","encryptionKey":"k","relyingParty":"localhost"}`,
		`{"assertion":{"id":"x"},"sessionId":"s.t","relyingParty":"localhost"}`,
		`{"clientId":"c","backupMethod":"GDRIVE-ED25519","share":"{}"}`,
		`{"clientId":7}`, `{`, ``, `{} {}`, `[]`, `"str"`, `{"encryptionKey":null}`,
	} {
		f.Add([]byte(s))
	}
	e := echo.New()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, mk := range []func() validator{
			func() validator { return &encryptKeyRequest{} },
			func() validator { return &finishRequest{route: routeRegistration} },
			func() validator { return &finishRequest{route: routeLoginRead} },
			func() validator { return &finishRequest{route: routeLoginWrite} },
			func() validator { return &backupRequest{} },
			func() validator { return &fetchRequest{} },
			func() validator { return &beginRequest{} },
		} {
			v := mk()
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			c := e.NewContext(req, httptest.NewRecorder())
			err := bind(c, v, maxFinishBody)
			if err == nil {
				if v.Validate() != nil {
					t.Fatalf("bound but invalid: %s", body)
				}
				if !json.Valid(body) {
					t.Fatalf("accepted invalid JSON %q", body)
				}
				continue
			}
			if _, ok := apierr.As(err); !ok {
				t.Fatalf("error %v is not an apierr", err)
			}
		}
	})
}
