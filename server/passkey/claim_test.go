package passkey

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
)

// TestClaimNeedsNoActivePasskey: an unclaimed import of an owner who
// already has an active passkey (the key was deleted and imported again)
// is not claimed by a session token: the owner's passkey reaches it, and a
// new passkey needs its assertion.
func TestClaimNeedsNoActivePasskey(t *testing.T) {
	v := newEnv(t, nil)
	ctx := context.Background()
	v.register(nil, "ann", testKey(1), softauthn.CreateOptions{})
	owner := enclave.UserOwner("ann")
	if err := v.custody.DeleteKey(ctx, owner, Method); err != nil {
		t.Fatal(err)
	}
	imported := testKey(9)
	if _, err := v.custody.PutKey(ctx, owner, Method, imported, enclave.PutOptions{NoOverwrite: true, ClaimDeadline: v.clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r := v.Send("POST", "/v1/passkeys/registration/begin", nil, withBearer(v.token("ann")))
	if r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("registration with a session token beside an active passkey: %d %s", r.Status, r.Body)
	}
	if k := v.release(nil, "ann", softauthn.GetOptions{}); !bytes.Equal(k, imported) {
		t.Fatal("the owner's passkey does not release the imported key")
	}
}

// TestClaimServiceLevel: BeginRegistration reports the claim, a finish
// with a key is refused with ErrClaimWithKey and stores nothing, and
// KeyAtFinish refuses at begin.
func TestClaimServiceLevel(t *testing.T) {
	v := newEnv(t, nil)
	ctx := context.Background()
	owner := enclave.UserOwner("ben")
	imported := testKey(7)
	if _, err := v.custody.PutKey(ctx, owner, Method, imported, enclave.PutOptions{ClaimDeadline: v.clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.svc.BeginRegistration(ctx, RegistrationRequest{Subject: UserSubject("ben"), KeyAtFinish: true, ClientAddr: testAddr}); err != ErrClaimWithKey {
		t.Fatalf("begin with KeyAtFinish: %v", err)
	}
	b, err := v.svc.BeginRegistration(ctx, RegistrationRequest{Subject: UserSubject("ben"), ClientAddr: testAddr})
	if err != nil || !b.ClaimsImportedKey || b.KeyRequired {
		t.Fatalf("begin: %+v %v", b, err)
	}
	opts, _ := json.Marshal(b.Options)
	cred, _, err := v.auth.Create(opts, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.svc.FinishRegistration(ctx, FinishRegistrationRequest{CeremonyID: b.CeremonyID, Credential: cred, Key: testKey(3), ClientAddr: testAddr}); err != ErrClaimWithKey {
		t.Fatalf("finish with a key: %v", err)
	}
	if ps, _ := v.svc.ListPasskeys(ctx, owner); len(ps) != 0 {
		t.Fatalf("a refused claim left a passkey: %v", ps)
	}
	if k, err := v.custody.GetKey(ctx, owner, Method); err != nil || !bytes.Equal(k.Reveal(), imported) {
		t.Fatalf("the imported key after a refused claim: %v", err)
	}
}
