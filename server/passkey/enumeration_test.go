package passkey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
)

// TestNoEnumerationByErrorCode: a stranger who signs with their own key
// gets one answer whatever the credential id names: a decoy of an unknown
// user, a real credential of the user, another user's, a revoked one, one
// with another user handle or inconsistent backup flags, in a ceremony for
// a user or a discoverable one. Otherwise the answer would tell real
// credential ids (and so real users) from decoys.
func TestNoEnumerationByErrorCode(t *testing.T) {
	v := newEnv(t, nil)
	f := setup(v)
	erinAuth := softauthn.New([16]byte{0xe0})
	erin := v.register(erinAuth, "erin", testKey(0xe0), softauthn.CreateOptions{BackupEligible: true, BackupState: true})
	carolAuth := softauthn.New([16]byte{0xc0})
	carol := v.register(carolAuth, "carol", testKey(0xc0), softauthn.CreateOptions{})
	if err := v.svc.RevokePasskey(context.Background(), enclave.UserOwner("carol"), base64.RawURLEncoding.EncodeToString(carol.ID), "test"); err != nil {
		t.Fatal(err)
	}
	decoyOf := func(userID string) []byte {
		var pk struct {
			AllowCredentials []struct {
				ID string `json:"id"`
			} `json:"allowCredentials"`
		}
		if err := json.Unmarshal(v.beginAuth(user(userID)).PublicKey, &pk); err != nil || len(pk.AllowCredentials) == 0 {
			t.Fatalf("begin %s: %v", userID, err)
		}
		id, _ := base64.RawURLEncoding.DecodeString(pk.AllowCredentials[0].ID)
		return id
	}
	// mallory signs whatever id she is given with her own key.
	mallory := softauthn.New([16]byte{0x66})
	_, opts := v.beginRegistration("zed", nil)
	_, forged, err := mallory.Create(opts, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	forge := func(b begun, id []byte, o softauthn.GetOptions) resp {
		forged.ID = bytes.Clone(id)
		o.CredentialID = id
		if o.UserHandle == softauthn.UserHandleRaw {
			o.UserHandle = softauthn.UserHandleAbsent
		}
		return v.assert(mallory, b, testOrigin, o, nil)
	}
	cases := []struct {
		name string
		run  func() resp
	}{
		{"decoy id of an unknown user", func() resp { return forge(v.beginAuth(user("nobody")), decoyOf("nobody"), softauthn.GetOptions{}) }},
		{"the user's real id", func() resp { return forge(v.beginAuth(user("alice")), f.alice.ID, softauthn.GetOptions{}) }},
		{"another user's real id", func() resp { return forge(v.beginAuth(user("alice")), f.bob.ID, softauthn.GetOptions{}) }},
		{"a decoy id in a known user's ceremony", func() resp { return forge(v.beginAuth(user("alice")), decoyOf("nobody"), softauthn.GetOptions{}) }},
		{"a revoked id", func() resp { return forge(v.beginAuth(user("carol")), carol.ID, softauthn.GetOptions{}) }},
		{"the real id with another user handle", func() resp {
			return forge(v.beginAuth(user("alice")), f.alice.ID, softauthn.GetOptions{UserHandle: softauthn.UserHandleCustom, UserHandleValue: "bob"})
		}},
		{"a BE credential asserted without BE", func() resp { return forge(v.beginAuth(user("erin")), erin.ID, softauthn.GetOptions{}) }},
		{"discoverable: a real id", func() resp { return forge(v.beginAuth(nil), f.alice.ID, softauthn.GetOptions{}) }},
		{"discoverable: a decoy id", func() resp { return forge(v.beginAuth(nil), decoyOf("nobody2"), softauthn.GetOptions{}) }},
	}
	var want resp
	for i, tc := range cases {
		r := tc.run()
		if r.Status != 401 {
			t.Fatalf("%s: %d %s", tc.name, r.Status, r.Body)
		}
		if i == 0 {
			want = r
			continue
		}
		if r.Status != want.Status || r.Code() != want.Code() || r.Map(t)["error"].(map[string]any)["message"] != want.Map(t)["error"].(map[string]any)["message"] {
			t.Errorf("%s: %d %s, a decoy id gets %d %s", tc.name, r.Status, r.Body, want.Status, want.Body)
		}
	}
	// The holders themselves still get the precise reason.
	if r := v.assert(f.bobAuth, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: f.bob.ID}, nil); r.Code() != "credential_not_allowed" {
		t.Errorf("bob's own passkey in alice's ceremony: %d %s", r.Status, r.Body)
	}
	if r := v.assert(carolAuth, v.beginAuth(user("carol")), testOrigin, softauthn.GetOptions{CredentialID: carol.ID}, nil); r.Code() != "credential_revoked" {
		t.Errorf("carol's revoked passkey: %d %s", r.Status, r.Body)
	}
	erinCred := erinAuth.Credential(erin.ID)
	erinCred.BackupEligible, erinCred.BackupState = false, false
	if r := v.assert(erinAuth, v.beginAuth(user("erin")), testOrigin, softauthn.GetOptions{}, nil); r.Code() != "backup_flags_invalid" {
		t.Errorf("erin's passkey without BE: %d %s", r.Status, r.Body)
	}
}
