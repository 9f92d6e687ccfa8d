package server

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/server/passkey"
	"github.com/keywarden/keywarden/server/portal"
)

type eventsBody struct {
	Events []audit.OwnerEvent `json:"events"`
}

// GET /v1/me/events: a user sees their own store, releases and delete —
// each with its audit line's seq and hash, as in the log — and nothing of
// another user's; the release's event is the line its receipt names. An
// attacker's token for another uid sees only that uid's (empty) list, and
// a missing or bad token is 401.
func TestMeEventsOwnOnly(t *testing.T) {
	h := newHarness(t)
	alice := h.issuer.Mint(nil)
	bob := h.issuer.Mint(firebasetest.Claims{"sub": "bob-uid"})
	mallory := h.issuer.Mint(firebasetest.Claims{"sub": "mallory-uid"})
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	for _, tok := range []string{alice, bob} {
		if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: key}); r.Status != 201 {
			t.Fatalf("put: %d %s", r.Status, r.Body)
		}
	}
	var releaseIDs []string
	for range 2 {
		r := h.Bearer("GET", "/v1/firebase/key", alice, nil)
		if r.Status != 200 {
			t.Fatalf("get: %d", r.Status)
		}
		releaseIDs = append(releaseIDs, r.Header.Get("X-Request-Id"))
	}
	h.Bearer("GET", "/v1/firebase/key", bob, nil)
	if r := h.Bearer("DELETE", "/v1/firebase/key", alice, nil); r.Status != 204 {
		t.Fatalf("delete: %d", r.Status)
	}

	var got eventsBody
	r := h.Bearer("GET", "/v1/me/events", alice, nil)
	r.Decode(t, &got)
	if r.Status != 200 {
		t.Fatalf("events: %d %s", r.Status, r.Body)
	}
	var actions []string
	for _, e := range got.Events {
		actions = append(actions, e.Action)
	}
	if len(actions) != 4 || actions[0] != audit.ActionDelete || actions[1] != audit.ActionRelease || actions[2] != audit.ActionRelease || actions[3] != audit.ActionStore {
		t.Fatalf("alice's events %v, want delete, release, release, store", actions)
	}
	if got.Events[2].RequestID != releaseIDs[0] || got.Events[1].RequestID != releaseIDs[1] || got.Events[1].KeyVersion != "1" {
		t.Fatalf("release events %+v, request ids %v", got.Events[1:3], releaseIDs)
	}
	for _, e := range got.Events {
		line, err := audit.FindLine([]string{h.core.AuditDir}, e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(line)
		if e.Line != hex.EncodeToString(sum[:]) {
			t.Fatalf("event at seq %d: hash differs from the log's line", e.Seq)
		}
		if !strings.Contains(string(line), `"owner":"firebase:proj-a//`+firebasetest.DefaultSubject+`"`) {
			t.Fatalf("alice was shown line %s", line)
		}
	}
	var bobs eventsBody
	h.Bearer("GET", "/v1/me/events", bob, nil).Decode(t, &bobs)
	if len(bobs.Events) != 2 {
		t.Fatalf("bob sees %d events, want his store and release", len(bobs.Events))
	}
	for _, e := range bobs.Events {
		for _, a := range got.Events {
			if e.Seq == a.Seq {
				t.Fatalf("bob sees alice's line %d", e.Seq)
			}
		}
	}
	var mal eventsBody
	r = h.Bearer("GET", "/v1/me/events", mallory, nil)
	r.Decode(t, &mal)
	if r.Status != 200 || len(mal.Events) != 0 {
		t.Fatalf("another uid: %d, %d events", r.Status, len(mal.Events))
	}
	if r := h.Do("GET", "/v1/me/events", nil); r.Status != 401 {
		t.Fatalf("no token: %d", r.Status)
	}
	if r := h.Bearer("GET", "/v1/me/events?limit=0", alice, nil); r.Status != 400 || r.Code() != "invalid_query" {
		t.Fatalf("limit=0: %d %s", r.Status, r.Body)
	}
	var page eventsBody
	h.Bearer("GET", "/v1/me/events?limit=1&before="+itoa(got.Events[0].Seq), alice, nil).Decode(t, &page)
	if len(page.Events) != 1 || page.Events[0].Seq != got.Events[1].Seq {
		t.Fatalf("page: %+v", page.Events)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// GET /v1/me/events with a passkey proof (X-Passkey-Proof: the
// assertionCeremonyId of a finished authentication, as a passkey release
// proves its owner): alice sees her passkey store and release and not
// bob's; bob's proof shows only his. The proof is single use (a replay is
// 401 passkey_proof_invalid), expires with the ceremony lifetime, and an
// unknown id or one sent with passkeys off is refused.
func TestMeEventsPasskeyProof(t *testing.T) {
	h := newHarness(t, withPasskeys(t))
	authA, authB := softauthn.New([16]byte{1}), softauthn.New([16]byte{2})
	for _, u := range []struct {
		a  *softauthn.Authenticator
		id string
	}{{authA, "alice"}, {authB, "bob"}} {
		if _, r := h.registerPasskey(u.a, u.id, []byte("key of "+u.id+" 0123456789abcdef")); r.Status != 201 && r.Status != 200 {
			t.Fatalf("register %s: %d %s", u.id, r.Status, r.Body)
		}
	}
	proof := func(a *softauthn.Authenticator, user string) string {
		t.Helper()
		_, r := h.releasePasskey(a, user)
		id, _ := r.Map(t)["assertionCeremonyId"].(string)
		if r.Status != 200 || id == "" {
			t.Fatalf("release %s: %d %s", user, r.Status, r.Body)
		}
		return id
	}
	events := func(p string) reply {
		t.Helper()
		return h.Do("GET", "/v1/me/events", nil, "X-Passkey-Proof", p)
	}
	pa := proof(authA, "alice")
	// A request refused for its query does not spend the single-use proof.
	if r := h.Do("GET", "/v1/me/events?limit=0", nil, "X-Passkey-Proof", pa); r.Status != 400 {
		t.Fatalf("bad limit with a proof: %d %s", r.Status, r.Body)
	}
	var got eventsBody
	r := events(pa)
	if r.Status != 200 {
		t.Fatalf("alice's events: %d %s", r.Status, r.Body)
	}
	r.Decode(t, &got)
	// Newest first: the release, the registration that stored the key, the
	// session token the admin made for her.
	if len(got.Events) != 3 || got.Events[0].Action != audit.ActionRelease || got.Events[0].Method != passkey.Method ||
		got.Events[1].Action != audit.ActionPasskeyRegister {
		t.Fatalf("alice's events: %+v", got.Events)
	}
	for _, e := range got.Events {
		line, err := audit.FindLine([]string{h.core.AuditDir}, e.Seq)
		if err != nil || !strings.Contains(string(line), `"owner":"user:alice"`) {
			t.Fatalf("alice was shown line %d: %s (%v)", e.Seq, line, err)
		}
	}
	// Replayed: the proof is used up.
	if r := events(pa); r.Status != 401 || r.Code() != passkey.ErrProofInvalid.Code {
		t.Fatalf("replayed proof: %d %s", r.Status, r.Body)
	}
	// Bob's proof: bob's events only.
	var bobs eventsBody
	r = events(proof(authB, "bob"))
	r.Decode(t, &bobs)
	if r.Status != 200 || len(bobs.Events) != 3 {
		t.Fatalf("bob's events: %d %s", r.Status, r.Body)
	}
	for _, e := range bobs.Events {
		for _, a := range got.Events {
			if e.Seq == a.Seq {
				t.Fatalf("bob sees alice's line %d", e.Seq)
			}
		}
	}
	// Expired: older than the ceremony lifetime.
	late := proof(authA, "alice")
	h.issuer.Clock().Advance(passkey.DefaultCeremonyTTL + time.Second)
	if r := events(late); r.Status != 401 || r.Code() != passkey.ErrProofInvalid.Code {
		t.Fatalf("expired proof: %d %s", r.Status, r.Body)
	}
	// Made up, or too long.
	for _, p := range []string{"not-a-ceremony", strings.Repeat("x", 300)} {
		if r := events(p); r.Status != 401 || r.Code() != passkey.ErrProofInvalid.Code {
			t.Fatalf("proof %.20q: %d %s", p, r.Status, r.Body)
		}
	}
}

// An appliance without passkeys takes no passkey proof on GET
// /v1/me/events (401), and one without Portal takes no Portal credentials.
func TestMeEventsProofOfCapabilityOff(t *testing.T) {
	h := newHarness(t)
	for _, hd := range [][]string{{"X-Passkey-Proof", "whatever"}, {"X-Firebase-Token", h.issuer.Mint(nil), "Authorization", "Bearer pk_live_x"}} {
		if r := h.Do("GET", "/v1/me/events", nil, hd...); r.Status != 401 || strings.Contains(string(r.Body), `"events"`) {
			t.Fatalf("%s with the capability off: %d %s", hd[0], r.Status, r.Body)
		}
	}
}

// The headers that pick GET /v1/me/events's proof are the capabilities' own.
func TestMeEventsProofHeaders(t *testing.T) {
	if passkeyProofHeader != passkey.ProofHeader || portalFirebaseToken != portal.FirebaseTokenHeader {
		t.Fatalf("headers %q %q, capabilities use %q %q", passkeyProofHeader, portalFirebaseToken, passkey.ProofHeader, portal.FirebaseTokenHeader)
	}
}
