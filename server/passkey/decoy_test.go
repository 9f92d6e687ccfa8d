package passkey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// authenticatorKind is how one kind of authenticator in the field shows
// up in allowCredentials: its credential id length and the transports
// the browser reported at registration (nil: none reported).
type authenticatorKind struct {
	weight     int
	idLen      int
	transports []string
}

// fieldMix is a realistic mix of authenticators (platform passkeys
// dominate; security keys and browsers that report no transports exist).
var fieldMix = []authenticatorKind{
	{40, 20, []string{"hybrid", "internal"}}, // iCloud Keychain
	{25, 16, []string{"hybrid", "internal"}}, // Google Password Manager
	{10, 32, []string{"internal"}},           // Windows Hello
	{10, 64, []string{"nfc", "usb"}},         // security key
	{5, 16, []string{"usb"}},                 // older security key
	{10, 16, nil},                            // a browser that reports none
}

func pickWeighted(r *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := r.IntN(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	return len(weights) - 1
}

// setTransports rewrites response.transports of a registration response
// (set, or removed when nil); the attestation does not cover it.
func setTransports(t *testing.T, cred []byte, transports []string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cred, &m); err != nil {
		t.Fatal(err)
	}
	resp := m["response"].(map[string]any)
	if transports == nil {
		delete(resp, "transports")
	} else {
		resp["transports"] = transports
	}
	out, _ := json.Marshal(m)
	return out
}

// registerKind registers one passkey of kind k for userID on a; the
// first one stores a key, later ones are added with a fresh assertion.
func (v *env) registerKind(a *softauthn.Authenticator, userID string, k authenticatorKind, first bool) {
	v.t.Helper()
	body := map[string]any{}
	if !first {
		r := v.assert(a, v.beginAuth(user(userID)), testOrigin, softauthn.GetOptions{}, nil)
		if r.Status != 200 {
			v.t.Fatalf("step-up for %s: %d %s", userID, r.Status, r.Body)
		}
		body["assertionCeremonyId"] = r.Map(v.t.(*testing.T))["assertionCeremonyId"]
	}
	id, opts := v.beginRegistration(userID, body)
	cred, _, err := a.CreateWith(opts, testOrigin, softauthn.CreateOptions{CredentialIDLength: k.idLen, IgnoreExclude: true})
	if err != nil {
		v.t.Fatal(err)
	}
	fin := map[string]any{"ceremonyId": id, "credential": json.RawMessage(setTransports(v.t.(*testing.T), cred, k.transports))}
	if first {
		fin["key"] = base64.StdEncoding.EncodeToString(testKey(byte(len(userID))))
	}
	if r := v.Send("POST", "/v1/passkeys/registration/finish", fin); r.Status != 201 {
		v.t.Fatalf("registration/finish %s: %d %s", userID, r.Status, r.Body)
	}
}

// beginFeatures is what an observer of begin can read of its answer:
// everything but the challenge and the credential ids' bytes.
func beginFeatures(t *testing.T, svc *Service, userID string) (full string, count int, firstLen int, firstTransports string) {
	t.Helper()
	subj := UserSubject(userID)
	b, err := svc.BeginAuthentication(context.Background(), AuthenticationRequest{Subject: &subj, ClientAddr: testAddr})
	if err != nil {
		t.Fatalf("begin %s: %v", userID, err)
	}
	raw, _ := json.Marshal(b.Options)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var allow []map[string]json.RawMessage
	_ = json.Unmarshal(m["allowCredentials"], &allow)
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{strings.Join(keys, ",")}
	for i, d := range allow {
		var id string
		_ = json.Unmarshal(d["id"], &id)
		dk := []string{}
		for k := range d {
			dk = append(dk, k)
		}
		sort.Strings(dk)
		parts = append(parts, fmt.Sprintf("[%s len=%d tr=%s type=%s]", strings.Join(dk, ","), len(id), d["transports"], d["type"]))
		if i == 0 {
			firstLen, firstTransports = len(id), string(d["transports"])
		}
	}
	return strings.Join(parts, " "), len(allow), firstLen, firstTransports
}

// TestDecoyShapesIndistinguishable: 500 users registered with a realistic
// mix of passkeys (mostly one, sometimes two or three; ids of 16 to 64
// bytes; transports of several kinds or none) and 500 unknown users. An
// observer who trains simple classifiers on half of the begin answers
// (on the whole shape of allowCredentials, the count, the first id's
// length, its transports) and tests them on the other half does no better
// than chance: accuracy within 4 standard deviations of 50 % (a false
// alarm about once in 30,000 runs).
func TestDecoyShapesIndistinguishable(t *testing.T) {
	if testing.Short() {
		t.Skip("registers 500 users")
	}
	mod := func(o *Options) { o.MaxCeremonies = 100000; o.MaxCeremoniesPerAddress = 100000 }
	v := newEnv(t, mod)
	rng := rand.New(rand.NewPCG(12, 34))
	weights := make([]int, len(fieldMix))
	for i, k := range fieldMix {
		weights[i] = k.weight
	}
	const n = 500
	for i := range n {
		uid := fmt.Sprintf("user-%d", i)
		a := softauthn.New([16]byte{byte(i), byte(i >> 8)})
		count := 1 + pickWeighted(rng, []int{70, 22, 8})
		for j := range count {
			v.registerKind(a, uid, fieldMix[pickWeighted(rng, weights)], j == 0)
		}
	}
	// A restarted appliance (the shapes are learnt from the store).
	svc, err := NewService(mod2(testOptions(), mod), Deps{DB: v.DB, Custody: v.custody, Audit: v.Audit, Clock: v.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	type sample struct {
		real                    bool
		full, first, transports string
		count                   int
	}
	var train, test []sample
	for i := range n {
		for _, real := range []bool{true, false} {
			uid := fmt.Sprintf("ghost-%d", i)
			if real {
				uid = fmt.Sprintf("user-%d", i)
			}
			full, count, l, tr := beginFeatures(t, svc, uid)
			s := sample{real: real, full: full, first: fmt.Sprint(l), transports: tr, count: count}
			if i%2 == 0 {
				train = append(train, s)
			} else {
				test = append(test, s)
			}
		}
	}
	bound := 0.5 + 4*math.Sqrt(0.25/float64(len(test)))
	classifiers := map[string]func(sample) string{
		"whole shape":      func(s sample) string { return s.full },
		"count":            func(s sample) string { return fmt.Sprint(s.count) },
		"first id length":  func(s sample) string { return s.first },
		"first transports": func(s sample) string { return s.transports },
	}
	for name, feature := range classifiers {
		realN, ghostN := map[string]int{}, map[string]int{}
		for _, s := range train {
			if s.real {
				realN[feature(s)]++
			} else {
				ghostN[feature(s)]++
			}
		}
		right := 0
		for _, s := range test {
			f := feature(s)
			// A tie is broken by the feature itself: anything that depends
			// on the sample's position would leak its label (the test set
			// alternates real and unknown).
			h := fnv.New32a()
			h.Write([]byte(f))
			guess := realN[f] > ghostN[f] || (realN[f] == ghostN[f] && h.Sum32()%2 == 0)
			if guess == s.real {
				right++
			}
		}
		acc := float64(right) / float64(len(test))
		t.Logf("%s: accuracy %.3f (bound %.3f)", name, acc, bound)
		if acc > bound {
			t.Errorf("a classifier on %s tells real users from unknown ones: accuracy %.3f > %.3f", name, acc, bound)
		}
	}
}

func mod2(o Options, mod func(*Options)) Options {
	mod(&o)
	return o
}

// TestDecoysStable: the same unknown user gets the same decoys on every
// begin, and after a restart over the same store; another unknown user
// gets others.
func TestDecoysStable(t *testing.T) {
	v := newEnv(t, nil)
	setup(v)
	ids := func(svc *Service, userID string) []byte {
		subj := UserSubject(userID)
		b, err := svc.BeginAuthentication(context.Background(), AuthenticationRequest{Subject: &subj, ClientAddr: testAddr})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := json.Marshal(b.Options.AllowedCredentials)
		return out
	}
	restart := func() *Service {
		svc, err := NewService(testOptions(), Deps{DB: v.DB, Custody: v.custody, Audit: v.Audit, Clock: v.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	svc := restart()
	a, b := ids(svc, "nobody"), ids(svc, "nobody")
	if !bytes.Equal(a, b) {
		t.Fatalf("two begins, two decoy sets:\n%s\n%s", a, b)
	}
	if c := ids(restart(), "nobody"); !bytes.Equal(a, c) {
		t.Fatalf("decoys changed across a restart:\n%s\n%s", a, c)
	}
	v.clock.Advance(decoyShapeRefresh + time.Second) // the relearnt distribution is the same
	if c := ids(svc, "nobody"); !bytes.Equal(a, c) {
		t.Fatalf("decoys changed at a refresh of the same population:\n%s\n%s", a, c)
	}
	if other := ids(svc, "somebody-else"); bytes.Equal(other, a) {
		t.Fatal("two unknown users share decoys")
	}
}

// TestDecoyShapesRelearnt: the distribution is relearnt in the background
// once it is older than decoyShapeRefresh, so decoys follow the passkeys
// users register after the start.
func TestDecoyShapesRelearnt(t *testing.T) {
	v := newEnv(t, nil) // started with no passkey: the built-in mix
	odd := authenticatorKind{1, 48, []string{"ble"}}
	for i := range 20 {
		v.registerKind(softauthn.New([16]byte{byte(i)}), fmt.Sprintf("user-%d", i), odd, true)
	}
	v.clock.Advance(decoyShapeRefresh + time.Second)
	v.beginAuth(user("user-0")) // starts the refresh
	for range 1000 {
		v.svc.shapes.mu.RLock()
		done := v.svc.shapes.built.Equal(v.clock.Now())
		v.svc.shapes.mu.RUnlock()
		if done && !v.svc.shapes.refreshing.Load() {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	full, count, l, tr := beginFeatures(t, v.svc, "nobody")
	if count != 1 || l != len(base64.RawURLEncoding.EncodeToString(make([]byte, 48))) || tr != `["ble"]` {
		t.Fatalf("decoy after the refresh: %s", full)
	}
}
