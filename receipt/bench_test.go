package receipt

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkReceipt is the receipt work of one release: its statement's
// leaf, a share of a 20-statement batch (Merkle levels, one signature) and
// the header value.
func BenchmarkReceipt(b *testing.B) {
	k := newSigner(b)
	bk, _ := NewBatchKey("", time.Now(), k)
	stmts := make([]Statement, 20)
	for i := range stmts {
		h, salt := NewOwnerHash("firebase:proj-a//user")
		stmts[i] = Statement{Seq: uint64(i + 1), Line: fmt.Sprintf("%064x", i), Time: time.Now().UTC().Format(time.RFC3339Nano), Action: "release",
			Outcome: "success", OwnerHash: h, Salt: salt, Method: "FIREBASE", KeyVersion: "1", RequestID: "0123456789abcdef0123456789abcdef"}
	}
	b.Run("batch-of-20", func(b *testing.B) {
		for range b.N {
			var bl Builder
			for _, s := range stmts {
				bl.Add(s)
			}
			sb := bl.Sign(bk, 1, 20, time.Now())
			for i := range stmts {
				_ = sb.Encode(i)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		var bl Builder
		for _, s := range stmts {
			bl.Add(s)
		}
		sb := bl.Sign(bk, 1, 20, time.Now())
		b.ResetTimer()
		for i := range b.N {
			_ = sb.Encode(i % 20)
		}
	})
}
