package passkey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/store"
)

// warm makes the cache hold alice's list and credential: a release reads
// both.
func warm(t *testing.T, v *env, a *softauthn.Authenticator) {
	t.Helper()
	v.release(a, "alice", softauthn.GetOptions{})
	if _, ok := v.svc.creds.getID(a.Credentials()[0].ID); !ok {
		t.Fatal("a release did not leave the credential in the cache")
	}
}

// TestCachedCredentialRevokedBetweenBeginAndFinish: a passkey revoked
// after begin listed it, while the cache holds it, is refused at finish
// (and at every later ceremony), as if the cache were not there.
func TestCachedCredentialRevokedBetweenBeginAndFinish(t *testing.T) {
	v := newEnv(t, nil)
	c := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	warm(t, v, v.auth)
	b := v.beginAuth(user("alice"))
	if err := v.svc.RevokePasskey(context.Background(), enclave.UserOwner("alice"), base64.RawURLEncoding.EncodeToString(c.ID), "test"); err != nil {
		t.Fatal(err)
	}
	if r := v.assert(nil, b, testOrigin, softauthn.GetOptions{}, nil); r.Code() != "credential_revoked" {
		t.Fatalf("finish after revocation: %d %s", r.Status, r.Body)
	}
	if r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: c.ID}, nil); r.Code() != "credential_revoked" {
		t.Fatalf("a later ceremony: %d %s", r.Status, r.Body)
	}
}

// TestCachedCredentialCounter: with the credential cached, an assertion
// whose counter does not grow past the last accepted one (replayed,
// equal, lower, or a clone racing the original with the same counter) is
// refused as counter_regressed, and the next real one passes.
func TestCachedCredentialCounter(t *testing.T) {
	v := newEnv(t, func(o *Options) { o.UserFailureBurst = 10 })
	v.register(nil, "alice", testKey(1), softauthn.CreateOptions{SignCount: 100, CounterStep: 1})
	v.release(nil, "alice", softauthn.GetOptions{}) // 101
	v.release(nil, "alice", softauthn.GetOptions{}) // 102
	// Each accepted assertion writes the counter (and drops the record
	// from the cache); a refused one writes nothing, so from the second
	// refusal on the record comes from the cache.
	for i, n := range []uint32{102, 101, 0, 102} {
		if r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(n)}, nil); r.Code() != "counter_regressed" {
			t.Fatalf("counter %d after 102: %d %s", n, r.Status, r.Body)
		}
		if _, ok := v.svc.creds.getID(v.auth.Credentials()[0].ID); i == 0 && !ok {
			t.Fatal("the record is not in the cache")
		}
	}
	// The original and a clone sign two ceremonies with the same counter:
	// the first to finish wins, the other is a regression.
	b1, b2 := v.beginAuth(user("alice")), v.beginAuth(user("alice"))
	if r := v.assert(nil, b1, testOrigin, softauthn.GetOptions{SignCount: u32(200)}, nil); r.Status != 200 {
		t.Fatalf("first at 200: %d %s", r.Status, r.Body)
	}
	if r := v.assert(nil, b2, testOrigin, softauthn.GetOptions{SignCount: u32(200)}, nil); r.Code() != "counter_regressed" {
		t.Fatalf("clone at 200: %d %s", r.Status, r.Body)
	}
	if r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(201)}, nil); r.Status != 200 {
		t.Fatalf("next at 201: %d %s", r.Status, r.Body)
	}
}

// TestCachedCredentialResetAndDelete: a reset (every passkey revoked) and
// an owner's deletion reach a warm cache.
func TestCachedCredentialResetAndDelete(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, func(o *Options) { o.AllowReset = true })
	c := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	warm(t, v, v.auth)
	if _, err := v.svc.ResetPasskeys(ctx, enclave.UserOwner("alice"), "test"); err != nil {
		t.Fatal(err)
	}
	if r := v.assert(nil, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: c.ID}, nil); r.Code() != "credential_revoked" {
		t.Fatalf("after reset: %d %s", r.Status, r.Body)
	}
	fresh := softauthn.New([16]byte{5})
	v.register(fresh, "alice", testKey(2), softauthn.CreateOptions{})
	warm(t, v, fresh)
	if n, err := v.svc.DeleteOwner(ctx, enclave.UserOwner("alice")); err != nil || n != 2 {
		t.Fatalf("delete: %d %v", n, err)
	}
	if r := v.assert(fresh, v.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{CredentialID: fresh.Credentials()[0].ID}, nil); r.Code() != "credential_unknown" {
		t.Fatalf("after deletion: %d %s", r.Status, r.Body)
	}
	if cs, err := v.svc.loadOwnerCredentials(ctx, enclave.UserOwner("alice"), ""); err != nil || len(cs) != 0 {
		t.Fatalf("list after deletion: %d %v", len(cs), err)
	}
}

// TestCredentialCacheSharedByServices: two services over one store share
// the cache, so a revocation through one is seen by the other.
func TestCredentialCacheSharedByServices(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, nil)
	c := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	other, err := NewService(testOptions(), Deps{DB: v.DB, Custody: v.custody, Audit: v.Audit, Clock: v.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := other.loadCredential(ctx, c.ID); err != nil || got.Revoked != nil {
		t.Fatalf("before: %+v %v", got, err)
	}
	if _, err := other.loadOwnerCredentials(ctx, enclave.UserOwner("alice"), testRPID); err != nil {
		t.Fatal(err)
	}
	if err := v.svc.RevokePasskey(ctx, enclave.UserOwner("alice"), base64.RawURLEncoding.EncodeToString(c.ID), "test"); err != nil {
		t.Fatal(err)
	}
	if got, err := other.loadCredential(ctx, c.ID); err != nil || got.Revoked == nil {
		t.Fatalf("the other service reads a stale record: %+v %v", got, err)
	}
	if cs, err := other.loadOwnerCredentials(ctx, enclave.UserOwner("alice"), testRPID); err != nil || len(cs) != 1 || cs[0].Revoked == nil {
		t.Fatalf("the other service lists a stale record: %v", err)
	}
}

// TestCredentialCacheRefusesRacedRead: a record read from the store
// before a write finished does not enter the cache after it (it would
// undo the write's invalidation).
func TestCredentialCacheRefusesRacedRead(t *testing.T) {
	cc := &credCache{byID: map[string]*credential{}, byOwner: map[enclave.Owner]map[string][]*credential{}}
	old := &credential{ID: []byte{1}, Owner: "user:alice", SignCount: 1}
	gen := cc.generation() // a reader begins
	cc.invalidate(old.Owner, old.ID)
	cc.putID(gen, old.ID, old)
	cc.putOwner(gen, old.Owner, "", []*credential{old})
	if _, ok := cc.getID(old.ID); ok {
		t.Fatal("a raced read entered the cache by id")
	}
	if _, ok := cc.getOwner(old.Owner, ""); ok {
		t.Fatal("a raced read entered the owner's list")
	}
	cc.putID(cc.generation(), old.ID, old)
	got, ok := cc.getID(old.ID)
	if !ok {
		t.Fatal("a read after the write did not enter the cache")
	}
	got.SignCount = 9 // a caller changing its copy
	if again, _ := cc.getID(old.ID); again.SignCount != 1 {
		t.Fatal("a caller's change reached the cache")
	}
}

// TestCredentialReadAllocs bounds the allocations of a release's
// credential reads once the cache holds them (57 when both were store
// transactions with a decode and a copy). Counts are deterministic.
func TestCredentialReadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	ctx := context.Background()
	v := newEnv(t, nil)
	c := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	v.release(nil, "alice", softauthn.GetOptions{})
	allocs := testing.AllocsPerRun(100, func() {
		if cs, err := v.svc.loadOwnerCredentials(ctx, enclave.UserOwner("alice"), testRPID); err != nil || len(cs) != 1 {
			t.Fatal(err)
		}
		if _, err := v.svc.loadCredential(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 6 {
		t.Errorf("a release's credential reads made %v allocations, want at most 6", allocs)
	}
}

// TestCredentialCacheKeepsAbsence: an id no record has and an owner
// without passkeys are answered from memory like real ones (were only
// real ones cached, the time of a lookup would tell a stranger which ids
// and users exist), and a registration makes both real at once.
func TestCredentialCacheKeepsAbsence(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, nil)
	c := v.register(nil, "alice", testKey(1), softauthn.CreateOptions{})
	v.release(nil, "alice", softauthn.GetOptions{})
	// A decoy credential id of an unknown user, asserted by a stranger.
	b := v.beginAuth(user("bob"))
	var opts struct {
		AllowCredentials []struct {
			ID string `json:"id"`
		} `json:"allowCredentials"`
	}
	if err := json.Unmarshal(b.PublicKey, &opts); err != nil || len(opts.AllowCredentials) == 0 {
		t.Fatalf("decoys: %v %s", err, b.PublicKey)
	}
	decoy, _ := base64.RawURLEncoding.DecodeString(opts.AllowCredentials[0].ID)
	if _, err := v.svc.loadCredential(ctx, decoy); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("decoy id: %v", err)
	}
	for name, id := range map[string][]byte{"real": c.ID, "decoy": decoy} {
		if _, ok := v.svc.creds.getID(id); !ok {
			t.Errorf("the %s id is not answered from memory", name)
		}
	}
	for _, owner := range []string{"user:alice", "user:bob"} {
		if _, ok := v.svc.creds.getOwner(enclave.Owner(owner), testRPID); !ok {
			t.Errorf("%s's list is not answered from memory", owner)
		}
	}
	if _, err := v.svc.loadCredential(ctx, decoy); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("decoy id from memory: %v", err)
	}
	// bob registers: his list (empty in memory) is read again.
	bobAuth := softauthn.New([16]byte{7})
	v.register(bobAuth, "bob", testKey(2), softauthn.CreateOptions{})
	if got := v.release(bobAuth, "bob", softauthn.GetOptions{}); !bytes.Equal(got, testKey(2)) {
		t.Fatal("bob's key after his registration")
	}
	// An id remembered as absent becomes real when written.
	ghost := []byte("a credential id looked up before it existed")
	if _, err := v.svc.loadCredential(ctx, ghost); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	rec := &credential{ID: ghost, Owner: "user:carol", UserID: "carol", RPID: testRPID}
	if err := v.DB.Update(ctx, func(tx *store.Tx) error { return putCredential(tx, rec) }); err != nil {
		t.Fatal(err)
	}
	v.svc.wroteCredentials(rec.Owner, rec.ID)
	if got, err := v.svc.loadCredential(ctx, ghost); err != nil || got.Owner != "user:carol" {
		t.Fatalf("after the write: %v %v", got, err)
	}
	// Ids longer than WebAuthn allows are never kept.
	long := bytes.Repeat([]byte{1}, maxCachedIDLen+1)
	if _, err := v.svc.loadCredential(ctx, long); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if _, ok := v.svc.creds.getID(long); ok {
		t.Fatal("an over-long id entered the cache")
	}
}
