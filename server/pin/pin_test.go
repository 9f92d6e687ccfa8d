package pin

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cloudflare/circl/oprf"
	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/store"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC9497Vectors: the test vectors of RFC 9497, appendix A.1.1
// (ristretto255-SHA512, mode OPRF): the key derived from the seed, the
// client's blinding (circl, the Go client of the tests), the server's
// evaluation (this package's evaluate and DecodeElement) and the output.
func TestRFC9497Vectors(t *testing.T) {
	const (
		seed    = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3"
		keyInfo = "74657374206b6579"
		skSm    = "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
		blind   = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706"
	)
	vectors := []struct{ input, blinded, evaluated, output string }{
		{"00", "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
			"7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
			"527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6"},
		{"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
			"b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
			"f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73"},
	}
	sk, err := oprf.DeriveKey(oprf.SuiteRistretto255, oprf.BaseMode, unhex(t, seed), unhex(t, keyInfo))
	if err != nil {
		t.Fatal(err)
	}
	skb, err := sk.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(skb) != skSm {
		t.Fatalf("skSm = %x", skb)
	}
	g := oprf.SuiteRistretto255.Group()
	for _, v := range vectors {
		bl := g.NewScalar()
		if err := bl.UnmarshalBinary(unhex(t, blind)); err != nil {
			t.Fatal(err)
		}
		c := oprf.NewClient(oprf.SuiteRistretto255)
		fin, req, err := c.DeterministicBlind([][]byte{unhex(t, v.input)}, []oprf.Blind{bl})
		if err != nil {
			t.Fatal(err)
		}
		be, _ := req.Elements[0].MarshalBinaryCompress()
		if hex.EncodeToString(be) != v.blinded {
			t.Fatalf("BlindedElement = %x", be)
		}
		// The server's side, through the wire encoding.
		el, err := DecodeElement(base64.RawURLEncoding.EncodeToString(be))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := evaluate(skb, el)
		if err != nil {
			t.Fatal(err)
		}
		evb, _ := base64.RawURLEncoding.DecodeString(ev)
		if hex.EncodeToString(evb) != v.evaluated {
			t.Fatalf("EvaluationElement = %x", evb)
		}
		e := g.NewElement()
		if err := e.UnmarshalBinary(evb); err != nil {
			t.Fatal(err)
		}
		out, err := c.Finalize(fin, &oprf.Evaluation{Elements: []oprf.Evaluated{e}})
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(out[0]) != v.output {
			t.Fatalf("Output = %x", out[0])
		}
	}
	// Malformed elements are refused: the identity, a non-canonical
	// encoding, the wrong length, padding-free base64url only.
	for _, bad := range []string{
		base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
		base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)),
		base64.RawURLEncoding.EncodeToString(make([]byte, 31)),
		"not base64!", "",
	} {
		if _, err := DecodeElement(bad); !errors.Is(err, ErrBlindedElement) {
			t.Errorf("DecodeElement(%q) = %v", bad, err)
		}
	}
}

// TestPINCorrectReleases: the right PIN releases the stored key, in the
// clear and HPKE-sealed to the recipient bound at the recovery's start;
// a generated key is returned once; the count resets after the unlock.
func TestPINCorrectReleases(t *testing.T) {
	e := newEnv(t)
	tok := e.token("alice")
	key := base64.StdEncoding.EncodeToString([]byte("alice's client backup share key"))
	if r := e.register(tok, "123456", map[string]any{"guessLimit": 5, "key": key}); r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	if st := e.status(tok); st != (Status{Registered: true, GuessLimit: 5, GuessesRemaining: 5}) {
		t.Fatalf("status: %+v", st)
	}
	if r := e.try(tok, "111111"); r.Status != http.StatusForbidden || r.Code() != "pin_incorrect" {
		t.Fatalf("wrong PIN: %d %s", r.Status, r.Body)
	}
	rec, r := e.recover(tok, "123456", nil)
	if r.Status != http.StatusOK || rec.GuessesRemaining != 3 {
		t.Fatalf("recover: %d %s", r.Status, r.Body)
	}
	if r := e.unlock(tok, rec); r.Status != http.StatusOK || keyOf(t, r) != key {
		t.Fatalf("unlock: %d %s", r.Status, r.Body)
	}
	if st := e.status(tok); st.GuessesRemaining != 5 {
		t.Fatalf("after a correct unlock: %+v", st)
	}

	// HPKE to a recipient bound at the recovery's start.
	kem := hpke.DHKEM(ecdh.X25519())
	priv, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.PublicKey().Bytes()
	rec, r = e.recover(tok, "123456", map[string]any{"recipientPublicKey": base64.StdEncoding.EncodeToString(pub)})
	if r.Status != http.StatusOK {
		t.Fatalf("recover with recipient: %d %s", r.Status, r.Body)
	}
	r = e.unlock(tok, rec)
	var sealed firebase.KeyResponse
	r.DecodeStrict(t, &sealed)
	if r.Status != http.StatusOK || sealed.Key != "" || sealed.Suite != enclave.SuiteX25519 {
		t.Fatalf("sealed unlock: %d %s", r.Status, r.Body)
	}
	enc, _ := base64.StdEncoding.DecodeString(sealed.Enc)
	ct, _ := base64.StdEncoding.DecodeString(sealed.SealedKey)
	rc, err := hpke.NewRecipient(enc, priv, hpke.HKDFSHA256(), hpke.AES256GCM(), firebase.HPKEInfo("pin", fbOwner("alice")))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := rc.Open(nil, ct)
	if err != nil || base64.StdEncoding.EncodeToString(pt) != key {
		t.Fatalf("open sealed key: %v", err)
	}

	// A registration without a key: the appliance generates 32 bytes and
	// returns them once (a session-token owner this time).
	stok, _ := e.Sessions.Mint("bob", 600e9)
	r = e.register(stok, "0000", nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("register without key: %d %s", r.Status, r.Body)
	}
	gen := keyOf(t, r)
	if b, _ := base64.StdEncoding.DecodeString(gen); len(b) != GeneratedKeyBytes {
		t.Fatalf("generated key: %q", gen)
	}
	if r := e.try(stok, "0000"); r.Status != http.StatusOK || keyOf(t, r) != gen {
		t.Fatalf("unlock generated key: %d %s", r.Status, r.Body)
	}
	if st := e.status(stok); st.GuessLimit != DefaultGuessLimit {
		t.Fatalf("default guess limit: %+v", st)
	}
}

// TestPINWrongCountsDownAndLocks: wrong PINs count down with
// guessesRemaining; at zero 410 pin_locked, the key and its prior
// versions are gone, an admin restore of a prior version does not bring
// the key or the guesses back, and every later call says pin_locked.
func TestPINWrongCountsDownAndLocks(t *testing.T) {
	e := newEnv(t)
	tok := e.token("carol")
	owner := fbOwner("carol")
	k1 := base64.StdEncoding.EncodeToString([]byte("key one"))
	k2 := base64.StdEncoding.EncodeToString([]byte("key two"))
	if r := e.register(tok, "2468", map[string]any{"guessLimit": 3, "key": k1}); r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	// Change PIN and key (proving the old PIN): k1 becomes a prior version.
	if r := e.try(tok, "2468"); r.Status != http.StatusOK {
		t.Fatalf("unlock: %d %s", r.Status, r.Body)
	}
	if r := e.register(tok, "1357", map[string]any{"guessLimit": 3, "key": k2}); r.Status != http.StatusOK {
		t.Fatalf("replace: %d %s", r.Status, r.Body)
	}
	vs, err := e.Custody.ListVersions(context.Background(), owner, Method)
	if err != nil || len(vs) != 1 {
		t.Fatalf("prior versions before the lock: %v %v", vs, err)
	}
	for i, want := range []int{2, 1} {
		r := e.try(tok, "2468") // the old PIN is wrong now
		var b incorrectBody
		r.DecodeStrict(t, &b)
		if r.Status != http.StatusForbidden || b.Error.Code != "pin_incorrect" || b.GuessesRemaining != want {
			t.Fatalf("wrong guess %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	if r := e.try(tok, "0000"); r.Status != http.StatusGone || r.Code() != "pin_locked" {
		t.Fatalf("last wrong guess: %d %s", r.Status, r.Body)
	}
	if ok, err := e.Custody.HasKey(context.Background(), owner, Method); ok || err != nil {
		t.Fatalf("key after the lock: %v %v", ok, err)
	}
	ownerPath := "/v1/admin/owners/" + url.PathEscape(string(owner)) + "/keys/PIN/versions"
	if r := e.Admin(http.MethodGet, ownerPath, nil); r.Status != http.StatusOK || strings.Contains(string(r.Body), vs[0].ID) {
		t.Fatalf("versions after the lock: %d %s", r.Status, r.Body)
	}
	r := e.Admin(http.MethodPost, ownerPath+"/"+vs[0].ID+"/restore", nil)
	if r.Status != http.StatusNotFound {
		t.Fatalf("admin restore of a purged version: %d %s", r.Status, r.Body)
	}
	// Even a key put back by other means (an admin import) gives no guess.
	if _, err := e.Custody.PutKey(context.Background(), owner, Method, []byte("key one"), enclave.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := e.try(tok, "1357"); r.Status != http.StatusGone || r.Code() != "pin_locked" {
		t.Fatalf("the right PIN after the lock: %d %s", r.Status, r.Body)
	}
	if st := e.status(tok); st.Registered || st.GuessesRemaining != 0 {
		t.Fatalf("status after the lock: %+v", st)
	}
	if !strings.Contains(e.AuditLines(t), `"action":"pin_locked"`) {
		t.Fatal("no pin_locked audit line")
	}
}

// TestPINConcurrentGuesses: 200 concurrent wrong guesses against a limit
// of 10 get exactly 10 evaluations; the rest are refused.
func TestPINConcurrentGuesses(t *testing.T) {
	e := newEnv(t)
	tok := e.token("dave")
	if r := e.register(tok, "9999", map[string]any{"guessLimit": 10}); r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	b := newClient().blind(t, "0000")
	inc0 := e.rb.Increments()
	var mu sync.Mutex
	codes := map[int]int{}
	var ids []string
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.call(http.MethodPost, "/v1/pin/recoveries", tok, map[string]any{"blindedElement": b.elem})
			mu.Lock()
			defer mu.Unlock()
			codes[r.Status]++
			if r.Status == http.StatusOK {
				var rec recovered
				r.Decode(t, &rec)
				ids = append(ids, rec.RecoveryID)
			}
		}()
	}
	wg.Wait()
	if codes[http.StatusOK] != 10 || codes[http.StatusGone] != 190 {
		t.Fatalf("200 concurrent guesses against 10: %v", codes)
	}
	// The 10 evaluations were all for the wrong PIN; the lock closed them.
	for _, id := range ids {
		r := e.unlock(tok, recovered{RecoveryID: id, tag: base64.RawURLEncoding.EncodeToString(make([]byte, 32))})
		if r.Status != http.StatusGone || r.Code() != "pin_locked" {
			t.Fatalf("unlock after the lock: %d %s", r.Status, r.Body)
		}
	}
	if st := e.status(tok); st.Registered {
		t.Fatalf("status: %+v", st)
	}
	t.Logf("NV increments for 10 counted guesses: %d", e.rb.Increments()-inc0)
}

// TestPINEvaluationOnlyAfterCounted: the evaluation is computed only once
// the guess is committed (a fresh read sees it) and the TPM counter has
// reached the generation of that commit; when the counter cannot be
// advanced the guess stays counted and no evaluation is sent. A kill -9
// anywhere before the answer therefore leaves the guess counted, and the
// restart accepts the store (store ≥ counter) with the count in it.
func TestPINEvaluationOnlyAfterCounted(t *testing.T) {
	var e *env
	checked := 0
	e = newEnv(t, func(d *Deps) {
		d.afterCount = func(owner enclave.Owner) {
			checked++
			var used int
			if err := e.DB.View(context.Background(), func(tx *store.Tx) error {
				r, err := e.svc.getReg(tx, owner)
				if r != nil {
					used = r.Used
				}
				return err
			}); err != nil {
				t.Error(err)
			}
			st := e.rb.Status()
			if used != checked || st.Counter < st.Generation {
				t.Errorf("before the evaluation: used %d (want %d), counter %d < generation %d", used, checked, st.Counter, st.Generation)
			}
		}
	})
	tok := e.token("erin")
	if r := e.register(tok, "4321", nil); r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	g0 := e.rb.Status().Generation
	for range 2 {
		if _, r := e.recover(tok, "0000", nil); r.Status != http.StatusOK {
			t.Fatalf("recover: %d %s", r.Status, r.Body)
		}
	}
	if checked != 2 {
		t.Fatalf("the hook ran %d times", checked)
	}
	if st := e.rb.Status(); st.Generation != g0+2 || st.Counter != st.Generation {
		t.Fatalf("each guess takes its own generation and is synced: %+v (g0 %d)", st, g0)
	}
	// The counter cannot be advanced (its NV index was removed behind the
	// appliance's back): the guess is counted, nothing is evaluated.
	idx := tpm2.TPMHandle(enclave.DefaultCounterIndex)
	pub, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(e.TPM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.NVUndefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pub.NVName},
	}).Execute(e.TPM); err != nil {
		t.Fatal(err)
	}
	_, r := e.recover(tok, "0000", nil)
	if r.Status != http.StatusServiceUnavailable || r.Code() != "rollback_counter_unavailable" || bytes.Contains(r.Body, []byte("evaluatedElement")) {
		t.Fatalf("recover without the counter: %d %s", r.Status, r.Body)
	}
	if checked != 2 {
		t.Fatal("evaluated without the counter")
	}
	if st := e.status(tok); st.GuessesRemaining != DefaultGuessLimit-3 {
		t.Fatalf("the unanswered guess is counted: %+v", st)
	}
}

// TestPINReplaceAndSingleUse: replacing a registration needs a fresh
// unlock with the old PIN (409 pin_exists otherwise) and keeps the key
// when none is sent; a recovery unlocks once; a guess limit outside 1–255
// and a malformed tag are refused.
func TestPINReplaceAndSingleUse(t *testing.T) {
	e := newEnv(t)
	tok := e.token("frank")
	key := base64.StdEncoding.EncodeToString([]byte("frank's key"))
	if r := e.register(tok, "1111", map[string]any{"key": key}); r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	if r := e.register(tok, "2222", map[string]any{"guessLimit": 255}); r.Status != http.StatusConflict || r.Code() != "pin_exists" {
		t.Fatalf("replace without proof: %d %s", r.Status, r.Body)
	}
	rec, r := e.recover(tok, "1111", nil)
	if r.Status != http.StatusOK {
		t.Fatal(r.Status)
	}
	if r := e.unlock(tok, rec); r.Status != http.StatusOK {
		t.Fatalf("unlock: %d %s", r.Status, r.Body)
	}
	if r := e.unlock(tok, rec); r.Status != http.StatusNotFound || r.Code() != "pin_recovery_not_found" {
		t.Fatalf("second unlock: %d %s", r.Status, r.Body)
	}
	// A wrong tag uses the recovery up too.
	rec2, _ := e.recover(tok, "1111", nil)
	good := rec2.tag
	rec2.tag = base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	if r := e.unlock(tok, rec2); r.Status != http.StatusForbidden {
		t.Fatalf("wrong tag: %d %s", r.Status, r.Body)
	}
	rec2.tag = good
	if r := e.unlock(tok, rec2); r.Status != http.StatusNotFound {
		t.Fatalf("right tag after a wrong one on the same recovery: %d %s", r.Status, r.Body)
	}
	for _, body := range []map[string]any{{"guessLimit": 0}, {"guessLimit": 256}} {
		if r := e.register(tok, "2222", body); r.Status != http.StatusBadRequest || r.Code() != "invalid_guess_limit" {
			t.Fatalf("guessLimit %v: %d %s", body, r.Status, r.Body)
		}
	}
	// Replace with the proof of the earlier unlock; no key: the key stays.
	if r := e.register(tok, "2222", map[string]any{"guessLimit": 255}); r.Status != http.StatusOK || strings.Contains(string(r.Body), "key") {
		t.Fatalf("replace with proof: %d %s", r.Status, r.Body)
	}
	// The proof is used up by the replacement.
	if r := e.register(tok, "3333", nil); r.Status != http.StatusConflict {
		t.Fatalf("second replace on one proof: %d %s", r.Status, r.Body)
	}
	if r := e.try(tok, "2222"); r.Status != http.StatusOK || keyOf(t, r) != key {
		t.Fatalf("new PIN, same key: %d %s", r.Status, r.Body)
	}
	if st := e.status(tok); st.GuessLimit != 255 {
		t.Fatalf("status: %+v", st)
	}
	if r := e.call(http.MethodPost, "/v1/pin/recoveries/"+rec.RecoveryID+"/unlock", tok, map[string]any{"unlockTag": "short"}); r.Status != http.StatusBadRequest || r.Code() != "invalid_unlock_tag" {
		t.Fatalf("short tag: %d %s", r.Status, r.Body)
	}
	if r := e.call(http.MethodDelete, "/v1/pin", tok, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if _, r := e.recover(tok, "2222", nil); r.Status != http.StatusNotFound || r.Code() != "pin_not_registered" {
		t.Fatalf("after delete: %d %s", r.Status, r.Body)
	}
}

// TestPINOtherOwner: another owner (another Firebase user, or a session
// token) cannot unlock, complete or see my registration: my ids are
// simply not found for them, and their attempts spend none of my guesses.
// Without a token nothing is answered.
func TestPINOtherOwner(t *testing.T) {
	e := newEnv(t)
	mine, theirs := e.token("grace"), e.token("mallory")
	stok, _ := e.Sessions.Mint("grace", 600e9) // user:grace is another owner
	if r := e.register(mine, "8642", map[string]any{"guessLimit": 4}); r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	rec, _ := e.recover(mine, "8642", nil)
	for _, tok := range []string{theirs, stok} {
		if r := e.unlock(tok, rec); r.Status != http.StatusNotFound || r.Code() != "pin_recovery_not_found" {
			t.Fatalf("another owner's unlock: %d %s", r.Status, r.Body)
		}
		if st := e.status(tok); st.Registered {
			t.Fatalf("another owner sees a registration: %+v", st)
		}
		if _, r := e.recover(tok, "8642", nil); r.Status != http.StatusNotFound {
			t.Fatalf("another owner's recovery: %d %s", r.Status, r.Body)
		}
	}
	// My pending registration cannot be completed by them.
	c := newClient()
	b := c.blind(t, "1234")
	r := e.call(http.MethodPost, "/v1/pin/registrations", mine, map[string]any{"blindedElement": b.elem})
	var begin struct{ RegistrationID, EvaluatedElement string }
	r.Decode(t, &begin)
	r = e.call(http.MethodPut, "/v1/pin/registrations/"+begin.RegistrationID, theirs, map[string]any{"unlockTag": c.tag(t, b, begin.EvaluatedElement)})
	if r.Status != http.StatusNotFound || r.Code() != "pin_registration_not_found" {
		t.Fatalf("another owner completes my registration: %d %s", r.Status, r.Body)
	}
	if r := e.unlock(mine, rec); r.Status != http.StatusOK {
		t.Fatalf("my own unlock still works: %d %s", r.Status, r.Body)
	}
	if st := e.status(mine); st.GuessesRemaining != 4 {
		t.Fatalf("my guesses: %+v", st)
	}
	for _, p := range []struct{ m, path string }{{http.MethodGet, "/v1/pin"}, {http.MethodPost, "/v1/pin/recoveries"}, {http.MethodDelete, "/v1/pin"}} {
		if r := e.Do(p.m, p.path, map[string]any{"blindedElement": b.elem}); r.Status != http.StatusUnauthorized {
			t.Fatalf("%s %s without a token: %d %s", p.m, p.path, r.Status, r.Body)
		}
	}
	if r := e.call(http.MethodGet, "/v1/pin", "kws1.forged.sig", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("forged session token: %d", r.Status)
	}
}

// TestPINNeverInAuditOrLogs: neither the PIN, nor the unlock tag, nor the
// key appears in the audit log; the requests carry blinded elements only.
func TestPINNeverInAuditOrLogs(t *testing.T) {
	// (The logs are the server's and the service's, at debug level.)
	e := newEnv(t)
	tok := e.token("heidi")
	const pin = "271828"
	key := base64.StdEncoding.EncodeToString([]byte("heidi's secret key material"))
	if r := e.register(tok, pin, map[string]any{"key": key, "guessLimit": 2}); r.Status != http.StatusCreated {
		t.Fatal(r.Status)
	}
	rec, _ := e.recover(tok, pin, nil)
	if r := e.unlock(tok, rec); r.Status != http.StatusOK {
		t.Fatal(r.Status)
	}
	e.try(tok, "000000")
	e.try(tok, "000001") // locks
	lines := e.AuditLines(t)
	logs := e.logs.String()
	for _, s := range []string{pin, key, rec.tag} {
		if strings.Contains(lines, s) {
			t.Fatalf("audit log holds a secret %q", s)
		}
		if strings.Contains(logs, s) {
			t.Fatalf("the logs hold a secret %q", s)
		}
	}
	for _, a := range []string{`"action":"pin_register"`, `"action":"release"`, `"reason":"pin_unlock"`, `"action":"pin_locked"`} {
		if !strings.Contains(lines, a) {
			t.Errorf("audit log lacks %s", a)
		}
	}
	_ = apptest.AdminKey
}

// TestPINRestoredStoreRefused: a copy of the store taken before the
// guesses (a raw copy of the running store, while the registration's own
// increment is still pending) and put back is refused at start: each
// guess took a generation of its own and the counter reached it before
// the answer.
func TestPINRestoredStoreRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.token("ivan")
	if r := e.register(tok, "5555", map[string]any{"guessLimit": 5}); r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	copyPath := filepath.Join(e.Dir, "copy.db")
	f, err := os.Create(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// One guess is enough: it must not share the pending generation the
	// copy carries.
	if r := e.try(tok, "0000"); r.Status != http.StatusForbidden {
		t.Fatalf("wrong guess: %d %s", r.Status, r.Body)
	}
	if st := e.status(tok); st.GuessesRemaining != 4 {
		t.Fatalf("status: %+v", st)
	}
	// A crash right after the last answer (nothing flushed at exit).
	e.HTTP.Close()
	e.DB.Close()
	if err := os.Rename(copyPath, filepath.Join(e.Dir, "k.db")); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(e.Dir, "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	root, err := enclave.Unseal(ctx, e.TPM, db)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := enclave.OpenRollback(ctx, e.TPM, db, root, enclave.RollbackOptions{}); !errors.Is(err, enclave.ErrRolledBack) {
		t.Fatalf("start on the copy from before the guesses: %v, want ErrRolledBack", err)
	}
}

// TestPINAdminDeletesOwner: the admin's deletion of a user removes the
// PIN registration with the key, for a Firebase owner as for a session
// user; the admin's owner description shows the registration (no secret).
func TestPINAdminDeletesOwner(t *testing.T) {
	e := newEnv(t)
	tok := e.token("judy")
	stok, _ := e.Sessions.Mint("judy", 600e9)
	for _, tk := range []string{tok, stok} {
		if r := e.register(tk, "7777", map[string]any{"guessLimit": 7}); r.Status != http.StatusCreated {
			t.Fatalf("register: %d %s", r.Status, r.Body)
		}
	}
	r := e.Admin(http.MethodGet, "/v1/admin/owners/"+url.PathEscape(string(fbOwner("judy"))), nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"pin":{"registered":true,"guessLimit":7,"guessesRemaining":7}`) {
		t.Fatalf("describe owner: %d %s", r.Status, r.Body)
	}
	if r := e.Admin(http.MethodDelete, "/v1/admin/firebase/users/"+url.PathEscape(string(fbOwner("judy"))), nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete Firebase user: %d %s", r.Status, r.Body)
	}
	if r := e.Admin(http.MethodDelete, "/v1/admin/users/judy", nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete user: %d %s", r.Status, r.Body)
	}
	for _, tk := range []string{tok, stok} {
		if st := e.status(tk); st != (Status{}) {
			t.Fatalf("status after the admin's deletion: %+v", st)
		}
		if _, r := e.recover(tk, "7777", nil); r.Status != http.StatusNotFound || r.Code() != "pin_not_registered" {
			t.Fatalf("recover after the admin's deletion: %d %s", r.Status, r.Body)
		}
	}
}
