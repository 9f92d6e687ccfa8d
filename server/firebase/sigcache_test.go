package firebase

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// TestSignatureCacheSkipsOnlyRSA: a token verified once is verified again
// from the cache, but every claim is still checked on every call, and a
// changed signature or a rotated key is never a hit.
func TestSignatureCacheSkipsOnlyRSA(t *testing.T) {
	iss := firebasetest.NewIssuer(t, "proj")
	v := newVerifier(t, iss, nil)
	ctx := context.Background()
	tok := iss.Mint(nil)
	for range 3 {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.sigs.m); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
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
	iss.Clock().Advance(2 * time.Hour)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired cached token: %v", err)
	}
}

func TestSignatureCacheRespectsKeyObject(t *testing.T) {
	iss := firebasetest.NewIssuer(t, "proj")
	v := newVerifier(t, iss, nil)
	tok := iss.Mint(nil)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	tp, _ := parseToken(tok)
	key, _ := v.key(context.Background(), tp.kid)
	if !v.sigs.verified(tp.signingInput, tp.signature, key, iss.Clock().Now()) {
		t.Fatal("not cached under the current key")
	}
	other := firebasetest.GenerateKey(t, iss.Clock().Now().Add(-time.Hour), iss.Clock().Now().Add(time.Hour))
	if v.sigs.verified(tp.signingInput, tp.signature, &other.Private.PublicKey, iss.Clock().Now()) {
		t.Fatal("hit under another key")
	}

}
