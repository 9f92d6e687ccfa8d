package firebase

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// waitBackground waits for background fetches (tests call it only when no
// Verify is running).
func (v *Verifier) waitBackground() { v.wg.Wait() }

func mustVerify(t *testing.T, v *Verifier, tok string) *Identity {
	t.Helper()
	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	return id
}

func wantFetches(t *testing.T, iss *firebasetest.Issuer, n int) {
	t.Helper()
	if got := iss.Fetches(); got != n {
		t.Fatalf("endpoint fetched %d times, want %d", got, n)
	}
}

func TestCacheHonoursMaxAge(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	iss.SetMaxAge(10 * time.Minute)
	clock := iss.Clock()
	v := newVerifier(t, iss, nil)
	wantFetches(t, iss, 1)

	for range 5 {
		mustVerify(t, v, iss.Mint(nil))
	}
	clock.Advance(9 * time.Minute)
	mustVerify(t, v, iss.Mint(nil))
	v.waitBackground()
	wantFetches(t, iss, 1)
	if st := v.KeySetStatus(); st.Stale || st.Degraded || !st.Usable || st.Keys != 2 || st.AgeSeconds != 540 {
		t.Errorf("fresh status %+v", st)
	}

	clock.Advance(2 * time.Minute) // past max-age
	if st := v.KeySetStatus(); !st.Stale || !st.Degraded || !st.Usable {
		t.Errorf("stale status %+v", st)
	}
	mustVerify(t, v, iss.Mint(nil)) // served from the stale set, refresh in the background
	v.waitBackground()
	wantFetches(t, iss, 2)
	if st := v.KeySetStatus(); st.Stale || st.Degraded || st.AgeSeconds != 0 || !st.ExpiresAt.Equal(clock.Now().Add(10*time.Minute)) {
		t.Errorf("refreshed status %+v", st)
	}

	// A max-age of 0 (or no-store) means "refetch as often as allowed".
	iss.SetMaxAge(0)
	clock.Advance(11 * time.Minute)
	mustVerify(t, v, iss.Mint(nil))
	v.waitBackground()
	wantFetches(t, iss, 3)
	mustVerify(t, v, iss.Mint(nil))
	v.waitBackground()
	wantFetches(t, iss, 3) // within RefetchInterval
	clock.Advance(DefaultRefetchInterval)
	mustVerify(t, v, iss.Mint(nil))
	v.waitBackground()
	wantFetches(t, iss, 4)
}

func TestCachePicksUpRotation(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	clock := iss.Clock()
	v := newVerifier(t, iss, nil)
	first := iss.Key()
	oldTok := iss.Mint(nil)
	clock.Advance(DefaultRefetchInterval) // the fetch at New counts

	iss.Rotate() // new signing key, published with the old one
	mustVerify(t, v, iss.Mint(nil))
	wantFetches(t, iss, 2) // the unknown kid caused one fetch at once
	mustVerify(t, v, oldTok)
	mustVerify(t, v, iss.MintWith(first, nil))
	if s := v.Stats(); s.Fetches != 2 || s.UnknownKidRefetches != 1 {
		t.Errorf("stats %+v", s)
	}

	// Rotate again: the first key is no longer published. Within the
	// refetch interval the new kid is refused, after it accepted, and the
	// first key is gone.
	iss.Rotate()
	newTok := iss.Mint(nil)
	id, err := v.Verify(context.Background(), newTok)
	wantRefusal(t, id, err, newTok, http.StatusUnauthorized, "token_kid_unknown")
	wantFetches(t, iss, 2)
	clock.Advance(DefaultRefetchInterval)
	mustVerify(t, v, iss.Mint(nil))
	wantFetches(t, iss, 3)
	clock.Advance(DefaultRefetchInterval)
	rotatedAway := iss.MintWith(first, nil)
	id, err = v.Verify(context.Background(), rotatedAway)
	wantRefusal(t, id, err, rotatedAway, http.StatusUnauthorized, "token_kid_unknown")
	wantFetches(t, iss, 4) // it did look once more for the rotated-away kid
}

func TestUnknownKidFloodCausesOneFetchPerInterval(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	clock := iss.Clock()
	v := newVerifier(t, iss, nil)
	wantFetches(t, iss, 1)
	sig := make([]byte, 256) // the kid is judged before the signature

	flood := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for n := range 200 {
			wg.Go(func() {
				tok := iss.Sign(firebasetest.Token{Kid: fmt.Sprintf("bad-kid-%d", n), Signature: sig})
				id, err := v.Verify(context.Background(), tok)
				if id != nil || !errors.Is(err, ErrTokenKidUnknown) {
					errs <- fmt.Errorf("kid %d: %v %v", n, id, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	flood() // right after New: no fetch at all
	wantFetches(t, iss, 1)
	clock.Advance(DefaultRefetchInterval)
	flood()
	wantFetches(t, iss, 2)
	flood()
	wantFetches(t, iss, 2)
	clock.Advance(DefaultRefetchInterval - time.Second)
	flood()
	wantFetches(t, iss, 2)
	clock.Advance(time.Second)
	flood()
	wantFetches(t, iss, 3)
	if s := v.Stats(); s.UnknownKidRefetches != 1000 || s.RefetchesSuppressed == 0 || s.Fetches != 3 {
		t.Errorf("stats %+v", s)
	}
	mustVerify(t, v, iss.Mint(nil)) // the real key still works
}

func TestEndpointDownUsesCachedSetUntilMaxStale(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	clock := iss.Clock()
	v := newVerifier(t, iss, nil) // max-age 1h, MaxStale 24h
	mustVerify(t, v, iss.Mint(nil))

	iss.SetDown(true)
	clock.Advance(time.Hour + time.Minute)
	mustVerify(t, v, iss.Mint(nil)) // stale set; the background fetch fails
	v.waitBackground()
	wantFetches(t, iss, 2)
	st := v.KeySetStatus()
	if !st.Usable || !st.Degraded || !st.Stale || !strings.Contains(st.LastError, "503") {
		t.Errorf("status during outage %+v", st)
	}
	// Unknown kids are still refused while stale.
	clock.Advance(DefaultRefetchInterval)
	tok := iss.Sign(firebasetest.Token{Kid: "not-there"})
	id, err := v.Verify(context.Background(), tok)
	wantRefusal(t, id, err, tok, http.StatusUnauthorized, "token_kid_unknown")

	clock.Set(st.UsableUntil) // the last moment
	mustVerify(t, v, iss.Mint(nil))
	v.waitBackground()

	clock.Advance(time.Second) // past MaxStale
	tok = iss.Mint(nil)
	id, err = v.Verify(context.Background(), tok)
	wantRefusal(t, id, err, tok, http.StatusServiceUnavailable, "firebase_keys_unavailable")
	if e, _ := apierr.As(err); e.RetryAfter <= 0 || e.RetryAfter > DefaultRefetchInterval {
		t.Errorf("RetryAfter = %v", e.RetryAfter)
	}
	if st := v.KeySetStatus(); st.Usable || !st.Degraded {
		t.Errorf("status past MaxStale %+v", st)
	}
	// Within the interval no fetch is attempted.
	fetches := iss.Fetches()
	_, err = v.Verify(context.Background(), iss.Mint(nil))
	if !errors.Is(err, ErrKeysUnavailable) || iss.Fetches() != fetches {
		t.Errorf("second refusal %v made %d fetches", err, iss.Fetches()-fetches)
	}

	iss.SetDown(false)
	clock.Advance(DefaultRefetchInterval)
	mustVerify(t, v, iss.Mint(nil))
	if st := v.KeySetStatus(); !st.Usable || st.Degraded || st.LastError != "" {
		t.Errorf("status after recovery %+v", st)
	}
}

func TestStartsWithEndpointDown(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	iss.SetDown(true)
	v := newVerifier(t, iss, nil)
	st := v.KeySetStatus()
	if st.Usable || !st.Degraded || st.LastError == "" || st.Keys != 0 {
		t.Errorf("status %+v", st)
	}
	tok := iss.Mint(nil)
	id, err := v.Verify(context.Background(), tok)
	wantRefusal(t, id, err, tok, http.StatusServiceUnavailable, "firebase_keys_unavailable")
	wantFetches(t, iss, 1)
	if e, _ := apierr.As(err); e.Cause == nil || e.RetryAfter != DefaultRefetchInterval {
		t.Errorf("503 without cause or with RetryAfter %v", e.RetryAfter)
	}
	// Hostile tokens are still judged without keys.
	_, err = v.Verify(context.Background(), iss.Mint(firebasetest.Claims{"aud": "x"}))
	if !errors.Is(err, ErrWrongAudience) {
		t.Errorf("got %v, want wrong_audience", err)
	}
	iss.SetDown(false)
	iss.Clock().Advance(DefaultRefetchInterval)
	mustVerify(t, v, iss.Mint(nil))
	wantFetches(t, iss, 2)
}

func TestBrokenAnswersKeepLastGoodSet(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	clock := iss.Clock()
	v := newVerifier(t, iss, nil)
	ecCert := ecCertPEM(t, clock.Now())
	bodies := map[string][]byte{
		"not JSON":           []byte("<html>maintenance</html>"),
		"empty object":       []byte("{}"),
		"not PEM":            []byte(`{"k":"MIIB"}`),
		"value not a string": []byte(`{"k":1}`),
		"duplicate kid":      []byte(`{"k":"a","k":"b"}`),
		"EC certificate":     mustMarshal(t, map[string]string{"k": ecCert}),
		"huge":               append(append([]byte(`{"k":"`), make([]byte, 2<<20)...), `"}`...),
	}
	for name, body := range bodies {
		iss.SetResponse(http.StatusOK, body)
		clock.Advance(DefaultRefetchInterval)
		before := iss.Fetches()
		tok := iss.Sign(firebasetest.Token{Kid: "fresh-" + strings.ReplaceAll(name, " ", "-")})
		_, err := v.Verify(context.Background(), tok)
		if !errors.Is(err, ErrTokenKidUnknown) || iss.Fetches() != before+1 {
			t.Errorf("%s: %v after %d fetches", name, err, iss.Fetches()-before)
		}
		if st := v.KeySetStatus(); st.LastError == "" || !st.Usable || st.Keys != 2 {
			t.Errorf("%s: status %+v", name, st)
		}
		mustVerify(t, v, iss.Mint(nil))
	}
	iss.SetResponse(http.StatusInternalServerError, []byte("oops"))
	clock.Advance(DefaultRefetchInterval)
	_, err := v.Verify(context.Background(), iss.Sign(firebasetest.Token{Kid: "x"}))
	if !errors.Is(err, ErrTokenKidUnknown) || !strings.Contains(v.KeySetStatus().LastError, "500") {
		t.Errorf("500: %v, %q", err, v.KeySetStatus().LastError)
	}
}

func TestCertificateValidityWindow(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	clock := iss.Clock()
	now := clock.Now()
	// Expired an hour ago: within the grace, used.
	recent := firebasetest.GenerateKey(t, now.Add(-30*24*time.Hour), now.Add(-time.Hour))
	// Expired two days ago: skipped.
	old := firebasetest.GenerateKey(t, now.Add(-30*24*time.Hour), now.Add(-48*time.Hour))
	// Valid from next week: skipped.
	future := firebasetest.GenerateKey(t, now.Add(7*24*time.Hour), now.Add(30*24*time.Hour))
	for _, k := range []firebasetest.Key{recent, old, future} {
		iss.Publish(k)
	}
	v := newVerifier(t, iss, nil)
	if st := v.KeySetStatus(); st.Keys != 3 {
		t.Errorf("kept %d keys, want 3 (2 current + 1 within grace)", st.Keys)
	}
	mustVerify(t, v, iss.MintWith(recent, nil))
	for _, k := range []firebasetest.Key{old, future} {
		tok := iss.MintWith(k, nil)
		id, err := v.Verify(context.Background(), tok)
		wantRefusal(t, id, err, tok, http.StatusUnauthorized, "token_kid_unknown")
	}
	// A day and a bit later the recent one is out of its window too, even
	// though the set itself is still usable.
	clock.Advance(23*time.Hour + time.Second)
	iss.SetDown(true)
	tok := iss.MintWith(recent, nil)
	id, err := v.Verify(context.Background(), tok)
	wantRefusal(t, id, err, tok, http.StatusUnauthorized, "token_kid_unknown")
	mustVerify(t, v, iss.Mint(nil))
}

func TestCertsFileMode(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	clock := iss.Clock()
	path := iss.WriteCertsFile()
	newFileVerifier := func(p string) (*Verifier, error) {
		v, err := New(context.Background(), Options{ProjectIDs: []string{projectA}, CertsFile: p, Clock: clock.Now})
		if err == nil {
			t.Cleanup(v.Close)
		}
		return v, err
	}
	v, err := newFileVerifier(path)
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, v, iss.Mint(nil))
	wantFetches(t, iss, 0) // never went to the network
	st := v.KeySetStatus()
	if !st.Usable || st.Degraded || !st.ExpiresAt.IsZero() || st.Source != "file:"+path {
		t.Errorf("status %+v", st)
	}
	// No expiry by age.
	clock.Advance(72 * time.Hour)
	mustVerify(t, v, iss.Mint(nil))

	// Rotation: the operator drops in a new file; an unknown kid rereads it.
	iss.Rotate()
	if err := os.WriteFile(path, iss.CertsJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, v, iss.Mint(nil))
	if s := v.Stats(); s.Fetches != 2 {
		t.Errorf("stats %+v", s)
	}
	// A broken file keeps the last good set.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultRefetchInterval)
	_, err = v.Verify(context.Background(), iss.Sign(firebasetest.Token{Kid: "unknown"}))
	if !errors.Is(err, ErrTokenKidUnknown) {
		t.Errorf("got %v", err)
	}
	mustVerify(t, v, iss.Mint(nil))
	if st := v.KeySetStatus(); st.LastError == "" || st.Degraded {
		t.Errorf("status %+v", st)
	}

	// At New, a missing or broken file is an error.
	if _, err := newFileVerifier(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := newFileVerifier(path); err == nil {
		t.Error("garbage file accepted")
	}
}

func TestCloseStopsFetching(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	v := newVerifier(t, iss, nil)
	v.Close()
	mustVerify(t, v, iss.Mint(nil))
	iss.Rotate()
	iss.Clock().Advance(DefaultRefetchInterval)
	_, err := v.Verify(context.Background(), iss.Mint(nil))
	if !errors.Is(err, ErrTokenKidUnknown) {
		t.Errorf("got %v", err)
	}
	wantFetches(t, iss, 1)
	v.Close() // twice is fine
}

func TestCacheMaxAge(t *testing.T) {
	cases := []struct {
		cc, age string
		want    time.Duration
	}{
		{"public, max-age=22136, must-revalidate, no-transform", "", 22136 * time.Second},
		{"max-age=600", "100", 500 * time.Second},
		{"max-age=600", "900", 0},
		{"MAX-AGE=60", "", time.Minute},
		{`max-age="60"`, "", time.Minute},
		{"max-age=9999999", "", MaxCertsMaxAge},
		{"max-age=-1", "", 0},
		{"max-age=abc", "", 0},
		{"no-store", "", 0},
		{"max-age=600, no-cache", "", 0},
		{"max-age=60, max-age=600", "", time.Minute},
		{"", "", DefaultCertsMaxAge},
		{"public", "", DefaultCertsMaxAge},
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.cc != "" {
			h.Set("Cache-Control", tc.cc)
		}
		if tc.age != "" {
			h.Set("Age", tc.age)
		}
		if got := cacheMaxAge(h); got != tc.want {
			t.Errorf("Cache-Control %q Age %q: %v, want %v", tc.cc, tc.age, got, tc.want)
		}
	}
}

func ecCertPEM(t *testing.T, now time.Time) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ec"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
