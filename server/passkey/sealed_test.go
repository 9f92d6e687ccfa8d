package passkey

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/server/keys"
)

// A key sealed to the appliance key is stored by registration and released
// in the clear; the same blob sent in another user's registration does not
// open.
func TestRegistrationStoresKeySealedToApplianceKey(t *testing.T) {
	v := newEnv(t, nil)
	key := testKey(9)
	priv, err := v.custody.Root().HPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	enc, ct, suite, err := enclave.SealToRecipient(priv.PublicKey().Bytes(), key, keys.StoreInfo(keys.RoutePasskeyRegistration, "user:alice", Method))
	if err != nil {
		t.Fatal(err)
	}
	sealed := func(userID string) map[string]any {
		id, opts := v.beginRegistration(userID, nil)
		cred, _, err := v.auth.CreateWith(opts, testOrigin, softauthn.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred),
			"sealedKey": base64.StdEncoding.EncodeToString(ct), "enc": base64.StdEncoding.EncodeToString(enc), "suite": suite}
	}
	if r := v.Send("POST", "/v1/passkeys/registration/finish", sealed("mallory")); r.Status != 400 || r.Code() != "hpke_open_failed" {
		t.Fatalf("alice's blob in mallory's registration: %d %s", r.Status, r.Body)
	}
	if r := v.Send("POST", "/v1/passkeys/registration/finish", sealed("alice")); r.Status != 201 {
		t.Fatalf("sealed registration: %d %s", r.Status, r.Body)
	}
	fin := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
	var out struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(fin.Body, &out); err != nil || fin.Status != 200 {
		t.Fatalf("release: %d %s", fin.Status, fin.Body)
	}
	if got, _ := base64.StdEncoding.DecodeString(out.Key); !bytes.Equal(got, key) {
		t.Fatalf("released %x, stored %x", got, key)
	}
	if has, _ := v.custody.HasKey(t.Context(), "user:mallory", Method); has {
		t.Fatal("the refused registration stored a key")
	}
}
