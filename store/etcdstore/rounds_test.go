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
