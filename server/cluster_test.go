package server

import (
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// nodePairs gives two nodes to a test: on bbolt the one node twice (what
// a single node does already), on etcd two appliances over one etcd (one
// three-member cluster, each node talking to another member) with the same
// root key, as a cluster's nodes are.
var nodePairs = []struct {
	name  string
	nodes func(t *testing.T) (a, b *harness)
}{
	{"bbolt-one-node", func(t *testing.T) (*harness, *harness) {
		h := newHarness(t)
		return h, h
	}},
	{"etcd-two-nodes", func(t *testing.T) (*harness, *harness) {
		c := etcddev.EmbeddedCluster(t, 3)
		open := c.SharedBackend(etcdstore.Options{})
		key := enclave.NewRootKey()
		issuer := firebasetest.NewIssuer(t, "proj-a")
		opts := []apptest.CoreOption{apptest.RootKey(key), apptest.StoreBackend(open)}
		return newNode(t, opts, issuer), newNode(t, opts, issuer)
	}},
}

// TestBlockOnOneNodeRefusesOnAnother: an operator's block set through node
// A refuses the very next release on node B (no cache serves the old
// answer), and an unblock on B lets A release again.
func TestBlockOnOneNodeRefusesOnAnother(t *testing.T) {
	for _, p := range nodePairs {
		t.Run(p.name, func(t *testing.T) {
			a, b := p.nodes(t)
			key := b64([]byte("0123456789abcdef0123456789abcdef"))
			tok := a.issuer.Mint(nil)
			if r := a.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: key}); r.Status != 201 {
				t.Fatalf("store on A: %d %s", r.Status, r.Body)
			}
			if r := b.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 200 {
				t.Fatalf("release on B: %d %s", r.Status, r.Body)
			}
			subject := "firebase:proj-a%2F%2F" + firebasetest.DefaultSubject
			if r := a.Admin("PUT", "/v1/admin/firebase/blocked/"+subject, nil); r.Status != 204 {
				t.Fatalf("block on A: %d %s", r.Status, r.Body)
			}
			if r := b.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 403 || r.Code() != "user_blocked" {
				t.Fatalf("release on B after a block on A: %d %s", r.Status, r.Body)
			}
			var list struct {
				Blocked []struct {
					Owner string `json:"owner"`
				} `json:"blocked"`
			}
			b.Admin("GET", "/v1/admin/firebase/blocked", nil).Decode(t, &list)
			if len(list.Blocked) != 1 || list.Blocked[0].Owner != "firebase:proj-a//"+firebasetest.DefaultSubject {
				t.Fatalf("B's block list: %+v", list)
			}
			if r := b.Admin("DELETE", "/v1/admin/firebase/blocked/"+subject, nil); r.Status != 204 {
				t.Fatalf("unblock on B: %d %s", r.Status, r.Body)
			}
			if r := a.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 200 {
				t.Fatalf("release on A after an unblock on B: %d %s", r.Status, r.Body)
			}
		})
	}
}
