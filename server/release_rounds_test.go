package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// etcdReads counts the etcd reads the nodes' clients make: linearizable
// (ranges without Serializable; transactions, which etcd serves through
// the leader) and serializable.
type etcdReads struct{ linear, serial atomic.Int64 }

func (c *etcdReads) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	switch r := req.(type) {
	case *pb.RangeRequest:
		if r.Serializable {
			c.serial.Add(1)
		} else {
			c.linear.Add(1)
		}
	case *pb.TxnRequest:
		c.linear.Add(1)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *etcdReads) take() string {
	return fmt.Sprintf("%d linearizable, %d serializable", c.linear.Swap(0), c.serial.Swap(0))
}

// TestClusterReleaseOneLinearizableRead: a Firebase release on a node of a
// cluster makes one linearizable etcd read (the block-list check, which
// fixes the revision) and reads the key record at that revision on its
// own member; a block set on another node still refuses the next release
// on this one, and a key deleted on the other node is not released.
func TestClusterReleaseOneLinearizableRead(t *testing.T) {
	c := etcddev.EmbeddedCluster(t, 3)
	var reads etcdReads
	counted := c.SharedBackend(etcdstore.Options{DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(reads.intercept)}})
	key := enclave.NewRootKey()
	issuer := firebasetest.NewIssuer(t, "proj-a")
	a := newNode(t, []apptest.CoreOption{apptest.RootKey(key), apptest.StoreBackend(counted)}, issuer)
	b := newNode(t, []apptest.CoreOption{apptest.RootKey(key), apptest.StoreBackend(counted)}, issuer)

	tok := a.issuer.Mint(nil)
	if r := a.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64([]byte("0123456789abcdef0123456789abcdef"))}); r.Status != 201 {
		t.Fatalf("store on A: %d %s", r.Status, r.Body)
	}
	// The first release on B also learns that the buckets exist (once per
	// node); count the next ones.
	if r := b.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 200 {
		t.Fatalf("release on B: %d %s", r.Status, r.Body)
	}
	for i := range 3 {
		reads.take()
		if r := b.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 200 {
			t.Fatalf("release on B: %d %s", r.Status, r.Body)
		}
		if got := reads.take(); got != "1 linearizable, 1 serializable" {
			t.Fatalf("release %d on B made %s etcd reads; want one linearizable read (the block list) and the key record at its revision", i, got)
		}
	}

	subject := "firebase:proj-a%2F%2F" + firebasetest.DefaultSubject
	if r := a.Admin("PUT", "/v1/admin/firebase/blocked/"+subject, nil); r.Status != 204 {
		t.Fatalf("block on A: %d %s", r.Status, r.Body)
	}
	if r := b.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 403 || r.Code() != "user_blocked" {
		t.Fatalf("release on B after a block on A: %d %s", r.Status, r.Body)
	}
	if r := a.Admin("DELETE", "/v1/admin/firebase/blocked/"+subject, nil); r.Status != 204 {
		t.Fatalf("unblock on A: %d %s", r.Status, r.Body)
	}
	if r := a.Bearer("DELETE", "/v1/firebase/key", tok, nil); r.Status != 204 {
		t.Fatalf("delete on A: %d %s", r.Status, r.Body)
	}
	if r := b.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 404 {
		t.Fatalf("release on B after a delete on A: %d %s", r.Status, r.Body)
	}
}
