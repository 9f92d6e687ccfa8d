package firebase

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// TestTokenCache: a token verified once is answered from the cache, but
// every time claim and policy is checked again, a changed byte is never a
// hit, and a rotated-away key is refused.
func TestTokenCache(t *testing.T) {
	iss := firebasetest.NewIssuer(t, "proj")
	v := newVerifier(t, iss, func(o *Options) { o.MaxAuthAge = 2 * time.Hour })
	ctx := context.Background()
	tok := iss.Mint(nil)
	for range 3 {
		id, err := v.Verify(ctx, tok)
		if err != nil || id.Subject != firebasetest.DefaultSubject {
			t.Fatalf("verify: %+v %v", id, err)
		}
	}
	if n := v.tokens.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
	if _, ok := v.verifiedBefore(ctx, tok); !ok {
		t.Fatal("a verified token is not a cache hit")
	}
	// A tampered signature with the same claims is refused (not a hit).
	parts := strings.Split(tok, ".")
	sig := []byte(parts[2])
	if sig[10] == 'A' {
		sig[10] = 'B'
	} else {
		sig[10] = 'A'
	}
	if _, err := v.Verify(ctx, parts[0]+"."+parts[1]+"."+string(sig)); !errors.Is(err, ErrTokenSignature) {
		t.Fatalf("tampered signature: %v", err)
	}
	// Time moves past exp: the cached token is refused by the claim checks.
	iss.Clock().Advance(90 * time.Minute)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired cached token: %v", err)
	}
}

func TestTokenCacheRechecksPolicyAndKey(t *testing.T) {
	iss := firebasetest.NewIssuer(t, "proj")
	v := newVerifier(t, iss, func(o *Options) { o.MaxAuthAge = 10 * time.Minute })
	ctx := context.Background()
	tok := iss.Mint(nil)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	// The sign-in ages past MaxAuthAge while the token is still valid.
	iss.Clock().Advance(20 * time.Minute)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrAuthTooOld) {
		t.Fatalf("cached token past MaxAuthAge: %v", err)
	}
	// A cache entry under another key object is not a hit.
	tok2 := iss.Mint(nil)
	if _, err := v.Verify(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	e, _ := v.tokens.get(tok2)
	other := firebasetest.GenerateKey(t, iss.Clock().Now().Add(-time.Hour), iss.Clock().Now().Add(time.Hour))
	e.key = &other.Private.PublicKey
	v.tokens.remember(tok2, e)
	if _, ok := v.verifiedBefore(ctx, tok2); ok {
		t.Fatal("hit under another key object")
	}
}

// TestTokenCacheRotatedAwayKey: once Google stops serving the key that
// signed a cached token, the token is refused like any other.
func TestTokenCacheRotatedAwayKey(t *testing.T) {
	iss := firebasetest.NewIssuer(t, "proj")
	v := newVerifier(t, iss, nil)
	ctx := context.Background()
	tok := iss.Mint(nil)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	iss.Rotate()
	iss.Rotate() // the signing key is no longer published
	iss.Clock().Advance(2 * time.Hour)
	iss.Clock().Advance(-2*time.Hour + time.Minute) // stale set forces a refetch, token still valid
	tok2 := iss.Mint(nil)
	if _, err := v.Verify(ctx, tok2); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrTokenKidUnknown) {
		t.Fatalf("cached token of a retired key: %v", err)
	}
}

// TestTokenCacheEvictsOldest: a full cache makes room for a new token by
// dropping its oldest one, one for one (a cold workload of never-seen
// tokens keeps it full; a mass eviction or a sweep would stall every
// Verify waiting for the lock), and a token added again keeps its place.
func TestTokenCacheEvictsOldest(t *testing.T) {
	var c tokenCache
	e := tokenEntry{id: Identity{Expiry: time.Now().Add(time.Hour)}}
	for i := range tokenCacheSize {
		c.remember(fmt.Sprintf("token-%d", i), e)
	}
	c.remember("token-0", e) // already there: nothing is dropped
	if n := c.len(); n != tokenCacheSize {
		t.Fatalf("full cache holds %d entries, want %d", n, tokenCacheSize)
	}
	for i := range 3 {
		c.remember(fmt.Sprintf("new-%d", i), e)
		if n := c.len(); n != tokenCacheSize {
			t.Fatalf("after an insert into a full cache it holds %d entries, want %d", n, tokenCacheSize)
		}
	}
	for i := range 3 {
		if _, ok := c.get(fmt.Sprintf("token-%d", i)); ok {
			t.Fatalf("token-%d, among the three oldest, is still cached", i)
		}
		if _, ok := c.get(fmt.Sprintf("new-%d", i)); !ok {
			t.Fatalf("new-%d is not cached", i)
		}
	}
	if _, ok := c.get("token-3"); !ok {
		t.Fatal("token-3 was dropped before its turn")
	}
	// Around the ring more than once: the size holds, the newest stay.
	for i := range 2*tokenCacheSize + 5 {
		c.remember(fmt.Sprintf("again-%d", i), e)
	}
	if n := c.len(); n != tokenCacheSize {
		t.Fatalf("after two turns of the ring it holds %d entries", n)
	}
	if _, ok := c.get(fmt.Sprintf("again-%d", 2*tokenCacheSize+4)); !ok {
		t.Fatal("the newest token is not cached")
	}
	if _, ok := c.get(fmt.Sprintf("again-%d", tokenCacheSize+4)); ok {
		t.Fatal("a token older than the cache's size is still cached")
	}
}

// TestVerifyAllocations bounds the allocations of a verification, hot (the
// token cache answers) and cold (a never-seen token): the token is hashed
// once and not copied, and the claims are read without reflection.
func TestVerifyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	iss := firebasetest.NewIssuer(t, "proj")
	v := newVerifier(t, iss, nil)
	ctx := context.Background()
	toks := make([]string, 20)
	for i := range toks {
		sub := fmt.Sprintf("alloc-%d", i)
		toks[i] = iss.Mint(firebasetest.Claims{"sub": sub, "user_id": sub})
	}
	if _, err := v.Verify(ctx, toks[0]); err != nil {
		t.Fatal(err)
	}
	hot := testing.AllocsPerRun(10, func() {
		if _, err := v.Verify(ctx, toks[0]); err != nil {
			t.Fatal(err)
		}
	})
	if hot > 1 {
		t.Errorf("a cached token costs %.0f allocations, want at most 1 (the Identity)", hot)
	}
	next := 1
	cold := testing.AllocsPerRun(len(toks)-2, func() {
		if _, err := v.Verify(ctx, toks[next]); err != nil {
			t.Fatal(err)
		}
		next++
	})
	if cold > maxColdVerifyAllocs {
		t.Errorf("a never-seen token costs %.0f allocations, want at most %d", cold, maxColdVerifyAllocs)
	}
}

// maxColdVerifyAllocs is the bound of TestVerifyAllocations for a
// never-seen token (golang-jwt's RS256 check alone makes about 20).
const maxColdVerifyAllocs = 60
