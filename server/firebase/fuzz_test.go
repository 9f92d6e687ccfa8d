package firebase

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// knownCodes are every code Verify may answer with.
var knownCodes = map[string]bool{}

func init() {
	for _, e := range []*apierr.Error{ErrTokenMissing, ErrTokenMalformed, ErrTokenTooLarge, ErrTokenAlg,
		ErrTokenKidUnknown, ErrTokenSignature, ErrTokenExpired, ErrTokenNotYetValid, ErrTokenIssuedFuture,
		ErrTokenTooOld, ErrWrongAudience, ErrWrongIssuer, ErrWrongTenant, ErrSubjectInvalid, ErrAuthTimeInvalid,
		ErrAuthTooOld, ErrProviderNotAllowed, ErrEmailNotVerified, ErrKeysUnavailable} {
		knownCodes[e.Code] = true
	}
}

// FuzzVerify feeds arbitrary strings to Verify. It must never panic, must
// refuse with a known code and a message that does not echo the token, and
// must accept only tokens the issuer signed: since the encoding is
// canonical and RS256 signatures are deterministic, an accepted token must
// be byte for byte one the issuer minted, and its signature must check out
// independently.
//
// The key is derived from a fixed seed and the clock is frozen, so every
// fuzz worker process holds the same key and the valid seeds stay valid.
func FuzzVerify(f *testing.F) {
	start := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := firebasetest.NewClock(start)
	key := firebasetest.DeterministicKey(f, 1, start.Add(-time.Hour), start.Add(30*24*time.Hour))
	iss := firebasetest.NewIssuer(f, projectA, firebasetest.WithKey(key), firebasetest.WithClock(clock))
	v, err := New(context.Background(), Options{
		ProjectIDs: []string{projectA},
		Tenants:    []string{"", "tenant-a"},
		CertsFile:  iss.WriteCertsFile(), // no network in the loop
		Clock:      clock.Now,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)

	valid := map[string]bool{}
	for _, c := range []firebasetest.Claims{
		nil,
		{"firebase": firebasetest.Firebase("google.com", "tenant-a")},
		{"sub": "a/b", "nbf": start.Unix() - 10},
	} {
		tok := iss.Mint(c)
		valid[tok] = true
		f.Add(tok)
	}
	now := start.Unix()
	for _, tok := range []string{
		"", "a", "..", "a.b.c", "e30.e30.", "e30.e30.e30",
		iss.Sign(firebasetest.Token{Alg: "none"}),
		iss.Sign(firebasetest.Token{Alg: "HS256", Key: []byte(key.CertPEM)}),
		iss.Sign(firebasetest.Token{RawHeader: []byte(`{"alg":"RS256","alg":"none","kid":"` + key.Kid + `"}`)}),
		iss.Sign(firebasetest.Token{RawClaims: []byte(`{"aud":"x","aud":"` + projectA + `"}`)}),
		iss.Mint(firebasetest.Claims{"exp": now - 7200}),
		iss.Mint(firebasetest.Claims{"aud": "other"}),
		iss.Mint(firebasetest.Claims{"firebase": firebasetest.Firebase("password", "tenant-b")}),
		iss.Mint(firebasetest.Claims{"sub": strings.Repeat("x", 129)}),
		iss.Sign(firebasetest.Token{Kid: "unknown"}),
	} {
		f.Add(tok)
	}

	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(context.Background(), tok)
		if err != nil {
			if id != nil {
				t.Fatal("identity returned with an error")
			}
			e, ok := apierr.As(err)
			if !ok || !knownCodes[e.Code] || (e.Status != 401 && e.Status != 503) {
				t.Fatalf("unexpected error %#v", err)
			}
			if len(tok) >= 80 && strings.Contains(e.Message, tok) {
				t.Fatalf("message echoes the token: %s", e.Message)
			}
			return
		}
		if !valid[tok] {
			t.Fatalf("accepted a token the issuer never minted: %q", tok)
		}
		i := strings.LastIndexByte(tok, '.')
		sig, derr := base64.RawURLEncoding.DecodeString(tok[i+1:])
		h := sha256.Sum256([]byte(tok[:i]))
		if derr != nil || rsa.VerifyPKCS1v15(&key.Private.PublicKey, crypto.SHA256, h[:], sig) != nil {
			t.Fatal("accepted a token whose signature does not verify")
		}
		if id == nil || id.ProjectID != projectA || id.Subject == "" {
			t.Fatalf("accepted with identity %+v", id)
		}
	})
}
