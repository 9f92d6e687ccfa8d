package firebase

import (
	"context"
	"testing"

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
