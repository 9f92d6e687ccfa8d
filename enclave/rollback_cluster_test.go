package enclave

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// Cluster rollback tests: several Rollback instances over ONE store in a
// real embedded etcd, in one process. Node "a" counts on the in-process
// simulator, node "b" on a swtpm process (the simulator is one per
// process): two real TPMs with their own storage root keys and counters.
//
// The interval is a day, so the background loop never increments or
// follows on its own during a test: the test says when a node follows
// (follow) and increments (Flush), and Close does both once more.

const clusterTestInterval = 24 * time.Hour

type rbCluster struct {
	t      *testing.T
	etcd   *etcddev.Cluster
	prefix string
	raw    secret.Bytes // the root key every node holds (in production: received by the attested join)
	nodes  map[string]*rbNode
}

type rbNode struct {
	c    *rbCluster
	name string
	tpm  transport.TPM
	db   *store.DB
	be   *etcdstore.Store // db's backend (its Conflicts count)
	root *Root
}

var clusterPrefixes int

// newRBCluster initializes a store in embedded etcd from node "a" on the
// simulator and joins node "b" on a swtpm.
func newRBCluster(t *testing.T, sim transport.TPM) *rbCluster {
	t.Helper()
	ctx := context.Background()
	clusterPrefixes++
	c := &rbCluster{t: t, etcd: etcddev.Embedded(t), prefix: fmt.Sprintf("rbc-%d", clusterPrefixes), nodes: map[string]*rbNode{}}
	a := &rbNode{c: c, name: "a", tpm: sim}
	a.db = c.openDB(c.prefix)
	root, raw, err := Initialize(ctx, sim, a.db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.raw = secret.CopyBytes(raw.Reveal())
	raw.Wipe()
	a.root = root
	t.Cleanup(func() { c.raw.Wipe() })
	rb, err := InitRollback(ctx, sim, a.db, root, RollbackOptions{Node: "a", Interval: clusterTestInterval})
	if err != nil {
		t.Fatal(err)
	}
	if st := rb.Status(); st.Event != RollbackNewCounter || st.Node != "a" {
		t.Fatalf("node a: %+v", st)
	}
	a.stop(rb)
	c.nodes["a"] = a

	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tb, err := tpmdev.Open(ctx, sw.Spec)
	if err != nil {
		t.Fatalf("open swtpm: %v\n%s", err, sw.Log())
	}
	t.Cleanup(func() { tb.Close() })
	b := &rbNode{c: c, name: "b", tpm: tb}
	rbB, err := b.start(c.prefix, RollbackOptions{})
	if err != nil {
		t.Fatalf("node b joins: %v", err)
	}
	if st := rbB.Status(); st.Event != RollbackNewCounter || st.Node != "b" {
		t.Fatalf("node b joins: %+v", st)
	}
	b.stop(rbB)
	c.nodes["b"] = b
	return c
}

func (c *rbCluster) openDB(prefix string) *store.DB {
	c.t.Helper()
	db, _ := c.openDBBackend(prefix)
	return db
}

func (c *rbCluster) openDBBackend(prefix string) (*store.DB, *etcdstore.Store) {
	c.t.Helper()
	be, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.etcd.Endpoints(), Prefix: prefix})
	if err != nil {
		c.t.Fatal(err)
	}
	db, err := store.New(be, store.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	return db, be
}

// addSwtpmNode joins one more node, on a swtpm of its own.
func (c *rbCluster) addSwtpmNode(name string) *rbNode {
	c.t.Helper()
	sw := swtpmtest.Start(c.t, swtpmtest.Options{})
	tp, err := tpmdev.Open(context.Background(), sw.Spec)
	if err != nil {
		c.t.Fatalf("open swtpm: %v\n%s", err, sw.Log())
	}
	c.t.Cleanup(func() { tp.Close() })
	n := &rbNode{c: c, name: name, tpm: tp}
	rb, err := n.start(c.prefix, RollbackOptions{})
	if err != nil {
		c.t.Fatalf("node %s joins: %v", name, err)
	}
	if st := rb.Status(); st.Event != RollbackNewCounter {
		c.t.Fatalf("node %s joins: %+v", name, st)
	}
	n.stop(rb)
	c.nodes[name] = n
	return n
}

// start opens the node's store on prefix with the root key and runs
// OpenRollback as that node.
func (n *rbNode) start(prefix string, opts RollbackOptions) (*Rollback, error) {
	n.c.t.Helper()
	n.db, n.be = n.c.openDBBackend(prefix)
	root, err := NewRoot(n.c.raw)
	if err != nil {
		n.c.t.Fatal(err)
	}
	n.root = root
	opts.Node, opts.Interval = n.name, clusterTestInterval
	rb, err := OpenRollback(context.Background(), n.tpm, n.db, root, opts)
	if err != nil {
		n.db.Close()
		root.Close()
	}
	return rb, err
}

// mustStart starts the node and fails the test unless it is accepted.
func (n *rbNode) mustStart(prefix string) *Rollback {
	n.c.t.Helper()
	rb, err := n.start(prefix, RollbackOptions{})
	if err != nil {
		n.c.t.Fatalf("node %s start: %v", n.name, err)
	}
	return rb
}

func (n *rbNode) stop(rb *Rollback) {
	n.c.t.Helper()
	if err := rb.Close(); err != nil {
		n.c.t.Fatal(err)
	}
	n.db.Close()
	n.root.Close()
}

func (n *rbNode) custody() *Custody { return NewCustody(n.db, n.root, CustodyOptions{}) }

// etcdKey is the etcd key of a record (package etcdstore's layout): the
// raw helpers below read and write etcd past the appliance, as an
// attacker with access to etcd would.
func (c *rbCluster) etcdKey(prefix string, b store.Bucket, key []byte) string {
	return prefix + "/" + string(b) + "/" + string(key)
}

func (c *rbCluster) rawGet(key string) []byte {
	c.t.Helper()
	cli := c.client()
	defer cli.Close()
	resp, err := cli.Client().Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		c.t.Fatalf("etcd get %q: %v (%d keys)", key, err, len(resp.Kvs))
	}
	return resp.Kvs[0].Value
}

func (c *rbCluster) rawPut(key string, v []byte) {
	c.t.Helper()
	cli := c.client()
	defer cli.Close()
	if _, err := cli.Client().Put(context.Background(), key, string(v)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rbCluster) rawDelete(key string) {
	c.t.Helper()
	cli := c.client()
	defer cli.Close()
	if _, err := cli.Client().Delete(context.Background(), key); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rbCluster) client() *etcdstore.Store {
	c.t.Helper()
	s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.etcd.Endpoints(), Prefix: "raw-access"})
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// TestRollbackClusterAlternateWrites: two nodes, each with its own TPM,
// write the one store alternately (stores, overwrites, deletions); the
// digest in the cluster record stays right, so a start-time scan on
// either node accepts the store, and each node's record verifies.
func TestRollbackClusterAlternateWrites(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	a, b := c.nodes["a"], c.nodes["b"]
	rbA, rbB := a.mustStart(c.prefix), b.mustStart(c.prefix)
	g0 := rbA.Status().ClusterGeneration
	ca, cb := a.custody(), b.custody()
	for i := range 4 {
		user := UserOwner(fmt.Sprintf("u%d", i))
		if _, err := ca.PutKey(ctx, user, "PASSKEY", []byte("key-a"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cb.PutKey(ctx, user, "PASSKEY", []byte("key-b"), PutOptions{}); err != nil { // an overwrite from the other node
			t.Fatal(err)
		}
		if i%2 == 1 {
			if err := ca.DeleteKey(ctx, user, "PASSKEY"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, err := ca.GetKey(ctx, UserOwner("u2"), "PASSKEY"); err != nil || string(got.Reveal()) != "key-b" {
		t.Fatalf("node a reads node b's overwrite: %q, %v", got.Reveal(), err)
	}
	// Each node followed what the other wrote.
	if err := rbA.follow(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rbB.follow(ctx); err != nil {
		t.Fatal(err)
	}
	if ga, gb := rbA.Status().ClusterGeneration, rbB.Status().ClusterGeneration; ga != gb || ga < g0+10 {
		t.Fatalf("cluster generation: node a %d, node b %d, start %d (10 changes made)", ga, gb, g0)
	}
	a.stop(rbA)
	b.stop(rbB)

	for _, n := range []*rbNode{b, a} {
		rb := n.mustStart(c.prefix)
		if st := rb.Status(); st.Event != RollbackAccepted || st.Records == 0 {
			t.Fatalf("node %s restart: %+v", n.name, st)
		}
		n.stop(rb)
	}
}

// TestRollbackClusterRestoreRefusedOnEveryNode: snapshot the store (the
// appliance's etcd dump of its prefix); node a deletes a key, node b only
// follows; every member is restored from the old snapshot → BOTH nodes
// refuse to start; `rollback accept` on each lets it start.
func TestRollbackClusterRestoreRefusedOnEveryNode(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	a, b := c.nodes["a"], c.nodes["b"]
	rbA, rbB := a.mustStart(c.prefix), b.mustStart(c.prefix)
	if _, err := a.custody().PutKey(ctx, UserOwner("carol"), "PASSKEY", []byte("carol-key"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, rb := range []*Rollback{rbA, rbB} { // both counters caught up: the snapshot is not within an interval of a change
		if err := rb.follow(ctx); err != nil {
			t.Fatal(err)
		}
		if err := rb.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rbA.BeforeBackup()
	var snap bytes.Buffer
	if _, err := a.db.WriteTo(&snap); err != nil {
		t.Fatal(err)
	}
	incB := rbB.Increments()
	if err := a.custody().DeleteKey(ctx, UserOwner("carol"), "PASSKEY"); err != nil {
		t.Fatal(err)
	}
	// Node b wrote nothing; it follows the cluster generation.
	if err := rbB.follow(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rbB.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if rbB.Increments() != incB+1 {
		t.Fatalf("node b made %d increments following node a's deletion, want 1", rbB.Increments()-incB)
	}
	a.stop(rbA)
	b.stop(rbB)

	// The live store starts on both (the refusal below is the restore's).
	for _, n := range []*rbNode{a, b} {
		n.stop(n.mustStart(c.prefix))
	}

	// Every member restored from the old snapshot.
	restored := c.prefix + "-restored"
	s, err := etcdstore.Restore(ctx, etcdstore.Options{Endpoints: c.etcd.Endpoints(), Prefix: restored}, bytes.NewReader(snap.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, n := range []*rbNode{a, b} {
		_, err := n.start(restored, RollbackOptions{})
		var re *RollbackError
		if !errors.Is(err, ErrRolledBack) || !errors.As(err, &re) || re.Counter <= re.Store {
			t.Fatalf("node %s on the restored snapshot: err = %v, want ErrRolledBack", n.name, err)
		}
	}
	// `keywarden rollback accept` on each node rebases that node's record.
	for _, n := range []*rbNode{a, b} {
		rb, err := n.start(restored, RollbackOptions{AcceptRollback: true})
		if err != nil {
			t.Fatalf("node %s accept: %v", n.name, err)
		}
		if st := rb.Status(); st.Event != RollbackOverride {
			t.Fatalf("node %s accept: %+v", n.name, st)
		}
		n.stop(rb)
	}
	for _, n := range []*rbNode{a, b} {
		rb := n.mustStart(restored)
		if st := rb.Status(); st.Event != RollbackAccepted {
			t.Fatalf("node %s after accept: %+v", n.name, st)
		}
		if n == a {
			if got, err := n.custody().GetKey(ctx, UserOwner("carol"), "PASSKEY"); err != nil || string(got.Reveal()) != "carol-key" {
				t.Fatalf("the accepted snapshot's key: %v", err)
			}
		}
		n.stop(rb)
	}
}

// TestRollbackClusterSpliceRefused: a record written straight into etcd
// (an older value of a key copied over the current one, and a record added
// from nowhere) is refused at start with ErrRecordsAltered, on either node.
func TestRollbackClusterSpliceRefused(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	a, b := c.nodes["a"], c.nodes["b"]
	rbA := a.mustStart(c.prefix)
	ca := a.custody()
	if _, err := ca.PutKey(ctx, UserOwner("dave"), "PASSKEY", []byte("old"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	key := c.etcdKey(c.prefix, store.BucketKeys, store.Key(string(UserOwner("dave")), "PASSKEY"))
	old := c.rawGet(key)
	if _, err := ca.PutKey(ctx, UserOwner("dave"), "PASSKEY", []byte("new"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	a.stop(rbA)

	// The old value spliced back in (it opens: it is a genuine record).
	cur := c.rawGet(key)
	c.rawPut(key, old)
	// backup -verify's check sees it too (it reads the cluster record).
	vdb := c.openDB(c.prefix)
	if _, err := VerifyBackup(ctx, sim, vdb); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("VerifyBackup with a spliced record: err = %v, want ErrRecordsAltered", err)
	}
	for _, n := range []*rbNode{a, b} {
		if _, err := n.start(c.prefix, RollbackOptions{}); !errors.Is(err, ErrRecordsAltered) {
			t.Fatalf("node %s with a spliced record: err = %v, want ErrRecordsAltered", n.name, err)
		}
	}
	c.rawPut(key, cur)
	if rep, err := VerifyBackup(ctx, sim, vdb); err != nil || !rep.Rollback || rep.Records == 0 {
		t.Fatalf("VerifyBackup of the intact store: %+v, %v", rep, err)
	}
	vdb.Close()
	rb := b.mustStart(c.prefix)
	b.stop(rb)

	// A record added past the appliance.
	added := c.etcdKey(c.prefix, store.BucketKeys, store.Key(string(UserOwner("mallory")), "PASSKEY"))
	c.rawPut(added, cur)
	if _, err := a.start(c.prefix, RollbackOptions{}); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("node a with an added record: err = %v, want ErrRecordsAltered", err)
	}
	c.rawDelete(added)
	rb = a.mustStart(c.prefix)
	a.stop(rb)
}

// TestRollbackClusterNodeRecordBinding: node a's record copied over node
// b's does not verify for b (the MAC binds the node name); the cluster
// record with a changed generation does not verify; and node b's record
// deleted (to make b look like a new node and rebase) is refused, since
// b's TPM already holds this cluster's counter; a node's record with a
// changed generation does not verify, on that node nor on the others.
func TestRollbackClusterNodeRecordBinding(t *testing.T) {
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	a, b := c.nodes["a"], c.nodes["b"]
	meta := func(k store.MetaKey) string { return c.etcdKey(c.prefix, store.BucketMeta, k.Key()) }
	recA, recB := c.rawGet(meta(store.RollbackNodeKey("a"))), c.rawGet(meta(store.RollbackNodeKey("b")))

	c.rawPut(meta(store.RollbackNodeKey("b")), recA)
	if _, err := b.start(c.prefix, RollbackOptions{}); !errors.Is(err, ErrRollbackRecord) {
		t.Fatalf("node b with node a's record: err = %v, want ErrRollbackRecord", err)
	}
	// The name rewritten to b's: the MAC no longer verifies.
	forged := bytes.Replace(recA, []byte(`"node":"a"`), []byte(`"node":"b"`), 1)
	if bytes.Equal(forged, recA) {
		t.Fatal("test setup: node name not found in the record")
	}
	c.rawPut(meta(store.RollbackNodeKey("b")), forged)
	if _, err := b.start(c.prefix, RollbackOptions{}); !errors.Is(err, ErrRollbackRecord) {
		t.Fatalf("node b with node a's record renamed: err = %v, want ErrRollbackRecord", err)
	}

	// Removed: b would otherwise join afresh with its current counter.
	c.rawDelete(meta(store.RollbackNodeKey("b")))
	if _, err := b.start(c.prefix, RollbackOptions{}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("node b with its record removed: err = %v, want ErrRolledBack", err)
	}
	c.rawPut(meta(store.RollbackNodeKey("b")), recB)
	b.stop(b.mustStart(c.prefix))

	// Node a's generation lowered by hand: its MAC no longer verifies, on
	// node a (its own record) nor on node b (checks every node's record).
	ra := c.rawGet(meta(store.RollbackNodeKey("a")))
	c.rawPut(meta(store.RollbackNodeKey("a")), bytes.Replace(ra, []byte(`"gen":`), []byte(`"gen":1`), 1))
	for _, n := range []*rbNode{b, a} {
		if _, err := n.start(c.prefix, RollbackOptions{}); !errors.Is(err, ErrRollbackRecord) {
			t.Fatalf("node %s with node a's record altered: err = %v, want ErrRollbackRecord", n.name, err)
		}
	}
	// The operator's accept on node a makes its record anew from a scan
	// (its share absorbs the difference); the other node then starts
	// without an override.
	rb, err := a.start(c.prefix, RollbackOptions{AcceptRollback: true})
	if err != nil {
		t.Fatalf("node a accept with its record altered: %v", err)
	}
	if st := rb.Status(); st.Event != RollbackOverride {
		t.Fatalf("node a accept: %+v", st)
	}
	a.stop(rb)
	rb = b.mustStart(c.prefix)
	if st := rb.Status(); st.Event != RollbackAccepted {
		t.Fatalf("node b after a's accept: %+v", st)
	}
	b.stop(rb)
}

// TestRollbackClusterConvertsSingleNodeStore: a store made by the
// single-node scheme (on etcd) started with a node name on the TPM its
// record names: the digest is checked against that record, its generation
// against the counter, and it becomes this node's record; a second node
// then joins. The same store restored from before a change is refused at
// its conversion.
func TestRollbackClusterConvertsSingleNodeStore(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := &rbCluster{t: t, etcd: etcddev.Embedded(t), prefix: "single", nodes: map[string]*rbNode{}}
	db := c.openDB(c.prefix)
	root, raw, err := Initialize(ctx, sim, db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.raw = secret.CopyBytes(raw.Reveal())
	raw.Wipe()
	defer c.raw.Wipe()
	rb, err := InitRollback(ctx, sim, db, root, RollbackOptions{Interval: clusterTestInterval})
	if err != nil {
		t.Fatal(err)
	}
	cu := NewCustody(db, root, CustodyOptions{})
	if _, err := cu.PutKey(ctx, UserOwner("erin"), "PASSKEY", []byte("k"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	rb.BeforeBackup()
	if _, err := db.WriteTo(&snap); err != nil {
		t.Fatal(err)
	}
	if err := cu.DeleteKey(ctx, UserOwner("erin"), "PASSKEY"); err != nil {
		t.Fatal(err)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	root.Close()

	// The old copy, converted: its generation is behind this TPM's counter.
	s, err := etcdstore.Restore(ctx, etcdstore.Options{Endpoints: c.etcd.Endpoints(), Prefix: "single-old"}, bytes.NewReader(snap.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	a := &rbNode{c: c, name: "a", tpm: sim}
	if _, err := a.start("single-old", RollbackOptions{}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("conversion of an old copy: err = %v, want ErrRolledBack", err)
	}

	rbA := a.mustStart(c.prefix)
	if st := rbA.Status(); st.Event != RollbackAccepted || st.Node != "a" || st.ClusterGeneration == 0 {
		t.Fatalf("conversion: %+v", st)
	}
	a.stop(rbA)
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tb, err := tpmdev.Open(ctx, sw.Spec)
	if err != nil {
		t.Fatalf("open swtpm: %v\n%s", err, sw.Log())
	}
	defer tb.Close()
	b := &rbNode{c: c, name: "b", tpm: tb}
	rbB := b.mustStart(c.prefix)
	if st := rbB.Status(); st.Event != RollbackNewCounter {
		t.Fatalf("node b joins the converted store: %+v", st)
	}
	b.stop(rbB)
	a.stop(a.mustStart(c.prefix))
}

// BenchmarkClusterChange is the write cost of the cluster scheme: three
// nodes' store façades over one prefix of a one-member embedded etcd,
// 16 × GOMAXPROCS writers spread over them, one Put per Update.
// "no-ledger" is the same without rollback detection; "cluster" adds the
// writing node's own record (read, checked, rewritten with its digest
// share and generation) to every write transaction — no record is shared
// between nodes, so the nodes' transactions do not conflict; "single-node"
// is the single-node scheme on one façade with all the writers (a ledger
// reads each written key's old value), and "cluster-one-facade" the
// cluster scheme with every writer on one node. The three Rollbacks count
// on one simulator at distinct NV indices (the interval is a day: no TPM
// command during the run).
//
//	go test -run '^$' -bench ClusterChange -benchtime 4s ./enclave/
func BenchmarkClusterChange(b *testing.B) {
	for _, mode := range []string{"no-ledger", "single-node", "cluster-one-facade", "cluster"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			e := etcddev.Embedded(b)
			clusterPrefixes++
			prefix := fmt.Sprintf("rbbench-%d", clusterPrefixes)
			open := func() (*store.DB, *etcdstore.Store) {
				be, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: e.Endpoints(), Prefix: prefix})
				if err != nil {
					b.Fatal(err)
				}
				db, err := store.New(be, store.Options{})
				if err != nil {
					b.Fatal(err)
				}
				return db, be
			}
			var dbs []*store.DB
			var bes []*etcdstore.Store
			for range 3 {
				db, be := open()
				defer db.Close()
				dbs, bes = append(dbs, db), append(bes, be)
			}
			if mode == "single-node" || mode == "cluster-one-facade" {
				dbs = dbs[:1] // one façade: the ledger's own cost, no conflicts between nodes
			}
			if mode != "no-ledger" {
				sim := openSim(b, testSeed)
				defer sim.Close()
				root, raw, err := Initialize(ctx, sim, dbs[0], InitOptions{})
				if err != nil {
					b.Fatal(err)
				}
				defer raw.Wipe()
				defer root.Close()
				for i, db := range dbs {
					opts := RollbackOptions{Node: fmt.Sprintf("n%d", i), NVIndex: DefaultCounterIndex + uint32(i), Interval: clusterTestInterval}
					if mode == "single-node" {
						opts.Node = ""
					}
					open := OpenRollback
					if i == 0 {
						open = InitRollback
					}
					rb, err := open(ctx, sim, db, root, opts)
					if err != nil {
						b.Fatal(err)
					}
					defer rb.Close()
				}
			}
			var n, c0 atomic.Int64
			for _, be := range bes {
				c0.Add(int64(be.Conflicts()))
			}
			b.SetParallelism(16) // 16 × GOMAXPROCS writers
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					db := dbs[int(i)%len(dbs)]
					if err := db.Update(ctx, func(tx *store.Tx) error {
						return tx.Put(store.BucketKeys, store.Key("bench", fmt.Sprint(i)), benchValue)
					}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			var conflicts int64
			for _, be := range bes {
				conflicts += int64(be.Conflicts())
			}
			b.ReportMetric(float64(conflicts-c0.Load())/float64(b.N), "conflicts/op")
		})
	}
}

var benchValue = make([]byte, 160) // about a sealed key record

// TestRollbackClusterFollowsInBackground: with a short interval and no
// explicit follow, node b's background loop sees node a's change and
// increments b's own counter (waited for by a bounded poll, not a clock).
func TestRollbackClusterFollowsInBackground(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	a, b := c.nodes["a"], c.nodes["b"]
	rbA := a.mustStart(c.prefix)
	b.db = c.openDB(c.prefix)
	root, err := NewRoot(c.raw)
	if err != nil {
		t.Fatal(err)
	}
	b.root = root
	rbB, err := OpenRollback(ctx, b.tpm, b.db, root, RollbackOptions{Node: "b", Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	before := counterValue(t, rbB)
	if _, err := a.custody().PutKey(ctx, UserOwner("frank"), "PASSKEY", []byte("k"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	moved := false
	for i := 0; i < 200 && !moved; i++ {
		moved = counterValue(t, rbB) > before
		if !moved {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !moved {
		t.Fatalf("node b's counter stayed at %d after node a's change (status %+v)", before, rbB.Status())
	}
	rbA.mu.Lock()
	ga := rbA.nrec.Gen
	rbA.mu.Unlock()
	rbB.mu.Lock()
	seen := rbB.nrec.Seen["a"]
	rbB.mu.Unlock()
	if seen != ga {
		t.Fatalf("node b's record saw node a at generation %d, node a is at %d", seen, ga)
	}
	b.stop(rbB)
	a.stop(rbA)
}

// TestRollbackClusterConcurrentWritersNoConflicts: three nodes (three
// TPMs) write the one store at the same time — new records, overwrites and
// deletions, eight writers per node — and no transaction of any node is
// retried: each change touches only its own keys and its node's own
// rollback record. Every node then follows the others, and each starts
// again with the store accepted (the XOR of the nodes' digest shares is
// the scan's digest).
func TestRollbackClusterConcurrentWritersNoConflicts(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	c.addSwtpmNode("c")
	nodes := []*rbNode{c.nodes["a"], c.nodes["b"], c.nodes["c"]}
	rbs := make([]*Rollback, len(nodes))
	var conflicts0 uint64
	for i, n := range nodes {
		rbs[i] = n.mustStart(c.prefix)
		conflicts0 += n.be.Conflicts()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*8)
	for _, n := range nodes {
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 12 {
					k := store.Key(n.name, fmt.Sprintf("w%d-%d", w, i%4)) // overwrites from the 5th write on
					err := n.db.Update(ctx, func(tx *store.Tx) error {
						if i%5 == 4 {
							return tx.Delete(store.BucketKeys, k)
						}
						return tx.Put(store.BucketKeys, k, fmt.Appendf(nil, "%s %d %d", n.name, w, i))
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var conflicts uint64
	for _, n := range nodes {
		conflicts += n.be.Conflicts()
	}
	if conflicts != conflicts0 {
		t.Fatalf("%d etcd transactions retried while three nodes wrote their own keys, want 0", conflicts-conflicts0)
	}
	for _, rb := range rbs {
		if err := rb.follow(ctx); err != nil {
			t.Fatal(err)
		}
	}
	g := rbs[0].Status().ClusterGeneration
	for i, rb := range rbs {
		if st := rb.Status(); st.ClusterGeneration != g || g == 0 {
			t.Fatalf("node %s covers %d changes of the cluster, node a %d", nodes[i].name, st.ClusterGeneration, g)
		}
	}
	for i, n := range nodes {
		n.stop(rbs[i])
	}
	for _, n := range nodes {
		rb := n.mustStart(c.prefix)
		if st := rb.Status(); st.Event != RollbackAccepted || st.Records == 0 {
			t.Fatalf("node %s restart: %+v", n.name, st)
		}
		n.stop(rb)
	}
}

// TestRollbackClusterPartialRestoreRefused: node a deletes a key; the
// attacker puts back, straight into etcd, node a's rollback record from
// before the deletion and the deleted record — a set the digest accepts,
// since a's old digest share vouches for the old record. Nodes b and c,
// which followed the deletion, refuse to start (a's generation is below
// what they saw), and so does node a (its counter is past its restored
// target).
func TestRollbackClusterPartialRestoreRefused(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	c.addSwtpmNode("c")
	nodes := []*rbNode{c.nodes["a"], c.nodes["b"], c.nodes["c"]}
	a := nodes[0]
	rbs := make([]*Rollback, len(nodes))
	for i, n := range nodes {
		rbs[i] = n.mustStart(c.prefix)
	}
	if _, err := a.custody().PutKey(ctx, UserOwner("grace"), "PASSKEY", []byte("grace-key"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sync3 := func() {
		for _, rb := range rbs {
			if err := rb.follow(ctx); err != nil {
				t.Fatal(err)
			}
			if err := rb.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	sync3()
	meta := func(k store.MetaKey) string { return c.etcdKey(c.prefix, store.BucketMeta, k.Key()) }
	keyA := meta(store.RollbackNodeKey("a"))
	rec := c.etcdKey(c.prefix, store.BucketKeys, store.Key(string(UserOwner("grace")), "PASSKEY"))
	oldA, oldRec := c.rawGet(keyA), c.rawGet(rec)
	rbs[0].BeforeBackup()
	if err := a.custody().DeleteKey(ctx, UserOwner("grace"), "PASSKEY"); err != nil {
		t.Fatal(err)
	}
	sync3()
	for i, n := range nodes {
		n.stop(rbs[i])
	}
	c.rawPut(keyA, oldA)
	c.rawPut(rec, oldRec)
	for _, n := range nodes {
		_, err := n.start(c.prefix, RollbackOptions{})
		var re *RollbackError
		if !errors.Is(err, ErrRolledBack) || !errors.As(err, &re) || (n != a && (re.Node != "a" || re.Store >= re.Counter)) {
			t.Fatalf("node %s after node a's record and its deleted record were put back: err = %v, want ErrRolledBack (naming node a on the others)", n.name, err)
		}
	}
	// The digest alone would not have caught it: the restored set is the
	// one node a's old share vouches for.
	vdb := c.openDB(c.prefix)
	defer vdb.Close()
	if _, err := VerifyBackup(ctx, sim, vdb); err != nil {
		t.Fatalf("VerifyBackup (digest only) of the partially restored store: %v", err)
	}
}

// TestRollbackClusterNewGenerationAndSync: on a cluster node, a
// transaction marked by NewGeneration (a PIN guess) takes a target of its
// own although an ordinary change's increment is pending, and Sync
// returns with that node's counter at it.
func TestRollbackClusterNewGenerationAndSync(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	b := c.nodes["b"]
	rb := b.mustStart(c.prefix)
	if _, err := b.custody().PutKey(ctx, UserOwner("heidi"), "PASSKEY", []byte("k"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	g := rb.Status().Generation // pending, shareable
	guess(t, rb, b.db, "guess", 1)
	if got := rb.Status().Generation; got != g+1 {
		t.Fatalf("a NewGeneration transaction on a cluster node shared the pending target: %d, want %d", got, g+1)
	}
	if err := rb.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if cv := counterValue(t, rb); cv != g+1 {
		t.Fatalf("after Sync node b's counter is %d, want %d", cv, g+1)
	}
	b.stop(rb)
}

// TestRollbackClusterRemovedNodeKeepsItsShare: node b writes, then is
// removed (`cluster remove`): its record stays, marked removed, so the
// records it wrote still match the digest and node a starts; node b
// refuses to start under its old name, and the removed record is not
// writable by its old node.
func TestRollbackClusterRemovedNodeKeepsItsShare(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	c := newRBCluster(t, sim)
	a, b := c.nodes["a"], c.nodes["b"]
	rbB := b.mustStart(c.prefix)
	if _, err := b.custody().PutKey(ctx, UserOwner("ivan"), "PASSKEY", []byte("k"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	b.stop(rbB)
	rbA := a.mustStart(c.prefix)
	if err := RemoveRollbackNode(ctx, a.db, a.root, "b"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveRollbackNode(ctx, a.db, a.root, "nobody"); err == nil {
		t.Fatal("removing a node without a record succeeded")
	}
	a.stop(rbA)
	a.stop(a.mustStart(c.prefix))
	if _, err := b.start(c.prefix, RollbackOptions{}); !errors.Is(err, ErrRollbackRecord) {
		t.Fatalf("removed node b starts: err = %v, want ErrRollbackRecord", err)
	}
	vdb := c.openDB(c.prefix)
	defer vdb.Close()
	if rep, err := VerifyBackup(ctx, sim, vdb); err != nil || rep.Records == 0 {
		t.Fatalf("VerifyBackup after node b's removal: %+v, %v", rep, err)
	}
}
