package etcdstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// BenchmarkMigrate is `keywarden store migrate`'s copy (store.Copy with
// its batches of 100 records, then both summaries) of 20,000 records of
// 300 bytes, bbolt → a one-member embedded etcd and back (docs/BENCHMARKS.md):
//
//	go test -run '^$' -bench Migrate -benchtime 3x ./store/etcdstore/
func BenchmarkMigrate(b *testing.B) {
	const n = 20000
	ctx := context.Background()
	c := etcddev.Embedded(b)
	src, err := store.Open(filepath.Join(b.TempDir(), "src.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	val := make([]byte, 300)
	for i := 0; i < n; i += 1000 {
		if err := src.Update(ctx, func(tx *store.Tx) error {
			for j := i; j < i+1000; j++ {
				if err := tx.Put(store.BucketKeys, store.Key(fmt.Sprintf("firebase:p//uid-%06d", j), "FIREBASE"), val); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	for _, dir := range []string{"bbolt-to-etcd", "etcd-to-bbolt"} {
		b.Run(dir, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				edb, err := store.New(c.Backend(b, etcdstore.Options{}), store.Options{})
				if err != nil {
					b.Fatal(err)
				}
				from, to := src, edb
				if dir == "etcd-to-bbolt" {
					b.StopTimer()
					if _, err := store.Copy(ctx, edb, src, store.CopyOptions{}); err != nil {
						b.Fatal(err)
					}
					from, to = edb, nil
					if to, err = store.Open(filepath.Join(b.TempDir(), "back.db"), store.Options{}); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				if _, err := store.Copy(ctx, to, from, store.CopyOptions{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				edb.Close()
				if dir == "etcd-to-bbolt" {
					to.Close()
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
