package server

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// BenchmarkBlockListHas is the block-list check of every Firebase and
// Portal TBS request: a map lookup on one node (bbolt), a linearizable
// etcd read on a cluster (one leader round trip; here a one-member etcd
// embedded in the process).
func BenchmarkBlockListHas(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, db *store.DB) {
		if err := db.Update(ctx, func(tx *store.Tx) error {
			return tx.Put(store.BucketBlocked, []byte("firebase:p//blocked"), []byte("2026-03-01T12:00:00Z"))
		}); err != nil {
			b.Fatal(err)
		}
		bl, err := LoadBlockList(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if blocked, err := bl.Has(ctx, "firebase:p//someone"); err != nil || blocked {
				b.Fatal(blocked, err)
			}
		}
	}
	b.Run("bbolt-memory", func(b *testing.B) {
		db, err := store.Open(filepath.Join(b.TempDir(), "k.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		run(b, db)
	})
	b.Run("etcd-linearizable", func(b *testing.B) {
		c := etcddev.Embedded(b)
		db, err := store.New(c.Backend(b, etcdstore.Options{}), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		run(b, db)
	})
}
