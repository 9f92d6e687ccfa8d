package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// rpcCounter counts the etcd requests made with a context it marked:
// linearizable reads (ranges without Serializable, and transactions: etcd
// serves every Txn through the leader), serializable reads, and others.
type rpcCounter struct {
	linear, serial, other atomic.Int64
}

type countedKey struct{}

func (c *rpcCounter) mark(ctx context.Context) context.Context {
	return context.WithValue(ctx, countedKey{}, true)
}

func (c *rpcCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if ctx.Value(countedKey{}) != nil {
		switch r := req.(type) {
		case *pb.RangeRequest:
			if r.Serializable {
				c.serial.Add(1)
			} else {
				c.linear.Add(1)
			}
		case *pb.TxnRequest:
			c.linear.Add(1)
		default:
			c.other.Add(1)
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *rpcCounter) take() string {
	return fmt.Sprintf("%d linearizable, %d serializable, %d other", c.linear.Swap(0), c.serial.Swap(0), c.other.Swap(0))
}

// TestViewRoundTrips: a View of one key is one etcd request, itself the
// linearizable read that fixes the View's revision (no separate fence
// read); the Views of one read session (a release: the block list, then
// the key record) make one linearizable read between them, the later ones
// read at its revision on the member the client talks to; a record deleted
// before the session began is not seen, and the session's own Update ends
// its revision (the next View reads linearizably and sees the write).
func TestViewRoundTrips(t *testing.T) {
	c := etcddev.EmbeddedCluster(t, 3)
	var cnt rpcCounter
	opts := etcdstore.Options{DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(cnt.intercept)}}
	db, err := store.New(c.Backend(t, opts), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bg := context.Background()
	for _, k := range []string{"a", "b", "c"} {
		if err := db.Update(bg, func(tx *store.Tx) error { return tx.Put(store.BucketBlocked, []byte(k), []byte("v-"+k)) }); err != nil {
			t.Fatal(err)
		}
	}
	get := func(ctx context.Context, k string) (string, error) {
		var v []byte
		err := db.View(ctx, func(tx *store.Tx) (err error) {
			v, err = tx.Get(store.BucketBlocked, []byte(k))
			return err
		})
		return string(v), err
	}
	ctx := cnt.mark(bg)
	if v, err := get(ctx, "a"); err != nil || v != "v-a" {
		t.Fatalf("View: %q %v", v, err)
	}
	if got := cnt.take(); got != "1 linearizable, 0 serializable, 0 other" {
		t.Fatalf("a View of one key made %s etcd requests; want one linearizable read", got)
	}

	// Deleted before the session began: every View of the session sees it.
	if err := db.Update(bg, func(tx *store.Tx) error { return tx.Delete(store.BucketBlocked, []byte("c")) }); err != nil {
		t.Fatal(err)
	}
	sctx := store.WithReadSession(ctx)
	if v, err := get(sctx, "a"); err != nil || v != "v-a" {
		t.Fatalf("session's first View: %q %v", v, err)
	}
	if v, err := get(sctx, "b"); err != nil || v != "v-b" {
		t.Fatalf("session's second View: %q %v", v, err)
	}
	if v, err := get(sctx, "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a record deleted before the session began, read in it: %q %v", v, err)
	}
	if got := cnt.take(); got != "1 linearizable, 2 serializable, 0 other" {
		t.Fatalf("three Views of one read session made %s etcd requests; want one linearizable read, then serializable reads at its revision", got)
	}

	// The session's own write ends its revision: the next View sees it.
	if err := db.Update(sctx, func(tx *store.Tx) error { return tx.Delete(store.BucketBlocked, []byte("a")) }); err != nil {
		t.Fatal(err)
	}
	cnt.take()
	if v, err := get(sctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the session's View after its own delete: %q %v", v, err)
	}
	if got := cnt.take(); got != "1 linearizable, 0 serializable, 0 other" {
		t.Fatalf("the session's View after its Update made %s etcd requests; want a new linearizable read", got)
	}
}

// TestUpdateReadCache: an Update's first attempt reads a key this node
// read or wrote before from its read cache, so an overwrite is one etcd
// request (the guarded commit); a cached value another node changed since
// (here with the watch stopped, so the cache cannot hear of it) fails the
// guard at the leader, and fn runs again on what the other node wrote: no
// update is lost.
func TestUpdateReadCache(t *testing.T) {
	c := etcddev.EmbeddedCluster(t, 3)
	var cnt rpcCounter
	prefix := fmt.Sprintf("kw-cache-%d", prefixes.Add(1))
	open := func(i int, opts ...grpc.DialOption) *etcdstore.Store {
		s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: []string{c.Endpoint(i)}, Prefix: prefix, DialOptions: opts})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a := open(0, grpc.WithChainUnaryInterceptor(cnt.intercept))
	b := open(1)
	bg := context.Background()
	if err := a.Update(bg, func(tx store.BackendTx) error { return tx.CreateBucket(store.BucketKeys) }); err != nil {
		t.Fatal(err)
	}
	k := []byte("k")
	appendTo := func(s *etcdstore.Store, ctx context.Context, suffix string) {
		t.Helper()
		if err := s.Update(ctx, func(tx store.BackendTx) error {
			v, err := tx.Get(store.BucketKeys, k)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return tx.Put(store.BucketKeys, k, append(v, suffix...))
		}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := cnt.mark(bg)
	appendTo(a, ctx, "1")
	cnt.take()
	appendTo(a, ctx, "2")
	if got := cnt.take(); got != "1 linearizable, 0 serializable, 0 other" {
		t.Fatalf("an overwrite of a key this node wrote made %s etcd requests; want the commit alone", got)
	}

	etcdstore.StopWatch(a)
	appendTo(a, ctx, "3") // cached again (the stopped watch emptied the cache)
	appendTo(b, bg, "b")  // another node: a's cache still says "123"
	before := a.Conflicts()
	appendTo(a, ctx, "4")
	if a.Conflicts() == before {
		t.Fatal("the stale cached value did not fail the guard")
	}
	err := b.View(bg, func(tx store.BackendTx) error {
		v, err := tx.Get(store.BucketKeys, k)
		if err == nil && string(v) != "123b4" {
			err = fmt.Errorf("value %q, want \"123b4\" (an update lost)", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
