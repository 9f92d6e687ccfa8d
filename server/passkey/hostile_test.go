package passkey

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/store"
)

// fixture: alice (key aliceKey, a counting authenticator, counter at 100)
// and bob (his own authenticator) are registered.
type fixture struct {
	alice   *softauthn.Credential
	bobAuth *softauthn.Authenticator
	bob     *softauthn.Credential
}

var aliceKey = testKey(0xa0)

func setup(v *env) fixture {
	f := fixture{bobAuth: softauthn.New([16]byte{0xb0})}
	f.alice = v.register(nil, "alice", aliceKey, softauthn.CreateOptions{SignCount: 100, CounterStep: 1})
	f.bob = v.register(f.bobAuth, "bob", testKey(0xb0), softauthn.CreateOptions{})
	return f
}

func u32(n uint32) *uint32 { return &n }

func mutateCredential(t *testing.T, cred []byte, field string, value any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cred, &m); err != nil {
		t.Fatal(err)
	}
	m["response"].(map[string]any)[field] = value
	out, _ := json.Marshal(m)
	return out
}

// TestHostile: each case is refused with its code, and the answer holds an
// error and nothing else (no key, plain or sealed).
func TestHostile(t *testing.T) {
	cases := []struct {
		name   string
		opts   func(*Options)
		status int
		code   string
		run    func(t *testing.T, v *env, f fixture) resp
	}{
		{"wrong origin", nil, 401, "origin_mismatch", func(t *testing.T, v *env, f fixture) resp {
			r := v.assert(nil, v.beginAuth(user("alice")), "https://evil.example", softauthn.GetOptions{}, nil)
			if !strings.Contains(v.logs.String(), "level=WARN") || !strings.Contains(v.logs.String(), "origin=https://evil.example") {
				t.Errorf("refused origin not logged at WARN: %s", v.logs.String())
			}
			return r
		}},
		{"RP ID itself is not a listed origin", nil, 401, "origin_mismatch", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), "https://example.com", softauthn.GetOptions{}, nil)
		}},
		{"wrong RP ID hash", nil, 401, "rp_id_mismatch", func(t *testing.T, v *env, f fixture) resp {
			h := make([]byte, 32)
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{RPIDHash: h}, nil)
		}},
		{"replayed ceremonyId", nil, 400, "ceremony_unknown", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			if r := v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil); r.Status != 200 {
				t.Fatalf("first finish: %d %s", r.Status, r.Body)
			}
			return v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil)
		}},
		{"replayed assertion", nil, 400, "ceremony_unknown", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			cred, _ := v.auth.Get(b.PublicKey, testOrigin)
			body := map[string]any{"ceremonyId": b.CeremonyID, "credential": json.RawMessage(cred)}
			if r := v.Send("POST", "/v1/passkeys/authentication/finish", body); r.Status != 200 {
				t.Fatalf("first finish: %d %s", r.Status, r.Body)
			}
			return v.Send("POST", "/v1/passkeys/authentication/finish", body)
		}},
		{"expired ceremony", nil, 400, "ceremony_expired", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			v.clock.Advance(DefaultCeremonyTTL + time.Second)
			return v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil)
		}},
		{"challenge from another ceremony", nil, 401, "challenge_mismatch", func(t *testing.T, v *env, f fixture) resp {
			b1, b2 := v.beginAuth(user("alice")), v.beginAuth(user("alice"))
			b2.CeremonyID = b1.CeremonyID
			return v.assert(nil, b2, testOrigin, softauthn.GetOptions{}, nil)
		}},
		{"credential of another user", nil, 401, "credential_not_allowed", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(f.bobAuth, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: f.bob.ID}, nil)
		}},
		{"user handle of another user (base64url)", nil, 401, "user_handle_mismatch", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(nil), testOrigin, softauthn.GetOptions{UserHandle: softauthn.UserHandleCustom,
				UserHandleValue: base64.RawURLEncoding.EncodeToString([]byte("bob"))}, nil)
		}},
		{"user handle of another user (plain)", nil, 401, "user_handle_mismatch", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{UserHandle: softauthn.UserHandleCustom, UserHandleValue: "bob"}, nil)
		}},
		{"UP missing", nil, 401, "user_presence_missing", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{NoUserPresence: true}, nil)
		}},
		{"UV missing when required", nil, 401, "user_verification_missing", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{NoUserVerification: true}, nil)
		}},
		{"bad signature (answers as an unknown credential)", nil, 401, "credential_unknown", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{TamperSignature: true}, nil)
		}},
		{"counter going backwards", nil, 401, "counter_regressed", func(t *testing.T, v *env, f fixture) resp {
			r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(50)}, nil)
			if lines := v.AuditLines(t); !strings.Contains(lines, `"reason":"counter_regressed"`) || !strings.Contains(lines, `"received":"50"`) {
				t.Errorf("counter regression not audited:\n%s", lines)
			}
			return r
		}},
		{"counter not increasing", nil, 401, "counter_regressed", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(100)}, nil)
		}},
		{"counter reset to zero", nil, 401, "counter_regressed", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(0)}, nil)
		}},
		{"clientData type of registration", nil, 401, "client_data_type_mismatch", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{ClientDataType: "webauthn.create"}, nil)
		}},
		{"backup state without eligibility", nil, 401, "backup_flags_invalid", func(t *testing.T, v *env, f fixture) resp {
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SetFlags: softauthn.FlagBS}, nil)
		}},
		{"malformed JSON body", nil, 400, "invalid_json", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/authentication/finish", `{"ceremonyId":"x","credential":{`)
		}},
		{"misspelt field", nil, 400, "invalid_json", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/authentication/begin", `{"userId":"alice","recipientKey":"AAAA"}`)
		}},
		{"trailing data", nil, 400, "invalid_json", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/authentication/begin", `{"userId":"alice"} {"userId":"bob"}`)
		}},
		{"credential not an object", nil, 400, "invalid_credential", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			return v.Send("POST", "/v1/passkeys/authentication/finish", map[string]any{"ceremonyId": b.CeremonyID, "credential": 42})
		}},
		{"user handle not a string", nil, 400, "invalid_credential", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			cred, _ := v.auth.Get(b.PublicKey, testOrigin)
			cred = mutateCredential(t, cred, "userHandle", 7)
			return v.Send("POST", "/v1/passkeys/authentication/finish", map[string]any{"ceremonyId": b.CeremonyID, "credential": json.RawMessage(cred)})
		}},
		{"truncated authenticatorData", nil, 400, "invalid_credential", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			cred, _ := v.auth.Get(b.PublicKey, testOrigin)
			cred = mutateCredential(t, cred, "authenticatorData", base64.RawURLEncoding.EncodeToString(make([]byte, 20)))
			return v.Send("POST", "/v1/passkeys/authentication/finish", map[string]any{"ceremonyId": b.CeremonyID, "credential": json.RawMessage(cred)})
		}},
		{"signature not base64url", nil, 400, "invalid_credential", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			cred, _ := v.auth.Get(b.PublicKey, testOrigin)
			cred = mutateCredential(t, cred, "signature", "***")
			return v.Send("POST", "/v1/passkeys/authentication/finish", map[string]any{"ceremonyId": b.CeremonyID, "credential": json.RawMessage(cred)})
		}},
		{"malformed CBOR attestation", nil, 400, "invalid_credential", func(t *testing.T, v *env, f fixture) resp {
			id, opts := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).Create(opts, testOrigin)
			cred = mutateCredential(t, cred, "attestationObject", base64.RawURLEncoding.EncodeToString([]byte{0xa3, 0x63, 0x66, 0x6d, 0x74, 0xff}))
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": base64.StdEncoding.EncodeToString(testKey(1))})
		}},
		{"oversized body", nil, 413, "body_too_large", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			return v.Send("POST", "/v1/passkeys/authentication/finish", map[string]any{"ceremonyId": b.CeremonyID,
				"credential": map[string]any{"pad": strings.Repeat("A", DefaultMaxBodyBytes)}})
		}},
		{"unknown credential", nil, 401, "credential_unknown", func(t *testing.T, v *env, f fixture) resp {
			stranger := softauthn.New([16]byte{0xee})
			_, opts := v.beginRegistration("alice-imposter", nil) // begun, never finished
			if _, _, err := stranger.Create(opts, testOrigin); err != nil {
				t.Fatal(err)
			}
			return v.assert(stranger, v.beginAuth(nil), testOrigin, softauthn.GetOptions{}, nil)
		}},
		{"revoked credential", nil, 401, "credential_revoked", func(t *testing.T, v *env, f fixture) resp {
			if err := v.svc.RevokePasskey(context.Background(), enclave.UserOwner("alice"), base64.RawURLEncoding.EncodeToString(f.alice.ID), "test"); err != nil {
				t.Fatal(err)
			}
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: f.alice.ID}, nil)
		}},
		{"session token expired", nil, 401, "session_expired", func(t *testing.T, v *env, f fixture) resp {
			tok := v.token("carol")
			v.clock.Advance(11 * time.Minute)
			return v.Send("POST", "/v1/passkeys/registration/begin", nil, withBearer(tok))
		}},
		{"session token garbage", nil, 401, "session_invalid", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/registration/begin", nil, withBearer("kws1.garbage.garbage"))
		}},
		{"session token of another appliance", nil, 401, "session_invalid", func(t *testing.T, v *env, f fixture) resp {
			other, _ := enclave.NewRoot(enclave.NewRootKey())
			tok, _ := other.SessionTokens(v.clock.Now).Mint("alice", time.Hour)
			return v.Send("POST", "/v1/passkeys/registration/begin", nil, withBearer(tok))
		}},
		{"no session token", nil, 401, "unauthorized", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/registration/begin", nil)
		}},
		{"session token for another user registers for that user only", nil, 401, "credential_not_allowed", func(t *testing.T, v *env, f fixture) resp {
			// Dave's token makes a passkey bound to dave: it cannot release alice's key.
			mallory := softauthn.New([16]byte{0x66})
			_ = v.register(mallory, "dave", testKey(0xd0), softauthn.CreateOptions{})
			return v.assert(mallory, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: mallory.Credentials()[0].ID}, nil)
		}},
		{"registration over an existing key without assertion", nil, 409, "key_exists", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/registration/begin", nil, withBearer(v.token("alice")))
		}},
		{"registration with another user's assertion", nil, 403, "assertion_invalid", func(t *testing.T, v *env, f fixture) resp {
			fin := v.assert(f.bobAuth, v.beginAuth(user("bob")), testOrigin, softauthn.GetOptions{}, nil)
			proof, _ := fin.Map(t)["assertionCeremonyId"].(string)
			return v.Send("POST", "/v1/passkeys/registration/begin", map[string]any{"assertionCeremonyId": proof}, withBearer(v.token("alice")))
		}},
		{"registration with an authentication ceremony not finished", nil, 403, "assertion_invalid", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			return v.Send("POST", "/v1/passkeys/registration/begin", map[string]any{"assertionCeremonyId": b.CeremonyID}, withBearer(v.token("alice")))
		}},
		{"two registrations race to store a first key", nil, 409, "key_exists", func(t *testing.T, v *env, f fixture) resp {
			id1, o1 := v.beginRegistration("carol", nil)
			id2, o2 := v.beginRegistration("carol", nil)
			c1, _, _ := softauthn.New([16]byte{1}).Create(o1, testOrigin)
			c2, _, _ := softauthn.New([16]byte{2}).Create(o2, testOrigin)
			k := base64.StdEncoding.EncodeToString(testKey(0xc0))
			if r := v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id1, "credential": json.RawMessage(c1), "key": k}); r.Status != 201 {
				t.Fatalf("first: %d %s", r.Status, r.Body)
			}
			r := v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id2, "credential": json.RawMessage(c2),
				"key": base64.StdEncoding.EncodeToString(testKey(0xc1))})
			if list, _ := v.svc.ListPasskeys(context.Background(), enclave.UserOwner("carol")); len(list) != 1 {
				t.Errorf("refused registration left its credential: %d passkeys", len(list))
			}
			return r
		}},
		{"recipient key swapped at finish", nil, 400, "recipient_mismatch", func(t *testing.T, v *env, f fixture) resp {
			k1, _ := ecdh.X25519().GenerateKey(rand.Reader)
			k2, _ := ecdh.X25519().GenerateKey(rand.Reader)
			b := v.beginAuth(map[string]any{"userId": "alice", "recipientPublicKey": base64.StdEncoding.EncodeToString(k1.PublicKey().Bytes())})
			return v.assert(nil, b, testOrigin, softauthn.GetOptions{}, map[string]any{"recipientPublicKey": base64.StdEncoding.EncodeToString(k2.PublicKey().Bytes())})
		}},
		{"recipient key added at finish", nil, 400, "recipient_mismatch", func(t *testing.T, v *env, f fixture) resp {
			k, _ := ecdh.X25519().GenerateKey(rand.Reader)
			return v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, map[string]any{"recipientPublicKey": base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())})
		}},
		{"recipient key of a wrong size", nil, 400, "invalid_recipient_key", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/authentication/begin", map[string]any{"userId": "alice", "recipientPublicKey": base64.StdEncoding.EncodeToString(make([]byte, 33))})
		}},
		{"unknown ceremony", nil, 400, "ceremony_unknown", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			b.CeremonyID = newCeremonyID()
			return v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil)
		}},
		{"registration ceremony at authentication/finish", nil, 400, "ceremony_unknown", func(t *testing.T, v *env, f fixture) resp {
			id, _ := v.beginRegistration("carol", nil)
			b := v.beginAuth(user("alice"))
			b.CeremonyID = id
			return v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil)
		}},
		{"ceremony cap per address", func(o *Options) { o.MaxCeremoniesPerAddress = 3 }, 429, "too_many_ceremonies", func(t *testing.T, v *env, f fixture) resp {
			for range 3 {
				v.beginAuth(user("alice"))
			}
			r := v.Send("POST", "/v1/passkeys/authentication/begin", user("alice"))
			if r.Header.Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
			if other := v.Send("POST", "/v1/passkeys/authentication/begin", user("alice"), fromAddr("203.0.113.9")); other.Status != 200 {
				t.Errorf("another address refused: %d", other.Status)
			}
			return r
		}},
		{"global ceremony cap", func(o *Options) { o.MaxCeremonies = 4; o.MaxCeremoniesPerAddress = 2 }, 503, "ceremony_capacity", func(t *testing.T, v *env, f fixture) resp {
			for _, a := range []string{"203.0.113.1", "192.0.2.2"} { // two networks: one may hold an eighth at most
				for range 2 {
					v.beginAuth(user("alice"), fromAddr(a))
				}
			}
			return v.Send("POST", "/v1/passkeys/authentication/begin", user("alice"), fromAddr("198.18.0.3"))
		}},
		{"registration from a wrong origin", nil, 401, "origin_mismatch", func(t *testing.T, v *env, f fixture) resp {
			id, opts := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).Create(opts, "https://evil.example")
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": base64.StdEncoding.EncodeToString(testKey(1))})
		}},
		{"registration without UV", nil, 401, "user_verification_missing", func(t *testing.T, v *env, f fixture) resp {
			id, opts := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).CreateWith(opts, testOrigin, softauthn.CreateOptions{NoUserVerification: true})
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": base64.StdEncoding.EncodeToString(testKey(1))})
		}},
		{"registration with another ceremony's challenge", nil, 401, "challenge_mismatch", func(t *testing.T, v *env, f fixture) resp {
			id, _ := v.beginRegistration("carol", nil)
			_, opts2 := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).Create(opts2, testOrigin)
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": base64.StdEncoding.EncodeToString(testKey(1))})
		}},
		{"registration with a wrong RP ID hash", nil, 401, "rp_id_mismatch", func(t *testing.T, v *env, f fixture) resp {
			id, opts := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).CreateWith(opts, testOrigin, softauthn.CreateOptions{RPIDHash: make([]byte, 32)})
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": base64.StdEncoding.EncodeToString(testKey(1))})
		}},
		{"registration key too long", nil, 400, "invalid_key", func(t *testing.T, v *env, f fixture) resp {
			id, opts := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).Create(opts, testOrigin)
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": base64.StdEncoding.EncodeToString(make([]byte, 1025))})
		}},
		{"registration key empty", nil, 400, "invalid_key", func(t *testing.T, v *env, f fixture) resp {
			id, opts := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).Create(opts, testOrigin)
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": ""})
		}},
		{"first registration without a key", nil, 400, "key_required", func(t *testing.T, v *env, f fixture) resp {
			id, opts := v.beginRegistration("carol", nil)
			cred, _, _ := softauthn.New([16]byte{}).Create(opts, testOrigin)
			return v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred)})
		}},
		{"user id not ASCII-safe", nil, 400, "invalid_user_id", func(t *testing.T, v *env, f fixture) resp {
			return v.Send("POST", "/v1/passkeys/authentication/begin", user("al ice"))
		}},
		{"audit log unavailable", nil, 503, "audit_unavailable", func(t *testing.T, v *env, f fixture) resp {
			b := v.beginAuth(user("alice"))
			if err := v.Audit.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			return v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, tc.opts)
			f := setup(v)
			r := tc.run(t, v, f)
			if r.Status != tc.status || r.Code() != tc.code {
				t.Fatalf("got %d %q, want %d %q: %s", r.Status, r.Code(), tc.status, tc.code, r.Body)
			}
			if m := r.Map(t); len(m) != 1 || m["error"] == nil {
				t.Fatalf("answer carries more than an error: %s", r.Body)
			}
			for _, k := range [][]byte{aliceKey, testKey(0xb0)} {
				if bytes.Contains(r.Body, []byte(base64.StdEncoding.EncodeToString(k))) {
					t.Fatal("a key is in the answer")
				}
			}
		})
	}
	if len(cases) < 25 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
}

// TestRateLimits: per-user limits count only failures a holder of the
// user's passkey produced (a counter going backwards on a valid
// signature); strangers, with made-up credentials or bad signatures, do
// not slow the user down; per-address limits count every failure.
func TestRateLimits(t *testing.T) {
	t.Run("per user", func(t *testing.T) {
		v := newEnv(t, func(o *Options) {
			o.UserFailureBurst = 2
			o.UserFailureInterval = time.Minute
			o.AddressFailureBurst = -1
		})
		setup(v)
		stranger := softauthn.New([16]byte{0x5})
		_, opts := v.beginRegistration("zed", nil)
		_, _, _ = stranger.Create(opts, testOrigin)
		for i := range 5 {
			r := v.assert(stranger, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: stranger.Credentials()[0].ID}, nil,
				fromAddr("203.0.113."+string(rune('1'+i))))
			if r.Code() != "credential_unknown" {
				t.Fatalf("stranger: %d %s", r.Status, r.Body)
			}
		}
		if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, aliceKey) {
			t.Fatal("strangers' failures slowed alice down")
		}
		for range 3 { // a bad signature is not attributable to alice's passkey: it spends nothing of hers
			if r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{TamperSignature: true}, nil); r.Code() != "credential_unknown" {
				t.Fatalf("bad signature: %d %s", r.Status, r.Body)
			}
		}
		if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, aliceKey) {
			t.Fatal("bad signatures slowed alice down")
		}
		for range 2 { // a counter going backwards on a valid signature is
			if r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(1)}, nil); r.Code() != "counter_regressed" {
				t.Fatalf("counter regression: %d %s", r.Status, r.Body)
			}
		}
		r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
		if r.Status != 429 || r.Code() != "rate_limited" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("after the burst: %d %s", r.Status, r.Body)
		}
		v.clock.Advance(time.Minute)
		if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, aliceKey) {
			t.Fatal("not released after the interval")
		}
	})
	t.Run("per address", func(t *testing.T) {
		v := newEnv(t, func(o *Options) { o.AddressFailureBurst = 3; o.AddressFailureInterval = time.Minute })
		setup(v)
		for range 3 {
			b := v.beginAuth(user("alice"))
			b.CeremonyID = newCeremonyID()
			v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil)
		}
		r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
		if r.Status != 429 || r.Code() != "rate_limited" {
			t.Fatalf("limited address: %d %s", r.Status, r.Body)
		}
		r = v.assert(nil, v.beginAuth(user("alice"), fromAddr("203.0.113.50")), testOrigin, softauthn.GetOptions{}, nil, fromAddr("203.0.113.50"))
		if r.Status != 200 {
			t.Fatalf("other address: %d %s", r.Status, r.Body)
		}
	})
}

// TestCeremonyMemoryBounded: a flood of begins never holds more than the
// cap, and expired ceremonies are swept.
func TestCeremonyMemoryBounded(t *testing.T) {
	v := newEnv(t, func(o *Options) { o.MaxCeremonies = 50; o.MaxCeremoniesPerAddress = 20 })
	for i := range 200 {
		v.Send("POST", "/v1/passkeys/authentication/begin", user("u"+string(rune('a'+i%26))), fromAddr(fmt.Sprintf("10.%d.0.1", i%10)))
	}
	if n := v.svc.Stats().Open; n != 50 {
		t.Fatalf("%d open ceremonies, want the cap 50", n)
	}
	v.clock.Advance(DefaultCeremonyTTL + time.Second)
	if r := v.Send("POST", "/v1/passkeys/authentication/begin", user("alice")); r.Status != 200 {
		t.Fatalf("after expiry: %d", r.Status)
	}
	if st := v.svc.Stats(); st.Open != 1 || st.Expired != 50 {
		t.Fatalf("after expiry: open %d expired %d", st.Open, st.Expired)
	}
	if st := v.svc.Stats(); st.Refusals["ceremony_capacity"] != 150 {
		t.Fatalf("refusals: %v", st.Refusals)
	}
}

// TestManyReleasesFromOneAddress: finished ceremonies (kept as proofs for
// adding a passkey) never count against the address's ceremony cap, and
// their own store is bounded, oldest dropped first.
func TestManyReleasesFromOneAddress(t *testing.T) {
	v := newEnv(t, func(o *Options) { o.MaxCeremonies = 8; o.MaxCeremoniesPerAddress = 2 })
	v.register(nil, "alice", aliceKey, softauthn.CreateOptions{})
	var proofs []string
	for range 20 {
		r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
		if r.Status != 200 {
			t.Fatalf("release: %d %s", r.Status, r.Body)
		}
		proofs = append(proofs, r.Map(t)["assertionCeremonyId"].(string))
	}
	if n := v.svc.eph.proofs.(*store.MemoryEphemeral).Len(); n > 8 {
		t.Fatalf("%d proofs held, cap 8", n)
	}
	r := v.Send("POST", "/v1/passkeys/registration/begin", map[string]any{"assertionCeremonyId": proofs[0]}, withBearer(v.token("alice")))
	if r.Code() != "assertion_invalid" {
		t.Fatalf("evicted proof: %d %s", r.Status, r.Body)
	}
	r = v.Send("POST", "/v1/passkeys/registration/begin", map[string]any{"assertionCeremonyId": proofs[19]}, withBearer(v.token("alice")))
	if r.Status != 200 {
		t.Fatalf("newest proof: %d %s", r.Status, r.Body)
	}
}
