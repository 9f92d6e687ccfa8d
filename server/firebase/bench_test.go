package firebase

import (
	"context"
	"encoding/binary"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// BenchmarkVerify is a valid token with the key set cached: the cost a
// Firebase release or store adds to a request.
func BenchmarkVerify(b *testing.B) {
	iss := firebasetest.NewIssuer(b, projectA)
	v := newVerifier(b, iss, nil)
	tok := iss.Mint(nil)
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyParallel is BenchmarkVerify from GOMAXPROCS goroutines.
func BenchmarkVerifyParallel(b *testing.B) {
	iss := firebasetest.NewIssuer(b, projectA)
	v := newVerifier(b, iss, nil)
	tok := iss.Mint(nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRefuseUnknownKid is the cost of a flood of made-up kids once
// the refetch interval has been used: no fetch, no RSA operation.
func BenchmarkRefuseUnknownKid(b *testing.B) {
	iss := firebasetest.NewIssuer(b, projectA)
	v := newVerifier(b, iss, nil)
	tok := iss.Sign(firebasetest.Token{Kid: "made-up"})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkVerifyCold is the production case of a release: a token never
// seen before (a distinct user each time, so the verified-token cache
// misses). The verifier is made anew, outside the timing, whenever the
// pre-minted tokens run out.
func BenchmarkVerifyCold(b *testing.B) {
	iss := firebasetest.NewIssuer(b, projectA)
	toks := make([]string, 2000)
	for i := range toks {
		sub := fmt.Sprintf("cold-%05d", i)
		toks[i] = iss.Mint(firebasetest.Claims{"sub": sub, "user_id": sub})
	}
	ctx := context.Background()
	var v *Verifier
	b.ReportAllocs()
	defer reportCPU(b)()
	for i := 0; i < b.N; i++ {
		if i%len(toks) == 0 {
			b.StopTimer()
			v = newVerifier(b, iss, nil)
			b.StartTimer()
		}
		if _, err := v.Verify(ctx, toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyColdBare is the baseline of BenchmarkVerifyCold: the same
// tokens checked by golang-jwt alone (RS256, aud, iss, exp, iat), as the
// bare server of scripts/bench.sh does.
func BenchmarkVerifyColdBare(b *testing.B) {
	iss := firebasetest.NewIssuer(b, projectA)
	toks := make([]string, 2000)
	for i := range toks {
		sub := fmt.Sprintf("cold-%05d", i)
		toks[i] = iss.Mint(firebasetest.Claims{"sub": sub, "user_id": sub})
	}
	pub := &iss.Key().Private.PublicKey
	p := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(projectA),
		jwt.WithIssuer(issuerPrefix+projectA), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithTimeFunc(iss.Clock().Now))
	keyFunc := func(*jwt.Token) (any, error) { return pub, nil }
	b.ReportAllocs()
	defer reportCPU(b)()
	for i := 0; i < b.N; i++ {
		tok, err := p.Parse(toks[i%len(toks)], keyFunc)
		if err != nil {
			b.Fatal(err)
		}
		if sub, _ := tok.Claims.GetSubject(); sub == "" {
			b.Fatal("no sub")
		}
	}
}

// reportCPU resets the timer and returns a function that reports the
// process's CPU time (user + system, garbage collection included) per
// operation as cpu-ns/op: on a machine shared with other work it moves
// much less than the wall time.
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	start := cpu()
	return func() {
		b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkTokenCacheInsertFull is an insert of a never-seen token into
// a full verified-token cache: what every cold release pays once the
// cache has filled.
func BenchmarkTokenCacheInsertFull(b *testing.B) {
	var c tokenCache
	e := tokenEntry{id: Identity{Expiry: time.Now().Add(time.Hour)}}
	var d [32]byte
	for i := range tokenCacheSize {
		binary.BigEndian.PutUint64(d[:], uint64(i))
		c.store(d, e)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		binary.BigEndian.PutUint64(d[:], uint64(tokenCacheSize+i))
		c.store(d, e)
	}
}
