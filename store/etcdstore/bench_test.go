package etcdstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// Benchmarks of the store's façade on bbolt and on a one-member embedded
// etcd on the same machine (docs/BENCHMARKS.md):
//
//	go test -run '^$' -bench . -benchtime 2s ./store/etcdstore/
func benchBackends(b *testing.B, fn func(b *testing.B, db *store.DB)) {
	b.Run("bbolt", func(b *testing.B) {
		db, err := store.Open(filepath.Join(b.TempDir(), "k.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		fn(b, db)
	})
	b.Run("etcd-embedded-1", func(b *testing.B) {
		c := etcddev.Embedded(b)
		be, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.Endpoints()})
		if err != nil {
			b.Fatal(err)
		}
		db, err := store.New(be, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		fn(b, db)
	})
}

var value = make([]byte, 160) // about a sealed key record

// BenchmarkUpdate: one writer, one Put per Update (each a commit: an
// fsync on bbolt, a Raft commit and WAL fsync on etcd).
func BenchmarkUpdate(b *testing.B) {
	benchBackends(b, func(b *testing.B, db *store.DB) {
		for i := 0; b.Loop(); i++ {
			if err := db.Update(context.Background(), func(tx *store.Tx) error {
				return tx.Put(store.BucketKeys, store.Key("owner", fmt.Sprint(i)), value)
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUpdateParallel: 64 concurrent writers; the façade's group
// commit puts what arrives during a commit into the next one.
func BenchmarkUpdateParallel(b *testing.B) {
	benchBackends(b, func(b *testing.B, db *store.DB) {
		var n atomic.Int64
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				if err := db.Update(context.Background(), func(tx *store.Tx) error {
					return tx.Put(store.BucketKeys, store.Key("p", fmt.Sprint(i)), value)
				}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkView: one Get per View (a release's read). On etcd the first
// read of a View is linearizable (a ReadIndex round trip to the leader).
func BenchmarkView(b *testing.B) {
	benchBackends(b, func(b *testing.B, db *store.DB) {
		if err := db.Update(context.Background(), func(tx *store.Tx) error {
			return tx.Put(store.BucketKeys, store.Key("owner", "x"), value)
		}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := db.View(context.Background(), func(tx *store.Tx) error {
				_, err := tx.Get(store.BucketKeys, store.Key("owner", "x"))
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkViewParallel: concurrent readers.
func BenchmarkViewParallel(b *testing.B) {
	benchBackends(b, func(b *testing.B, db *store.DB) {
		if err := db.Update(context.Background(), func(tx *store.Tx) error {
			return tx.Put(store.BucketKeys, store.Key("owner", "x"), value)
		}); err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := db.View(context.Background(), func(tx *store.Tx) error {
					_, err := tx.Get(store.BucketKeys, store.Key("owner", "x"))
					return err
				}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkEphemeralPutTake is one ceremony's life on a cluster: a
// put-if-absent (a transaction) and a take (a delete returning the value),
// each an etcd write committed by the quorum (one member here).
func BenchmarkEphemeralPutTake(b *testing.B) {
	c := etcddev.Embedded(b)
	s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.Endpoints(), Prefix: fmt.Sprintf("kw-bench-%d", prefixes.Add(1))})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	e := s.Ephemeral()
	ctx := context.Background()
	val := make([]byte, 400)
	i := 0
	for b.Loop() {
		i++
		k := fmt.Sprint(i)
		now := time.Now()
		if ok, err := e.PutIfAbsent(ctx, k, val, now, 5*time.Minute); err != nil || !ok {
			b.Fatal(ok, err)
		}
		if _, err := e.Take(ctx, k, now); err != nil {
			b.Fatal(err)
		}
	}
}
