package softauthn

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
)

type user struct {
	id    []byte
	creds []webauthn.Credential
}

func (u *user) WebAuthnID() []byte                         { return u.id }
func (u *user) WebAuthnName() string                       { return string(u.id) }
func (u *user) WebAuthnDisplayName() string                { return string(u.id) }
func (u *user) WebAuthnCredentials() []webauthn.Credential { return u.creds }

const origin = "https://rp.example"

func newRP(t *testing.T) *webauthn.WebAuthn {
	t.Helper()
	w, err := webauthn.New(&webauthn.Config{
		RPID: "rp.example", RPDisplayName: "RP", RPOrigins: []string{origin},
		AuthenticatorSelection: protocol.AuthenticatorSelection{UserVerification: protocol.VerificationRequired},
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// register runs a registration through go-webauthn, the independent verifier.
func register(t *testing.T, w *webauthn.WebAuthn, a *Authenticator, u *user, o CreateOptions) (*webauthn.Credential, *Credential) {
	t.Helper()
	creation, session, err := w.BeginRegistration(u)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := json.Marshal(creation)
	resp, cred, err := a.CreateWith(opts, origin, o)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(resp)
	if err != nil {
		t.Fatalf("parse registration: %v", err)
	}
	wc, err := w.CreateCredential(u, *session, parsed)
	if err != nil {
		t.Fatalf("go-webauthn refused an honest registration: %v", err)
	}
	return wc, cred
}

func login(w *webauthn.WebAuthn, a *Authenticator, u *user, o GetOptions) (*webauthn.Credential, error) {
	assertion, session, err := w.BeginLogin(u)
	if err != nil {
		return nil, err
	}
	opts, _ := json.Marshal(assertion)
	resp, err := a.GetWith(opts, origin, o)
	if err != nil {
		return nil, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(resp)
	if err != nil {
		return nil, err
	}
	return w.ValidateLogin(u, *session, parsed)
}

func TestRoundTripEachAlgorithm(t *testing.T) {
	for _, alg := range []Algorithm{ES256, RS256, EdDSA} {
		t.Run(alg.String(), func(t *testing.T) {
			w := newRP(t)
			a := New([16]byte{1, 2, 3})
			u := &user{id: []byte("alice")}
			wc, cred := register(t, w, a, u, CreateOptions{Algorithm: alg, CounterStep: 1, BackupEligible: true, BackupState: true})
			if !bytes.Equal(wc.ID, cred.ID) || !bytes.Equal(wc.Authenticator.AAGUID, a.AAGUID[:]) {
				t.Fatal("credential id or AAGUID differ")
			}
			if !wc.Flags.BackupEligible || !wc.Flags.BackupState || !wc.Flags.UserVerified {
				t.Fatalf("flags: %+v", wc.Flags)
			}
			if wc.AttestationFormat != "none" {
				t.Fatalf("format %q", wc.AttestationFormat)
			}
			u.creds = []webauthn.Credential{*wc}
			got, err := login(w, a, u, GetOptions{})
			if err != nil {
				t.Fatalf("go-webauthn refused an honest assertion: %v", err)
			}
			if got.Authenticator.SignCount != 1 {
				t.Fatalf("sign count %d, want 1", got.Authenticator.SignCount)
			}
		})
	}
}

// TestHostileKnobsFail: every hostile knob makes the independent verifier
// refuse, so the knobs really produce what they claim.
func TestHostileKnobsFail(t *testing.T) {
	w := newRP(t)
	a := New([16]byte{9})
	u := &user{id: []byte("bob")}
	wc, _ := register(t, w, a, u, CreateOptions{})
	u.creds = []webauthn.Credential{*wc}
	for name, o := range map[string]GetOptions{
		"tampered signature": {TamperSignature: true},
		"no UP":              {NoUserPresence: true},
		"no UV":              {NoUserVerification: true},
		"rp id hash":         {RPIDHash: bytes.Repeat([]byte{7}, 32)},
		"challenge":          {Challenge: bytes.Repeat([]byte{1}, 32)},
		"type":               {ClientDataType: "webauthn.create"},
		"user handle":        {UserHandle: UserHandleCustom, UserHandleValue: "eA"}, // base64url("x")
		"BE set":             {SetFlags: FlagBE},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := login(w, a, u, o); err == nil {
				t.Fatal("verifier accepted a hostile assertion")
			}
		})
	}
	if _, err := a.GetWith([]byte(`{"challenge":"AAAA","rpId":"rp.example"}`), origin, GetOptions{CredentialID: []byte("nope")}); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("unknown forced credential: %v", err)
	}
}

func TestUserHandleForms(t *testing.T) {
	a := New([16]byte{})
	opts := []byte(`{"publicKey":{"rp":{"id":"rp.example","name":"RP"},"user":{"id":"alice-1","name":"a","displayName":"a"},"challenge":"AAECAwQFBgcICQoLDA0ODw","pubKeyCredParams":[{"type":"public-key","alg":-7}]}}`)
	if _, _, err := a.CreateWith(opts, origin, CreateOptions{UserIDPlain: true}); err != nil {
		t.Fatal(err)
	}
	req := []byte(`{"challenge":"AAECAwQFBgcICQoLDA0ODw","rpId":"rp.example"}`)
	for form, want := range map[UserHandleForm]string{
		UserHandleRaw:    `"YWxpY2UtMQ"`,
		UserHandlePlain:  `"alice-1"`,
		UserHandleEmpty:  `""`,
		UserHandleNull:   `null`,
		UserHandleAbsent: ``,
	} {
		out, err := a.GetWith(req, origin, GetOptions{UserHandle: form})
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Response map[string]json.RawMessage `json:"response"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		if got := string(r.Response["userHandle"]); got != want {
			t.Errorf("form %d: userHandle %s, want %s", form, got, want)
		}
	}
}

func TestExcludeCredentials(t *testing.T) {
	w := newRP(t)
	a := New([16]byte{})
	u := &user{id: []byte("carol")}
	wc, _ := register(t, w, a, u, CreateOptions{})
	u.creds = []webauthn.Credential{*wc}
	creation, _, err := w.BeginRegistration(u, webauthn.WithExclusions(webauthn.Credentials(u.creds).CredentialDescriptors()))
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := json.Marshal(creation)
	if _, _, err := a.Create(opts, origin); !errors.Is(err, ErrExcluded) {
		t.Fatalf("excluded credential: %v", err)
	}
}
