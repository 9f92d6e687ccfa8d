package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// openEmbedded opens a Store on a fresh embedded one-member etcd, under a
// prefix of its own.
func openEmbedded(t *testing.T) (*etcdstore.Store, *etcddev.Cluster) {
	t.Helper()
	c := etcddev.Embedded(t)
	s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "kw-" + strings.ReplaceAll(t.Name(), "/", "_")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

func put(t *testing.T, s *etcdstore.Store, b store.Bucket, k, v string) {
	t.Helper()
	if err := s.Update(context.Background(), func(tx *etcdstore.Tx) error { return tx.Put(b, []byte(k), []byte(v)) }); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s *etcdstore.Store, b store.Bucket, k string) (string, error) {
	t.Helper()
	var v []byte
	err := s.View(context.Background(), func(tx *etcdstore.Tx) error {
		var err error
		v, err = tx.Get(b, []byte(k))
		return err
	})
	return string(v), err
}

func keys(t *testing.T, s *etcdstore.Store, b store.Bucket, prefix string) []string {
	t.Helper()
	var out []string
	if err := s.View(context.Background(), func(tx *etcdstore.Tx) error {
		return tx.ForEach(b, []byte(prefix), func(k, _ []byte) error { out = append(out, string(k)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEmbedded(t *testing.T) {
	s, _ := openEmbedded(t)
	runBackendTests(t, s)
}

func TestExternalMutualTLS(t *testing.T) {
	srv, files := etcddev.External(t, etcddev.ExternalOptions{TLS: true})
	tc, err := files.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: []string{srv.Endpoint}, TLS: tc, Prefix: "kw-ext"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	runBackendTests(t, s)

	// Without a client certificate the server refuses the connection.
	noCert, err := etcdstore.TLSConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if s2, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: []string{srv.Endpoint}, TLS: noCert, DialTimeout: 2 * time.Second}); err == nil {
		s2.Close()
		t.Fatal("Open without a client certificate succeeded against --client-cert-auth")
	}
}

func runBackendTests(t *testing.T, s *etcdstore.Store) {
	ctx := context.Background()

	t.Run("NotFound", func(t *testing.T) {
		if _, err := get(t, s, store.BucketKeys, "missing"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
		}
	})

	t.Run("ByteOrderAndExactPrefix", func(t *testing.T) {
		for _, k := range []string{"a\x00\xff", "a\x00", "a\xff", "a\xff\xff\x00", "a", "b", "a\x00\x00", "\xff"} {
			put(t, s, store.BucketUsers, k, "v"+k)
		}
		put(t, s, store.BucketUsers+"x", "a", "other bucket") // a bucket whose name extends "users"
		got := keys(t, s, store.BucketUsers, "")
		want := []string{"a", "a\x00", "a\x00\x00", "a\x00\xff", "a\xff", "a\xff\xff\x00", "b", "\xff"}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Fatalf("order: got %q, want %q", got, want)
		}
		if got, want := keys(t, s, store.BucketUsers, "a\x00"), want[1:4]; fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Fatalf("prefix a\\x00: got %q, want %q", got, want)
		}
		if got, want := keys(t, s, store.BucketUsers, "a\xff"), want[4:6]; fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Fatalf("prefix a\\xff: got %q, want %q", got, want)
		}
		if got := keys(t, s, store.BucketUsers, "\xff"); len(got) != 1 {
			t.Fatalf("prefix \\xff: got %q", got)
		}
	})

	t.Run("WritesVisibleInsideTheTransaction", func(t *testing.T) {
		put(t, s, store.BucketJobs, "j1", "old")
		put(t, s, store.BucketJobs, "j3", "x")
		err := s.Update(ctx, func(tx *etcdstore.Tx) error {
			if err := tx.Put(store.BucketJobs, []byte("j2"), []byte("new")); err != nil {
				return err
			}
			if err := tx.Put(store.BucketJobs, []byte("j1"), []byte("changed")); err != nil {
				return err
			}
			if err := tx.Delete(store.BucketJobs, []byte("j3")); err != nil {
				return err
			}
			if v, err := tx.Get(store.BucketJobs, []byte("j1")); err != nil || string(v) != "changed" {
				return fmt.Errorf("own write not seen: %q %v", v, err)
			}
			if _, err := tx.Get(store.BucketJobs, []byte("j3")); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("own delete not seen: %v", err)
			}
			var seen []string
			if err := tx.ForEach(store.BucketJobs, nil, func(k, v []byte) error { seen = append(seen, string(k)+"="+string(v)); return nil }); err != nil {
				return err
			}
			if strings.Join(seen, ",") != "j1=changed,j2=new" {
				return fmt.Errorf("ForEach inside the transaction: %v", seen)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("FailedFunctionWritesNothing", func(t *testing.T) {
		boom := errors.New("boom")
		err := s.Update(ctx, func(tx *etcdstore.Tx) error {
			if err := tx.Put(store.BucketKeys, []byte("never"), []byte("x")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update: %v, want fn's error", err)
		}
		if _, err := get(t, s, store.BucketKeys, "never"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a failed Update wrote: %v", err)
		}
	})

	t.Run("ConflictRunsTheFunctionAgain", func(t *testing.T) {
		put(t, s, store.BucketMeta, "counter", "0")
		runs := 0
		err := s.Update(ctx, func(tx *etcdstore.Tx) error {
			runs++
			v, err := tx.Get(store.BucketMeta, []byte("counter"))
			if err != nil {
				return err
			}
			if runs == 1 {
				// Another writer commits between this read and the commit.
				put(t, s, store.BucketMeta, "counter", string(v)+"+other")
			}
			return tx.Put(store.BucketMeta, []byte("counter"), append(v, "+mine"...))
		})
		if err != nil {
			t.Fatal(err)
		}
		if runs != 2 {
			t.Fatalf("fn ran %d times, want 2", runs)
		}
		if v, _ := get(t, s, store.BucketMeta, "counter"); v != "0+other+mine" {
			t.Fatalf("counter = %q: the other writer's update was lost", v)
		}
	})

	t.Run("ConcurrentIncrements", func(t *testing.T) {
		put(t, s, store.BucketMeta, "n", "")
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 5 {
					if err := s.Update(ctx, func(tx *etcdstore.Tx) error {
						v, err := tx.Get(store.BucketMeta, []byte("n"))
						if err != nil {
							return err
						}
						return tx.Put(store.BucketMeta, []byte("n"), append(v, 'x'))
					}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if v, _ := get(t, s, store.BucketMeta, "n"); len(v) != 40 {
			t.Fatalf("40 increments gave %d", len(v))
		}
	})

	t.Run("RangeReadConflict", func(t *testing.T) {
		// A transaction that scanned a range conflicts with a concurrent
		// deletion inside it (a per-key compare could not see that).
		put(t, s, store.BucketBlocked, "u1", "1")
		put(t, s, store.BucketBlocked, "u2", "1")
		runs := 0
		var counted int
		err := s.Update(ctx, func(tx *etcdstore.Tx) error {
			runs++
			counted = 0
			if err := tx.ForEach(store.BucketBlocked, nil, func(_, _ []byte) error { counted++; return nil }); err != nil {
				return err
			}
			if runs == 1 {
				if err := s.Update(ctx, func(tx *etcdstore.Tx) error { return tx.Delete(store.BucketBlocked, []byte("u2")) }); err != nil {
					return err
				}
			}
			return tx.Put(store.BucketMeta, []byte("blocked_count"), []byte(fmt.Sprint(counted)))
		})
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := get(t, s, store.BucketMeta, "blocked_count"); v != "1" || runs != 2 {
			t.Fatalf("count %q after %d runs, want 1 after 2", v, runs)
		}
	})

	t.Run("DeletePrefix", func(t *testing.T) {
		for _, k := range []string{"o\x00m1", "o\x00m2", "o\x00m2\x00v", "o2\x00m", "p"} {
			put(t, s, store.BucketKeyVersions, k, "v")
		}
		var n int
		if err := s.Update(ctx, func(tx *etcdstore.Tx) error {
			var err error
			n, err = tx.DeletePrefix(store.BucketKeyVersions, []byte("o\x00"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got := keys(t, s, store.BucketKeyVersions, ""); n != 3 || fmt.Sprintf("%q", got) != `["o2\x00m" "p"]` {
			t.Fatalf("DeletePrefix removed %d, left %q", n, got)
		}
	})

	t.Run("DeleteIsSeenAtOnce", func(t *testing.T) {
		put(t, s, store.BucketCredentials, "c", "v")
		if err := s.Update(ctx, func(tx *etcdstore.Tx) error { return tx.Delete(store.BucketCredentials, []byte("c")) }); err != nil {
			t.Fatal(err)
		}
		if _, err := get(t, s, store.BucketCredentials, "c"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("read after an acknowledged delete: %v", err)
		}
	})

	t.Run("LargeValues", func(t *testing.T) {
		big := bytes.Repeat([]byte{0xA5}, 1<<20)
		if err := s.Update(ctx, func(tx *etcdstore.Tx) error { return tx.Put(store.BucketClientShares, []byte("big"), big) }); err != nil {
			t.Fatalf("1 MiB value: %v", err)
		}
		if v, err := get(t, s, store.BucketClientShares, "big"); err != nil || v != string(big) {
			t.Fatalf("1 MiB value read back: %d bytes, %v", len(v), err)
		}
		huge := bytes.Repeat([]byte{1}, 2<<20)
		err := s.Update(ctx, func(tx *etcdstore.Tx) error { return tx.Put(store.BucketClientShares, []byte("huge"), huge) })
		if !errors.Is(err, etcdstore.ErrTooLarge) {
			t.Fatalf("2 MiB value: %v, want ErrTooLarge", err)
		}
	})

	t.Run("InvalidNames", func(t *testing.T) {
		for _, b := range []store.Bucket{"", "a/b", "_txn"} {
			if err := s.Update(ctx, func(tx *etcdstore.Tx) error { return tx.Put(b, []byte("k"), []byte("v")) }); err == nil {
				t.Errorf("Put into bucket %q succeeded", b)
			}
		}
		if err := s.Update(ctx, func(tx *etcdstore.Tx) error { return tx.Put(store.BucketKeys, nil, []byte("v")) }); err == nil {
			t.Error("Put with an empty key succeeded")
		}
		if err := s.View(ctx, func(tx *etcdstore.Tx) error { return tx.Put(store.BucketKeys, []byte("k"), []byte("v")) }); err == nil {
			t.Error("Put inside View succeeded")
		}
	})

	t.Run("Dump", func(t *testing.T) {
		var buf bytes.Buffer
		if _, err := s.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		var got []string
		info, err := etcdstore.ReadDump(bytes.NewReader(buf.Bytes()), func(b store.Bucket, k, v []byte) error {
			if b == store.BucketUsers {
				got = append(got, string(k))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := keys(t, s, store.BucketUsers, ""); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) || info.Revision == 0 {
			t.Fatalf("dump users %q at rev %d, store has %q", got, info.Revision, want)
		}
		// Every flipped byte and every truncation is refused.
		raw := buf.Bytes()
		for _, i := range []int{0, 9, len(raw) / 2, len(raw) - 40, len(raw) - 1} {
			bad := bytes.Clone(raw)
			bad[i] ^= 1
			if _, err := etcdstore.ReadDump(bytes.NewReader(bad), func(store.Bucket, []byte, []byte) error { return nil }); err == nil {
				t.Errorf("a dump with byte %d flipped was accepted", i)
			}
		}
		if _, err := etcdstore.ReadDump(bytes.NewReader(raw[:len(raw)-1]), func(store.Bucket, []byte, []byte) error { return nil }); err == nil {
			t.Error("a truncated dump was accepted")
		}
	})
}

// TestQuorumLoss: with two of three members stopped, a write fails when
// its context ends (it neither hangs nor succeeds) and a read fails rather
// than answer from the surviving member's possibly stale state.
func TestQuorumLoss(t *testing.T) {
	c := etcddev.EmbeddedCluster(t, 3)
	s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: []string{c.Endpoint(0)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put(t, s, store.BucketBlocked, "u", "blocked")
	c.Stop(1)
	c.Stop(2)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = s.Update(ctx, func(tx *etcdstore.Tx) error { return tx.Delete(store.BucketBlocked, []byte("u")) })
	if err == nil {
		t.Fatal("Update succeeded without a quorum")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	err = s.View(ctx2, func(tx *etcdstore.Tx) error {
		_, err := tx.Get(store.BucketBlocked, []byte("u"))
		return err
	})
	if err == nil {
		t.Fatal("View answered without a quorum")
	}
	t.Logf("without quorum: update and view fail with %v", err)
}
