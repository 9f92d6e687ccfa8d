package custodian

import (
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
)

// The share size of a Portal custodian backup share (a JSON string of a
// few hundred bytes).
var benchShare = make([]byte, 512)

func BenchmarkWrap(b *testing.B) {
	v := vaultdev.Start(b)
	c := newClient(b, v, nil)
	ctx := testCtx(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Wrap(ctx, "user:bench", benchShare); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrap(b *testing.B) {
	v := vaultdev.Start(b)
	c := newClient(b, v, nil)
	ctx := testCtx(b)
	ct, err := c.Wrap(ctx, "user:bench", benchShare)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := c.Unwrap(ctx, "user:bench", ct)
		if err != nil {
			b.Fatal(err)
		}
		s.Wipe()
	}
}

// BenchmarkServiceGet is the admin GET path: a store read and an unwrap.
func BenchmarkServiceGet(b *testing.B) {
	v := vaultdev.Start(b)
	s := newService(b, newClient(b, v, nil), newDB(b), ServiceOptions{})
	ctx := testCtx(b)
	if _, err := s.Put(ctx, "user:bench", "default", benchShare); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		sh, err := s.Get(ctx, "user:bench", "default")
		if err != nil {
			b.Fatal(err)
		}
		sh.Wipe()
	}
}

// BenchmarkUnwrapBatch100 opens 100 shares per iteration in one Transit call.
func BenchmarkUnwrapBatch100(b *testing.B) {
	v := vaultdev.Start(b)
	c := newClient(b, v, nil)
	ctx := testCtx(b)
	items := make([]WrapItem, 100)
	for i := range items {
		items[i] = WrapItem{UserID: "user:bench", Share: benchShare}
	}
	res, err := c.WrapBatch(ctx, items)
	if err != nil {
		b.Fatal(err)
	}
	un := make([]UnwrapItem, len(res))
	for i, r := range res {
		un[i] = UnwrapItem{UserID: "user:bench", Ciphertext: r.Ciphertext}
	}
	b.ReportAllocs()
	for b.Loop() {
		out, err := c.UnwrapBatch(ctx, un)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range out {
			r.Share.Wipe()
		}
	}
}

// BenchmarkTransitDirect calls Transit with the raw API client, for
// comparison with Wrap and Unwrap.
func BenchmarkTransitDirect(b *testing.B) {
	v := vaultdev.Start(b)
	vc := v.Client()
	ctx := testCtx(b)
	path := vaultdev.TransitMount + "/%s/" + vaultdev.KeyName
	pt := base64.StdEncoding.EncodeToString(benchShare)
	cx := base64.StdEncoding.EncodeToString([]byte("user:bench"))
	sec, err := vc.Logical().WriteWithContext(ctx, fmt.Sprintf(path, "encrypt"), map[string]any{"plaintext": pt, "context": cx})
	if err != nil {
		b.Fatal(err)
	}
	ct := sec.Data["ciphertext"].(string)

	b.Run("encrypt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := vc.Logical().WriteWithContext(ctx, fmt.Sprintf(path, "encrypt"), map[string]any{"plaintext": pt, "context": cx}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decrypt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := vc.Logical().WriteWithContext(ctx, fmt.Sprintf(path, "decrypt"), map[string]any{"ciphertext": ct, "context": cx}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same with a batch_input of one, which is what Wrap and Unwrap send.
	b.Run("decrypt-batch1", func(b *testing.B) {
		b.ReportAllocs()
		in := []map[string]any{{"ciphertext": ct, "context": cx}}
		for b.Loop() {
			if _, err := vc.Logical().WriteWithContext(ctx, fmt.Sprintf(path, "decrypt"), map[string]any{"batch_input": in}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same with a policy token instead of the root token (what the
	// custodian benchmarks use).
	v.WritePolicy("custodian", transitPolicy)
	pc := v.Client()
	pc.SetToken(v.NewToken(0, "custodian"))
	b.Run("decrypt-policy-token", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := pc.Logical().WriteWithContext(ctx, fmt.Sprintf(path, "decrypt"), map[string]any{"ciphertext": ct, "context": cx}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
