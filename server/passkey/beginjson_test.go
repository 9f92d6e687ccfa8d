package passkey

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// TestBeginJSONAsEncodingJSON: the authentication/begin answer written
// directly is byte for byte what encoding/json writes, for every shape the
// options take (known user, decoys, discoverable, recipient nonce, hostile
// stored transports, hints, extensions, zero values).
func TestBeginJSONAsEncodingJSON(t *testing.T) {
	want := func(resp *authenticationBeginResponse) []byte {
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(resp); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	check := func(name string, resp *authenticationBeginResponse, fast bool) {
		t.Helper()
		got, ok := appendAuthenticationBegin(nil, resp)
		if ok != fast {
			t.Fatalf("%s: written directly %v, want %v", name, ok, fast)
		}
		if ok && !bytes.Equal(got, want(resp)) {
			t.Fatalf("%s:\n got %s\nwant %s", name, got, want(resp))
		}
		// Through the handler's path, as echo answers.
		e := echo.New()
		rec := httptest.NewRecorder()
		if err := writeAuthenticationBegin(e.NewContext(httptest.NewRequest(http.MethodPost, "/", nil), rec), resp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec.Body.Bytes(), want(resp)) || rec.Header().Get("Content-Type") != echo.MIMEApplicationJSON {
			t.Fatalf("%s: handler wrote %q %s", name, rec.Header().Get("Content-Type"), rec.Body.Bytes())
		}
	}

	v := newEnv(t, nil)
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	for _, body := range []map[string]any{user("alice"), user("nobody"), {},
		{"userId": "alice", "recipientPublicKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}} {
		r := v.Send("POST", "/v1/passkeys/authentication/begin", body)
		if r.Status != 200 {
			t.Fatalf("%v: %d %s", body, r.Status, r.Body)
		}
		var resp authenticationBeginResponse
		if err := json.Unmarshal(r.Body, &resp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Body, want(&resp)) {
			t.Fatalf("%v: the handler answered\n%s\nencoding/json writes\n%s", body, r.Body, want(&resp))
		}
		check("answer", &resp, true)
	}

	base := func() *authenticationBeginResponse {
		return &authenticationBeginResponse{CeremonyID: "abc", ExpiresAt: time.Date(2026, 3, 1, 12, 5, 0, 123456789, time.UTC),
			PublicKey: protocol.PublicKeyCredentialRequestOptions{Challenge: []byte{1, 2, 3}, Timeout: 300000, RelyingPartyID: "example.com",
				UserVerification: "required", AllowedCredentials: []protocol.CredentialDescriptor{
					{Type: "public-key", CredentialID: []byte{0xfb, 0xff}, Transport: []protocol.AuthenticatorTransport{"usb", "nfc"}},
					{Type: "public-key", CredentialID: []byte{}}}}}
	}
	check("plain", base(), true)
	r := base()
	r.PublicKey = protocol.PublicKeyCredentialRequestOptions{Challenge: []byte{}}
	r.ExpiresAt = time.Time{}
	check("zero values", r, true)
	for name, mod := range map[string]func(*authenticationBeginResponse){
		"transport to escape":    func(r *authenticationBeginResponse) { r.PublicKey.AllowedCredentials[0].Transport[1] = `x"<y>&\` },
		"transport not ASCII":    func(r *authenticationBeginResponse) { r.PublicKey.AllowedCredentials[0].Transport[0] = "usbé" },
		"transport with control": func(r *authenticationBeginResponse) { r.PublicKey.AllowedCredentials[0].Transport[0] = "a\x01" },
		"nil credential id":      func(r *authenticationBeginResponse) { r.PublicKey.AllowedCredentials[1].CredentialID = nil },
		"nil challenge":          func(r *authenticationBeginResponse) { r.PublicKey.Challenge = nil },
		"hints": func(r *authenticationBeginResponse) {
			r.PublicKey.Hints = []protocol.PublicKeyCredentialHints{"hybrid"}
		},
		"extensions":     func(r *authenticationBeginResponse) { r.PublicKey.Extensions.AppID = "https://example.com" },
		"type to escape": func(r *authenticationBeginResponse) { r.PublicKey.AllowedCredentials[0].Type = "<x>" },
	} {
		r := base()
		mod(r)
		check(name, r, false)
	}
	r = base()
	r.ExpiresAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // encoding/json refuses it
	if _, ok := appendAuthenticationBegin(nil, r); ok {
		t.Fatal("a time encoding/json refuses was written")
	}
	// echo's ?pretty goes through the encoder.
	e := echo.New()
	rec := httptest.NewRecorder()
	if err := writeAuthenticationBegin(e.NewContext(httptest.NewRequest(http.MethodPost, "/?pretty", nil), rec), base()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.Body.String(), "\n  ") {
		t.Fatalf("?pretty: %s", rec.Body.Bytes())
	}
}

// TestAuthenticationBeginAllocs bounds the allocations of one
// authentication/begin through the handler, in process, for a user with a
// passkey (113 when the owner's credentials were read from the store and
// the answer went through encoding/json). Counts are deterministic: no
// timing is asserted.
func TestAuthenticationBeginAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	v := newEnv(t, func(o *Options) { o.MaxCeremoniesPerAddress = 1000; o.MaxCeremonies = 10000 })
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	body := []byte(`{"userId":"alice"}`)
	begin := func() {
		req := httptest.NewRequest(http.MethodPost, "/v1/passkeys/authentication/begin", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = testAddr + ":40000"
		rec := httptest.NewRecorder()
		v.e.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("begin: %d %s", rec.Code, rec.Body.Bytes())
		}
	}
	begin()
	allocs := testing.AllocsPerRun(200, begin)
	t.Logf("%v allocations", allocs)
	if allocs > 75 {
		t.Errorf("authentication/begin made %v allocations, want at most 75", allocs)
	}
}

// TestFinishJSONAsEncodingJSON: the authentication/finish answer written
// directly is byte for byte what encoding/json writes (plain and sealed
// releases, empty members omitted), and a value JSON would escape (a user
// id may hold any printable ASCII) goes through the encoder.
func TestFinishJSONAsEncodingJSON(t *testing.T) {
	for _, resp := range []authenticationFinishResponse{
		{UserID: "alice", CredentialID: "AQID", Key: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", AssertionCeremonyID: "abc-_"},
		{UserID: "bob", CredentialID: "AQID", SealedKey: "a+/=", Enc: "b+/=", Suite: "X25519-HKDF-SHA256/HKDF-SHA256/AES-256-GCM"},
		{},
		{UserID: `a"b<c>&d\e`, CredentialID: "x", Key: "k"},
		{UserID: "u", CredentialID: "x", Suite: "é"},
	} {
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(&resp); err != nil {
			t.Fatal(err)
		}
		got, ok := appendAuthenticationFinish(nil, &resp)
		if ok && !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("got %s\nwant %s", got, buf.Bytes())
		}
		if !ok && plainJSON(resp.UserID) && plainJSON(resp.Suite) {
			t.Fatalf("%+v: not written directly", resp)
		}
		rec := httptest.NewRecorder()
		if err := writeAuthenticationFinish(echo.New().NewContext(httptest.NewRequest(http.MethodPost, "/", nil), rec), &resp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec.Body.Bytes(), buf.Bytes()) || rec.Code != 200 || rec.Header().Get("Content-Type") != echo.MIMEApplicationJSON {
			t.Fatalf("handler wrote %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
		}
	}
}
