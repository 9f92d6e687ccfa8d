package passkey

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// envPairs gives two nodes to a test: on bbolt the one node twice (what a
// single node does already), on etcd two appliances over one three-member
// etcd (each node on another member) with the same root key and clock,
// as a cluster's nodes are; both use the same authenticator.
var envPairs = []struct {
	name  string
	nodes func(t *testing.T, mod func(*Options)) (a, b *env)
}{
	{"bbolt-one-node", func(t *testing.T, mod func(*Options)) (*env, *env) {
		v := newEnv(t, mod)
		return v, v
	}},
	{"etcd-two-nodes", func(t *testing.T, mod func(*Options)) (*env, *env) {
		c := etcddev.EmbeddedCluster(t, 3)
		opts := []apptest.CoreOption{apptest.RootKey(enclave.NewRootKey()), apptest.StoreBackend(c.SharedBackend(etcdstore.Options{}))}
		clk := firebasetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
		a, b := newEnvOn(t, mod, opts, clk), newEnvOn(t, mod, opts, clk)
		b.auth = a.auth
		return a, b
	}},
}

// TestCeremonyBeginOnOneNodeFinishOnAnother: a registration and an
// authentication begun on node A finish on node B; the same finish
// replayed on either node is refused (the ceremony is single use in the
// whole cluster), and a ceremony of one kind cannot finish the other.
func TestCeremonyBeginOnOneNodeFinishOnAnother(t *testing.T) {
	for _, p := range envPairs {
		t.Run(p.name, func(t *testing.T) {
			a, b := p.nodes(t, nil)
			id, opts := a.beginRegistration("alice", nil)
			cred, _, err := a.auth.CreateWith(opts, testOrigin, softauthn.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			reg := map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred), "key": b64(aliceKey)}
			if r := b.Send("POST", "/v1/passkeys/registration/finish", reg); r.Status != 201 {
				t.Fatalf("registration begun on A, finished on B: %d %s", r.Status, r.Body)
			}
			if r := a.Send("POST", "/v1/passkeys/registration/finish", reg); r.Code() != "ceremony_unknown" {
				t.Fatalf("registration replayed on A: %d %s", r.Status, r.Body)
			}

			bg := a.beginAuth(user("alice"))
			assertion, err := a.auth.Get(bg.PublicKey, testOrigin)
			if err != nil {
				t.Fatal(err)
			}
			fin := map[string]any{"ceremonyId": bg.CeremonyID, "credential": json.RawMessage(assertion)}
			// The registration finish route does not take an authentication.
			if r := b.Send("POST", "/v1/passkeys/registration/finish", fin); r.Code() != "ceremony_unknown" {
				t.Fatalf("authentication ceremony at registration finish: %d %s", r.Status, r.Body)
			}
			r := b.Send("POST", "/v1/passkeys/authentication/finish", fin)
			if r.Status != 200 || r.Map(t)["key"] != b64(aliceKey) {
				t.Fatalf("authentication begun on A, finished on B: %d %s", r.Status, r.Body)
			}
			for name, n := range map[string]*env{"A": a, "B": b} {
				if r := n.Send("POST", "/v1/passkeys/authentication/finish", fin); r.Status != 400 || r.Code() != "ceremony_unknown" {
					t.Fatalf("assertion replayed on %s: %d %s", name, r.Status, r.Body)
				}
			}
		})
	}
}

// TestStepUpProofUsedOnceAcrossNodes: the proof of a release on node A
// (assertionCeremonyId) authorizes adding a passkey on node B once; named
// again on A it is refused.
func TestStepUpProofUsedOnceAcrossNodes(t *testing.T) {
	for _, p := range envPairs {
		t.Run(p.name, func(t *testing.T) {
			a, b := p.nodes(t, nil)
			a.register(nil, "alice", aliceKey, softauthn.CreateOptions{})
			r := a.assert(nil, a.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
			if r.Status != 200 {
				t.Fatalf("release on A: %d %s", r.Status, r.Body)
			}
			proof := r.Map(t)["assertionCeremonyId"].(string)
			body := map[string]any{"assertionCeremonyId": proof}
			// Another user cannot use it (and does not use it up).
			if r := b.Send("POST", "/v1/passkeys/registration/begin", body, withBearer(b.token("mallory"))); r.Code() != "assertion_invalid" {
				t.Fatalf("alice's proof for mallory: %d %s", r.Status, r.Body)
			}
			// (Naming it for another user used it up, as before: a fresh one.)
			r = a.assert(nil, a.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
			proof = r.Map(t)["assertionCeremonyId"].(string)
			body = map[string]any{"assertionCeremonyId": proof}
			if r := b.Send("POST", "/v1/passkeys/registration/begin", body, withBearer(b.token("alice"))); r.Status != 200 {
				t.Fatalf("proof from A used on B: %d %s", r.Status, r.Body)
			}
			if r := a.Send("POST", "/v1/passkeys/registration/begin", body, withBearer(a.token("alice"))); r.Status != 403 || r.Code() != "assertion_invalid" {
				t.Fatalf("proof used again on A: %d %s", r.Status, r.Body)
			}
		})
	}
}

// TestUserBudgetSharedAcrossNodes: a per-user failure budget of two, spent
// once on node A and once on node B (a cloned authenticator replaying an
// old counter), locks the user on both nodes; it comes back after the
// interval.
func TestUserBudgetSharedAcrossNodes(t *testing.T) {
	for _, p := range envPairs {
		t.Run(p.name, func(t *testing.T) {
			a, b := p.nodes(t, func(o *Options) {
				o.UserFailureBurst = 2
				o.UserFailureInterval = time.Minute
				o.AddressFailureBurst = -1
			})
			a.register(nil, "alice", aliceKey, softauthn.CreateOptions{SignCount: 100, CounterStep: 1})
			for _, n := range []*env{a, b} {
				if r := n.assert(nil, n.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{SignCount: u32(1)}, nil); r.Code() != "counter_regressed" {
					t.Fatalf("regressed counter: %d %s", r.Status, r.Body)
				}
			}
			for name, n := range map[string]*env{"A": a, "B": b} {
				r := n.assert(nil, n.beginAuth(user("alice")), testOrigin, softauthn.GetOptions{}, nil)
				if r.Status != 429 || r.Code() != "rate_limited" || r.Header.Get("Retry-After") == "" {
					t.Fatalf("genuine assertion on %s after one failure on each node: %d %s", name, r.Status, r.Body)
				}
			}
			a.clock.Advance(time.Minute)
			if got := b.release(nil, "alice", softauthn.GetOptions{}); string(got) != string(aliceKey) {
				t.Fatal("not released after the interval")
			}
		})
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestCeremonyCapFreedByAnotherNode: ceremonies begun on node A from one
// address and finished on node B stop counting against A's per-address cap
// (A hears from the store that they are gone), so the address can begin
// again on A before they would have expired.
func TestCeremonyCapFreedByAnotherNode(t *testing.T) {
	for _, p := range envPairs {
		t.Run(p.name, func(t *testing.T) {
			a, b := p.nodes(t, func(o *Options) { o.MaxCeremoniesPerAddress = 2 })
			a.register(nil, "alice", aliceKey, softauthn.CreateOptions{})
			var begun []begun
			for range 2 {
				begun = append(begun, a.beginAuth(user("alice")))
			}
			if r := a.Send("POST", "/v1/passkeys/authentication/begin", user("alice")); r.Status != 429 {
				t.Fatalf("third open ceremony of one address on A: %d %s", r.Status, r.Body)
			}
			for _, bg := range begun {
				if r := b.assert(nil, bg, testOrigin, softauthn.GetOptions{}, nil); r.Status != 200 {
					t.Fatalf("finish on B: %d %s", r.Status, r.Body)
				}
			}
			// A learns it through the store's watch, a network delay later.
			for deadline := time.Now().Add(30 * time.Second); a.svc.Stats().Open != 0; {
				if time.Now().After(deadline) {
					t.Fatalf("A still counts %d open ceremonies finished on B", a.svc.Stats().Open)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if r := a.Send("POST", "/v1/passkeys/authentication/begin", user("alice")); r.Status != 200 {
				t.Fatalf("begin on A after B finished its ceremonies: %d %s", r.Status, r.Body)
			}
		})
	}
}

// TestCeremonyEncoding: a ceremony stored in a cluster's store comes back
// with every field (a discoverable one without subject, one with subject,
// recipient key and flags), and a damaged one is refused, not half read.
func TestCeremonyEncoding(t *testing.T) {
	v := newEnv(t, nil)
	rp := v.svc.rps[0]
	for _, c := range []*ceremony{
		{kind: kindAuthentication, rp: rp, prefix: OwnerPrefixUser, expires: time.Unix(1700000000, 5),
			session: webauthn.SessionData{Challenge: "chal", RelyingPartyID: testRPID, AllowedCredentialIDs: [][]byte{{1, 2}, {3}}, Expires: time.Unix(1700000000, 0).UTC(), UserVerification: "preferred"}},
		{kind: kindRegistration, rp: rp, subject: &Subject{Owner: "portal:client-a", UserID: "client-a"}, recipient: []byte{9, 9, 9},
			stepUp: true, claim: true, expires: time.Unix(1700000001, 0), session: webauthn.SessionData{Challenge: "c2", UserID: []byte("client-a")}},
		{kind: kindRegistration, rp: rp, subject: &Subject{Owner: "user:bob", UserID: "bob"}, keyStored: true, expires: time.Unix(1700000002, 0)},
	} {
		b, err := encodeCeremony(c)
		if err != nil {
			t.Fatal(err)
		}
		got, rpID, err := decodeCeremony(b)
		if err != nil || rpID != testRPID {
			t.Fatalf("decode: %v %q", err, rpID)
		}
		same := got.kind == c.kind && reflect.DeepEqual(got.subject, c.subject) && got.prefix == c.prefix &&
			bytes.Equal(got.recipient, c.recipient) && got.stepUp == c.stepUp && got.keyStored == c.keyStored &&
			got.claim == c.claim && got.expires.Equal(c.expires) && got.session.Challenge == c.session.Challenge &&
			got.session.RelyingPartyID == c.session.RelyingPartyID && bytes.Equal(got.session.UserID, c.session.UserID) &&
			reflect.DeepEqual(len(got.session.AllowedCredentialIDs), len(c.session.AllowedCredentialIDs)) &&
			got.session.Expires.Equal(c.session.Expires) && got.session.UserVerification == c.session.UserVerification
		for i := range min(len(got.session.AllowedCredentialIDs), len(c.session.AllowedCredentialIDs)) {
			same = same && bytes.Equal(got.session.AllowedCredentialIDs[i], c.session.AllowedCredentialIDs[i])
		}
		if !same {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
		}
		for _, bad := range [][]byte{b[:len(b)-1], append(bytes.Clone(b), 0), append([]byte{2}, b[1:]...), b[:5]} {
			if _, _, err := decodeCeremony(bad); err == nil {
				t.Fatalf("a damaged ceremony decoded: %x", bad)
			}
		}
	}
}

// TestSealedReleaseAcrossNodes: the recipient key a ceremony begun on node
// A commits to reaches node B, which seals the key to it (and refuses
// another key named at finish).
func TestSealedReleaseAcrossNodes(t *testing.T) {
	for _, p := range envPairs {
		t.Run(p.name, func(t *testing.T) {
			a, b := p.nodes(t, nil)
			a.register(nil, "alice", aliceKey, softauthn.CreateOptions{})
			priv, err := hpke.DHKEM(ecdh.X25519()).GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			pub := base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes())
			other, _ := hpke.DHKEM(ecdh.X25519()).GenerateKey()
			bg := a.beginAuth(map[string]any{"userId": "alice", "recipientPublicKey": pub})
			swapped := map[string]any{"recipientPublicKey": base64.StdEncoding.EncodeToString(other.PublicKey().Bytes())}
			if r := b.assert(nil, bg, testOrigin, softauthn.GetOptions{}, swapped); r.Code() != ErrRecipientMismatch.Code {
				t.Fatalf("another recipient key at finish on B: %d %s", r.Status, r.Body)
			}
			bg = a.beginAuth(map[string]any{"userId": "alice", "recipientPublicKey": pub})
			r := b.assert(nil, bg, testOrigin, softauthn.GetOptions{}, nil)
			m := r.Map(t)
			if r.Status != 200 || m["key"] != nil || m["sealedKey"] == nil {
				t.Fatalf("sealed release on B: %d %s", r.Status, r.Body)
			}
			enc, _ := base64.StdEncoding.DecodeString(m["enc"].(string))
			ct, _ := base64.StdEncoding.DecodeString(m["sealedKey"].(string))
			if pt, err := enclave.OpenFromRecipient(priv, enc, ct, ReleaseInfo(bg.CeremonyID, "alice")); err != nil || !bytes.Equal(pt, aliceKey) {
				t.Fatalf("open the key sealed on B: %v", err)
			}
		})
	}
}
