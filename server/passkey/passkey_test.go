package passkey

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/store"
)

// TestRegisterThenRelease: register with a key, authenticate, the same key
// comes back — for each algorithm, with real signatures.
func TestRegisterThenRelease(t *testing.T) {
	for _, alg := range []softauthn.Algorithm{softauthn.ES256, softauthn.RS256, softauthn.EdDSA} {
		t.Run(alg.String(), func(t *testing.T) {
			v := newEnv(t, nil)
			key := testKey(byte(-alg))
			v.register(nil, "alice", key, softauthn.CreateOptions{Algorithm: alg, CounterStep: 1})
			for range 3 {
				if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, key) {
					t.Fatalf("released %x, want %x", got, key)
				}
			}
			list, err := v.svc.ListPasskeys(context.Background(), enclave.UserOwner("alice"))
			if err != nil || len(list) != 1 || list[0].Algorithm != int64(alg) || list[0].SignCount != 3 {
				t.Fatalf("list: %+v %v", list, err)
			}
			if !strings.Contains(v.AuditLines(t), `"action":"release"`) {
				t.Fatal("release not audited")
			}
		})
	}
}

func TestDiscoverableLogin(t *testing.T) {
	v := newEnv(t, nil)
	other := softauthn.New([16]byte{2})
	v.register(other, "bob", testKey(2), softauthn.CreateOptions{})
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	for _, form := range []softauthn.UserHandleForm{softauthn.UserHandleRaw, softauthn.UserHandlePlain, softauthn.UserHandleEmpty} {
		b := v.beginAuth(map[string]any{})
		var opts struct {
			AllowCredentials []any `json:"allowCredentials"`
		}
		_ = json.Unmarshal(b.PublicKey, &opts)
		if len(opts.AllowCredentials) != 0 {
			t.Fatal("discoverable begin lists credentials")
		}
		r := v.assert(nil, b, testOrigin, softauthn.GetOptions{UserHandle: form}, nil)
		m := r.Map(t)
		if r.Status != 200 || m["userId"] != "alice" || m["key"] != base64.StdEncoding.EncodeToString(testKey(1)) {
			t.Fatalf("form %d: %d %s", form, r.Status, r.Body)
		}
	}
	r := v.assert(other, v.beginAuth(nil), testOrigin, softauthn.GetOptions{}, nil)
	if m := r.Map(t); r.Status != 200 || m["userId"] != "bob" {
		t.Fatalf("bob discoverable: %d %s", r.Status, r.Body)
	}
}

// TestUserHandleForms: raw, plain (iOS), empty (Safari), absent (Android)
// and null all release; the handle is compared by us, not by go-webauthn.
func TestUserHandleForms(t *testing.T) {
	v := newEnv(t, nil)
	// A user id whose plain form is not valid base64url, and one whose
	// plain form is: both must work in both forms.
	for _, id := range []string{"alice@example.com", "YWxpY2U"} {
		v.register(nil, id, testKey(3), softauthn.CreateOptions{})
		for _, form := range []softauthn.UserHandleForm{softauthn.UserHandleRaw, softauthn.UserHandlePlain, softauthn.UserHandleEmpty,
			softauthn.UserHandleAbsent, softauthn.UserHandleNull} {
			if got := v.release(nil, id, softauthn.GetOptions{UserHandle: form}); !bytes.Equal(got, testKey(3)) {
				t.Fatalf("%s form %d: wrong key", id, form)
			}
		}
	}
}

// TestSealedRelease: with recipientPublicKey the challenge commits to the
// key and only an HPKE ciphertext comes back, which the test's private key
// opens (X25519 and ML-KEM-768+X25519).
func TestSealedRelease(t *testing.T) {
	v := newEnv(t, nil)
	key := testKey(9)
	v.register(nil, "alice", key, softauthn.CreateOptions{})
	for name, kem := range map[string]hpke.KEM{"x25519": hpke.DHKEM(ecdh.X25519()), "mlkem768x25519": hpke.MLKEM768X25519()} {
		t.Run(name, func(t *testing.T) {
			priv, err := kem.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			pub := priv.PublicKey().Bytes()
			b := v.beginAuth(map[string]any{"userId": "alice", "recipientPublicKey": base64.StdEncoding.EncodeToString(pub)})
			nonce, _ := base64.RawURLEncoding.DecodeString(b.Nonce)
			var opts struct{ Challenge string }
			_ = json.Unmarshal(b.PublicKey, &opts)
			want := sha256.Sum256(append(append([]byte(nil), nonce...), pub...))
			if opts.Challenge != base64.RawURLEncoding.EncodeToString(want[:]) {
				t.Fatal("challenge is not SHA-256(nonce ‖ recipientPublicKey)")
			}
			r := v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil)
			m := r.Map(t)
			if r.Status != 200 || m["key"] != nil || m["sealedKey"] == nil {
				t.Fatalf("sealed release: %d %s", r.Status, r.Body)
			}
			if bytes.Contains(r.Body, []byte(base64.StdEncoding.EncodeToString(key))) {
				t.Fatal("plain key in a sealed answer")
			}
			enc, _ := base64.StdEncoding.DecodeString(m["enc"].(string))
			ct, _ := base64.StdEncoding.DecodeString(m["sealedKey"].(string))
			pt, err := enclave.OpenFromRecipient(priv, enc, ct, ReleaseInfo(b.CeremonyID, "alice"))
			if err != nil || !bytes.Equal(pt, key) {
				t.Fatalf("open sealed key: %v", err)
			}
			if _, err := enclave.OpenFromRecipient(priv, enc, ct, ReleaseInfo("other", "alice")); err == nil {
				t.Fatal("sealed key opens with another ceremony's info")
			}
		})
	}
}

// TestBackupEligibleFlip: iCloud Keychain registers BE=0 and later asserts
// BE=1; go-webauthn alone refuses that (softauthn's own test shows it).
// The flip is accepted and stored; BE going back is refused.
func TestBackupEligibleFlip(t *testing.T) {
	v := newEnv(t, nil)
	c := v.register(nil, "alice", testKey(4), softauthn.CreateOptions{})
	c.BackupEligible, c.BackupState = true, true
	if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, testKey(4)) {
		t.Fatal("wrong key after BE flip")
	}
	list, _ := v.svc.ListPasskeys(context.Background(), enclave.UserOwner("alice"))
	if !list[0].BackupEligible || !list[0].BackupState {
		t.Fatalf("flip not stored: %+v", list[0])
	}
	// BS may change back and forth; BE may not be withdrawn.
	c.BackupState = false
	if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, testKey(4)) {
		t.Fatal("BS change refused")
	}
	c.BackupEligible = false
	r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
	if r.Status != 401 || r.Code() != "backup_flags_invalid" {
		t.Fatalf("BE withdrawn: %d %s", r.Status, r.Body)
	}
}

// TestCounterWritesOnlyWhenChanged: a synced passkey (counter 0) releases
// without any store commit; a counting authenticator costs one per release.
func TestCounterWritesOnlyWhenChanged(t *testing.T) {
	v := newEnv(t, nil)
	v.register(nil, "sync", testKey(5), softauthn.CreateOptions{})
	hw := softauthn.New([16]byte{7})
	v.register(hw, "hw", testKey(6), softauthn.CreateOptions{SignCount: 10, CounterStep: 3})
	before := v.DB.Stats().Commits
	for range 5 {
		v.release(nil, "sync", softauthn.GetOptions{})
	}
	if d := v.DB.Stats().Commits - before; d != 0 {
		t.Fatalf("%d store commits for 5 releases of a counter-less passkey, want 0", d)
	}
	before = v.DB.Stats().Commits
	for range 5 {
		v.release(hw, "hw", softauthn.GetOptions{})
	}
	if d := v.DB.Stats().Commits - before; d != 5 {
		t.Fatalf("%d store commits for 5 counter changes, want 5", d)
	}
	list, _ := v.svc.ListPasskeys(context.Background(), enclave.UserOwner("hw"))
	if list[0].SignCount != 25 {
		t.Fatalf("sign count %d, want 25", list[0].SignCount)
	}
}

// TestAddPasskeyWithAssertion: a user with a key adds a second passkey
// only with a fresh assertion of the first; both then release the key.
func TestAddPasskeyWithAssertion(t *testing.T) {
	v := newEnv(t, nil)
	key := testKey(7)
	v.register(nil, "alice", key, softauthn.CreateOptions{})

	r := v.Send("POST", "/v1/passkeys/registration/begin", nil, withBearer(v.token("alice")))
	if r.Status != 409 || r.Code() != "key_exists" {
		t.Fatalf("session token alone: %d %s", r.Status, r.Body)
	}
	fin := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
	proof, _ := fin.Map(t)["assertionCeremonyId"].(string)
	if proof == "" {
		t.Fatalf("no assertionCeremonyId: %s", fin.Body)
	}
	laptop := softauthn.New([16]byte{8})
	id, opts := v.beginRegistration("alice", map[string]any{"assertionCeremonyId": proof})
	var o struct {
		ExcludeCredentials []any `json:"excludeCredentials"`
	}
	_ = json.Unmarshal(opts, &o)
	if len(o.ExcludeCredentials) != 1 {
		t.Fatalf("excludeCredentials: %d, want the existing passkey", len(o.ExcludeCredentials))
	}
	cred, _, err := laptop.Create(opts, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	r = v.Send("POST", "/v1/passkeys/registration/finish", map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred)})
	if m := r.Map(t); r.Status != 201 || m["keyStored"] != false {
		t.Fatalf("add passkey: %d %s", r.Status, r.Body)
	}
	if got := v.release(laptop, "alice", softauthn.GetOptions{}); !bytes.Equal(got, key) {
		t.Fatal("second passkey releases another key")
	}
	// The proof is single use.
	r = v.Send("POST", "/v1/passkeys/registration/begin", map[string]any{"assertionCeremonyId": proof}, withBearer(v.token("alice")))
	if r.Status != 403 || r.Code() != "assertion_invalid" {
		t.Fatalf("reused proof: %d %s", r.Status, r.Body)
	}
}

func TestAdminListRevokeReset(t *testing.T) {
	v := newEnv(t, nil)
	c := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	r := v.Bearer("GET", "/v1/admin/users/alice/passkeys", apptest.AdminKey, nil)
	if r.Status != 200 || bytes.Contains(r.Body, []byte("publicKey")) || bytes.Contains(r.Body, []byte(base64.StdEncoding.EncodeToString(testKey(1)))) {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	var list struct{ Passkeys []PasskeyInfo }
	_ = json.Unmarshal(r.Body, &list)
	if len(list.Passkeys) != 1 || list.Passkeys[0].ID != base64.RawURLEncoding.EncodeToString(c.ID) || list.Passkeys[0].AttestationFormat != "none" ||
		list.Passkeys[0].AAGUID != "adce0002-0000-0000-0000-000000000000" {
		t.Fatalf("list: %s", r.Body)
	}
	if r := v.Bearer("POST", "/v1/admin/users/alice/passkeys/reset", apptest.AdminKey, nil); r.Status != 403 || r.Code() != "passkey_reset_disabled" {
		t.Fatalf("reset while disabled: %d %s", r.Status, r.Body)
	}
	if r := v.Bearer("DELETE", "/v1/admin/users/bob/passkeys/"+list.Passkeys[0].ID, apptest.AdminKey, nil); r.Status != 404 {
		t.Fatalf("revoke another user's passkey: %d %s", r.Status, r.Body)
	}
	if r := v.Bearer("DELETE", "/v1/admin/users/alice/passkeys/"+list.Passkeys[0].ID, apptest.AdminKey, nil); r.Status != 204 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if r := v.Bearer("DELETE", "/v1/admin/users/alice/passkeys/"+list.Passkeys[0].ID, apptest.AdminKey, nil); r.Status != 404 {
		t.Fatalf("revoke twice: %d %s", r.Status, r.Body)
	}
	if !strings.Contains(v.AuditLines(t), `"action":"passkey_revoke"`) {
		t.Fatal("revocation not audited")
	}
}

// TestResetDestroysKey: with AllowReset the reset revokes every passkey and
// destroys the key; a session token then registers afresh, and the old key
// is gone (never re-bound).
func TestResetDestroysKey(t *testing.T) {
	v := newEnv(t, func(o *Options) { o.AllowReset = true })
	old := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	r := v.Bearer("POST", "/v1/admin/users/alice/passkeys/reset", apptest.AdminKey, nil)
	if m := r.Map(t); r.Status != 200 || m["revoked"] != float64(1) || m["keyDeleted"] != true {
		t.Fatalf("reset: %d %s", r.Status, r.Body)
	}
	if has, _ := v.custody.HasKey(context.Background(), enclave.UserOwner("alice"), Method); has {
		t.Fatal("key survived the reset")
	}
	r = v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: old.ID}, nil)
	if r.Code() != "credential_revoked" {
		t.Fatalf("old passkey after reset: %d %s", r.Status, r.Body)
	}
	fresh := softauthn.New([16]byte{5})
	v.register(fresh, "alice", testKey(2), softauthn.CreateOptions{})
	if got := v.release(fresh, "alice", softauthn.GetOptions{}); !bytes.Equal(got, testKey(2)) {
		t.Fatal("fresh registration after reset")
	}
	if !strings.Contains(v.AuditLines(t), `"action":"admin_passkey_reset"`) {
		t.Fatal("reset not audited")
	}
}

// TestUnknownUserLooksKnown: begin for a user without passkeys answers like
// for one with passkeys, with stable decoy credential ids (decisions/07).
func TestUnknownUserLooksKnown(t *testing.T) {
	v := newEnv(t, nil)
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	shape := func(id string) (keys []string, creds []map[string]any) {
		r := v.Send("POST", "/v1/passkeys/authentication/begin", user(id))
		if r.Status != 200 {
			t.Fatalf("begin %s: %d %s", id, r.Status, r.Body)
		}
		var m map[string]json.RawMessage
		_ = json.Unmarshal(r.Body, &m)
		for k := range m {
			keys = append(keys, k)
		}
		var pk struct {
			AllowCredentials []map[string]any `json:"allowCredentials"`
		}
		_ = json.Unmarshal(m["publicKey"], &pk)
		return keys, pk.AllowCredentials
	}
	k1, known := shape("alice")
	k2, unknown := shape("nobody")
	_, again := shape("nobody")
	if len(k1) != len(k2) || len(unknown) == 0 || len(known) == 0 {
		t.Fatalf("shapes differ: %v %v / %d %d", k1, k2, len(known), len(unknown))
	}
	// Their distribution is TestDecoyShapesIndistinguishable's; here each
	// decoy has only members a real descriptor has.
	for _, d := range unknown {
		for k := range d {
			if k != "type" && k != "id" && k != "transports" {
				t.Fatalf("decoy descriptor member %q: %v (a real one: %v)", k, d, known[0])
			}
		}
	}
	a, _ := json.Marshal(unknown)
	b, _ := json.Marshal(again)
	if !bytes.Equal(a, b) {
		t.Fatal("decoy credentials are not stable")
	}
}

// TestPortalSubjectNotReleasedNatively: the service-level API (as the
// Portal adapter uses it) with another owner kind and plain user ids; its
// credentials do not release through a native discoverable ceremony.
func TestServiceLevelAPI(t *testing.T) {
	v := newEnv(t, nil)
	ctx := context.Background()
	subj := Subject{Owner: "portal:client-1", UserID: "client-1"}
	b, err := v.svc.BeginRegistration(ctx, RegistrationRequest{Subject: subj, RPID: testRPID, ClientAddr: testAddr})
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := json.Marshal(b.Options)
	a := softauthn.New([16]byte{})
	cred, _, err := a.Create(opts, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	quoted, _ := json.Marshal(string(cred)) // Portal sends the credential as a JSON string
	reg, err := v.svc.FinishRegistration(ctx, FinishRegistrationRequest{CeremonyID: b.CeremonyID, RPID: testRPID, Credential: quoted,
		Key: []byte(strings.Repeat("ab", 32)), KeyFormat: enclave.FormatText, ClientID: "client-1", ClientAddr: testAddr})
	if err != nil || !reg.KeyStored {
		t.Fatalf("finish: %+v %v", reg, err)
	}
	if st, err := v.svc.Status(ctx, subj.Owner); err != nil || st.Passkeys != 1 || !st.HasKey {
		t.Fatalf("status: %+v %v", st, err)
	}
	ab, err := v.svc.BeginAuthentication(ctx, AuthenticationRequest{Subject: &subj, RPID: testRPID, ClientAddr: testAddr})
	if err != nil {
		t.Fatal(err)
	}
	ro, _ := json.Marshal(ab.Options)
	as, _ := a.GetWith(ro, testOrigin, softauthn.GetOptions{UserHandle: softauthn.UserHandlePlain})
	quoted, _ = json.Marshal(string(as))
	out, err := v.svc.FinishAuthentication(ctx, FinishAuthenticationRequest{CeremonyID: ab.CeremonyID, RPID: testRPID, Credential: quoted, ClientAddr: testAddr})
	if err != nil || string(out.Key.Reveal()) != strings.Repeat("ab", 32) || out.KeyFormat != enclave.FormatText {
		t.Fatalf("release: %v", err)
	}
	// Write (finish-login/write): the assertion authorizes replacing the key.
	ab, _ = v.svc.BeginAuthentication(ctx, AuthenticationRequest{Subject: &subj, RPID: testRPID, ClientAddr: testAddr})
	ro, _ = json.Marshal(ab.Options)
	as, _ = a.Get(ro, testOrigin)
	out, err = v.svc.FinishAuthentication(ctx, FinishAuthenticationRequest{CeremonyID: ab.CeremonyID, Credential: as, ClientAddr: testAddr,
		ReplaceKey: []byte("new"), ReplaceKeyFormat: enclave.FormatText})
	if err != nil || !out.Replaced || out.Key.Len() != 0 {
		t.Fatalf("replace: %+v %v", out, err)
	}
	// A native discoverable ceremony does not accept a Portal credential.
	r := v.assert(a, v.beginAuth(nil), testOrigin, softauthn.GetOptions{}, nil)
	if r.Status != 401 || r.Code() != "credential_unknown" {
		t.Fatalf("portal credential through native API: %d %s", r.Status, r.Body)
	}
	// Wrong relying party.
	if _, err := v.svc.BeginAuthentication(ctx, AuthenticationRequest{Subject: &subj, RPID: "evil.example", ClientAddr: testAddr}); err == nil {
		t.Fatal("unknown RP accepted")
	}
	if n, err := v.svc.DeleteOwner(ctx, subj.Owner); err != nil || n != 1 {
		t.Fatalf("delete owner: %d %v", n, err)
	}
	if err := v.DB.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketCredentials, nil, func(k, _ []byte) error {
			if bytes.Contains(k, []byte("portal:")) {
				t.Errorf("left behind: %q", k)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWellKnown(t *testing.T) {
	v := newEnv(t, nil)
	r := v.Send("GET", "/.well-known/apple-app-site-association", nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"webcredentials":{"apps":["`+testAppleApp+`"]}`) {
		t.Fatalf("aasa: %d %s", r.Status, r.Body)
	}
	r = v.Send("GET", "/.well-known/assetlinks.json", nil)
	var links []assetLink
	if err := json.Unmarshal(r.Body, &links); err != nil || r.Status != 200 || len(links) != 1 ||
		links[0].Target.PackageName != "com.example.wallet" || links[0].Target.Fingerprints[0] != testFP ||
		links[0].Relation[0] != "delegate_permission/common.get_login_creds" {
		t.Fatalf("assetlinks: %d %s", r.Status, r.Body)
	}
	v2 := newEnv(t, func(o *Options) { o.RelyingParties[0].AppleAppIDs = nil; o.RelyingParties[0].AndroidApps = nil })
	if r := v2.Send("GET", "/.well-known/assetlinks.json", nil); r.Status != 404 {
		t.Fatalf("assetlinks without apps: %d", r.Status)
	}
}

// TestAndroidOrigin: an assertion from the Android app (origin built from
// its certificate fingerprint) releases; another fingerprint does not.
func TestAndroidOrigin(t *testing.T) {
	v := newEnv(t, nil)
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	fp, _ := ParseFingerprint(testFP)
	r := v.assert(nil, v.beginAuth(user("alice")), AndroidOrigin(fp), softauthn.GetOptions{UserHandle: softauthn.UserHandleAbsent}, nil)
	if r.Status != 200 {
		t.Fatalf("android origin: %d %s", r.Status, r.Body)
	}
	other := sha256.Sum256([]byte("debug key"))
	r = v.assert(nil, v.beginAuth(user("alice")), AndroidOrigin(other[:]), softauthn.GetOptions{}, nil)
	if r.Code() != "origin_mismatch" {
		t.Fatalf("other android signer: %d %s", r.Status, r.Body)
	}
	// The same origin configured directly (as config's passkey.origins may).
	v2 := newEnv(t, func(o *Options) { o.RelyingParties[0].Origins = []string{testOrigin, AndroidOrigin(other[:])} })
	v2.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	r = v2.assert(nil, v2.beginAuth(user("alice")), AndroidOrigin(other[:]), softauthn.GetOptions{}, nil)
	if r.Status != 200 {
		t.Fatalf("directly configured android origin: %d %s", r.Status, r.Body)
	}
}

// TestKeySizeRule: passkey registration stores what every store route
// stores, 1 to 1024 opaque bytes, and the release gives them back.
func TestKeySizeRule(t *testing.T) {
	for _, n := range []int{1, 1024} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			v := newEnv(t, nil)
			key := bytes.Repeat([]byte{byte(n)}, n)
			v.register(nil, "alice", key, softauthn.CreateOptions{})
			if got := v.release(nil, "alice", softauthn.GetOptions{}); !bytes.Equal(got, key) {
				t.Fatalf("released %d bytes, want the %d stored", len(got), n)
			}
		})
	}
}
