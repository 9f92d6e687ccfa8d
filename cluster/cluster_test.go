package cluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

func newRoot(t *testing.T) *enclave.Root {
	t.Helper()
	r, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestCADerivedFromRoot: the cluster CA is a function of the root key
// alone (two derivations give the same certificate, as two members
// would), another root key gives another CA, and a node certificate
// verifies under its own CA only.
func TestCADerivedFromRoot(t *testing.T) {
	root, other := newRoot(t), newRoot(t)
	a, err := DeriveCA(root)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DeriveCA(root)
	c, _ := DeriveCA(other)
	if !bytes.Equal(a.DER, b.DER) {
		t.Fatal("the same root key gave two different CA certificates")
	}
	if bytes.Equal(a.DER, c.DER) || bytes.Equal(a.Cert.PublicKey.(ed25519.PublicKey), c.Cert.PublicKey.(ed25519.PublicKey)) {
		t.Fatal("two root keys gave the same CA")
	}
	if !a.Cert.IsCA || a.Cert.CheckSignatureFrom(a.Cert) != nil {
		t.Fatal("the CA certificate is not a self-signed CA")
	}
	n, err := a.Issue("n1", []string{"127.0.0.1", "node1.internal"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: a.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, DNSName: "node1.internal"}
	if _, err := n.Cert.Leaf.Verify(opts); err != nil {
		t.Fatalf("node certificate under its CA: %v", err)
	}
	opts.Roots = c.Pool()
	if _, err := n.Cert.Leaf.Verify(opts); err == nil {
		t.Fatal("a node certificate verified under another cluster's CA")
	}
}

// TestStateFile: the node-local state round-trips through one 0600 file
// in a 0700 directory; a missing file is ErrNoState; a damaged one is an
// error naming it.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadState(dir); !errors.Is(err, ErrNoState) {
		t.Fatalf("empty dir: %v", err)
	}
	st := &State{SealedRoot: []byte(`{"x":1}`), AttestAK: []byte{1, 2}, Name: "n1", MemberID: 7, ClusterID: 9, InitialCluster: "n1=https://127.0.0.1:2380", ClusterState: StateNew}
	if err := st.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil || got.Name != "n1" || got.MemberID != 7 || !bytes.Equal(got.AttestAK, []byte{1, 2}) || !json.Valid(got.SealedRoot) || !bytes.Contains(got.SealedRoot, []byte(`"x"`)) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	fi, _ := os.Stat(StatePath(dir))
	di, _ := os.Stat(filepath.Dir(StatePath(dir)))
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Fatalf("modes: file %v dir %v", fi.Mode(), di.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "node", ".state-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if err := os.WriteFile(StatePath(dir), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(dir); err == nil || !bytes.Contains([]byte(err.Error()), []byte(StatePath(dir))) {
		t.Fatalf("damaged state: %v", err)
	}
}

// startMember starts a member named name for root in a fresh directory.
func startMember(t *testing.T, root *enclave.Root, name, initial, state string, peer string) *Embedded {
	t.Helper()
	ca, err := DeriveCA(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if initial == "" {
		initial = name + "=https://" + peer
	}
	m, err := StartMember(context.Background(), MemberOptions{
		Name: name, DataDir: EtcdDir(dir), TLSDir: TLSDir(dir),
		PeerListen: peer, PeerAdvertise: "https://" + peer, ClientListen: proc.FreeAddr(t),
		InitialCluster: initial, ClusterState: state, CA: ca, StartTimeout: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// TestPeerAndClientNeedClusterCertificate: the member's peer and client
// listeners speak mutual TLS with the cluster CA. A client or peer with a
// certificate of another CA (an attacker without the root key making up
// its own), or with none, gets nothing; a certificate of the cluster CA
// (any holder of the root key) works.
func TestPeerAndClientNeedClusterCertificate(t *testing.T) {
	root := newRoot(t)
	peer := proc.FreeAddr(t)
	m := startMember(t, root, "n1", "", StateNew, peer)
	ca, _ := DeriveCA(root)
	good, err := ca.Issue("other-node", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreignCA, _ := DeriveCA(newRoot(t))
	foreign, _ := foreignCA.Issue("attacker", []string{"127.0.0.1"}, time.Now())

	// The peer listener: etcd's /members answers a peer.
	peerGet := func(certs []tls.Certificate) error {
		// The attacker trusts the server whatever it shows; only its own
		// certificate is on trial.
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: certs}}, Timeout: 10 * time.Second}
		resp, err := c.Get("https://" + peer + "/members")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return nil
	}
	if err := peerGet([]tls.Certificate{good.Cert}); err != nil {
		t.Fatalf("a peer with a cluster certificate: %v", err)
	}
	if err := peerGet([]tls.Certificate{foreign.Cert}); err == nil {
		t.Fatal("a peer with a certificate of another CA was served")
	}
	if err := peerGet(nil); err == nil {
		t.Fatal("a peer without a certificate was served")
	}

	// The client listener.
	clientGet := func(tc *tls.Config) error {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL()}, TLS: tc, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = cli.Get(ctx, "k")
		return err
	}
	if err := clientGet(ca.ClientTLS(good)); err != nil {
		t.Fatalf("a client with a cluster certificate: %v", err)
	}
	if err := clientGet(&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{foreign.Cert}}); err == nil {
		t.Fatal("a client with a certificate of another CA was served")
	}
	if err := clientGet(&tls.Config{RootCAs: ca.Pool()}); err == nil {
		t.Fatal("a client without a certificate was served")
	}
}

// TestLearnerJoinPromoteRemove (the seam test: what the attested join
// does with AddLearner, without the join protocol): a second member of
// the same root key is added as a learner, starts with
// initial-cluster-state existing, is promoted to a voter by the loop,
// and is removed again. Removing the last voter, or the member serving
// the request, is refused.
func TestLearnerJoinPromoteRemove(t *testing.T) {
	root := newRoot(t)
	a := startMember(t, root, "n1", "", StateNew, proc.FreeAddr(t))
	ctx := context.Background()
	if _, err := a.Remove(ctx, ID(a.MemberID())); !errors.Is(err, ErrLastVoter) {
		t.Fatalf("removing the only member: %v", err)
	}
	if _, err := a.Remove(ctx, 12345); !errors.Is(err, ErrMemberNotFound) {
		t.Fatalf("removing an unknown member: %v", err)
	}

	if _, _, err := a.AddLearner(ctx, "n2", []string{"http://" + proc.FreeAddr(t)}); err == nil {
		t.Fatal("a learner with a plain-http peer URL was added")
	}
	peerB := proc.FreeAddr(t)
	id, initial, err := a.AddLearner(ctx, "n2", []string{"https://" + peerB})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.AddLearner(ctx, "n1", []string{"https://" + proc.FreeAddr(t)}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("a second member of the same name: %v", err)
	}
	b := startMember(t, root, "n2", initial, StateExisting, peerB)
	if b.MemberID() != id || b.ClusterID() != a.ClusterID() {
		t.Fatalf("joined member %x in cluster %x; want %x in %x", b.MemberID(), b.ClusterID(), id, a.ClusterID())
	}
	// The promotion loop makes it a voter (polled; bounded by count).
	var st Status
	for i := 0; ; i++ {
		st, err = a.Status(ctx)
		if err == nil && len(st.Members) == 2 && !st.Members[0].Learner && !st.Members[1].Learner {
			break
		}
		if i > 300 {
			t.Fatalf("the learner was never promoted: %+v %v", st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	leaders := 0
	for _, mm := range st.Members {
		if mm.Leader {
			leaders++
		}
		if mm.Self != (mm.ID == ID(a.MemberID())) {
			t.Fatalf("self flag: %+v", mm)
		}
	}
	if leaders != 1 {
		t.Fatalf("want one leader: %+v", st)
	}
	if _, err := a.Remove(ctx, ID(a.MemberID())); !errors.Is(err, ErrRemoveSelf) {
		t.Fatalf("removing the serving member: %v", err)
	}
	// (Right after the promotion etcd answers "unhealthy" until the
	// members have been connected for five seconds; Remove waits it out.)
	got, err := a.Remove(ctx, ID(id))
	if err != nil || got.Name != "n2" {
		t.Fatalf("remove n2: %+v %v", got, err)
	}
	st, err = a.Status(ctx)
	if err != nil || len(st.Members) != 1 || st.Members[0].Name != "n1" {
		t.Fatalf("after removal: %+v %v", st, err)
	}
}

// TestRemoveRefusedWhenQuorumWouldBreak: in a cluster of three voters
// with one member down, removing another voter would leave one member up
// out of two — no majority. The removal is refused with ErrLoseQuorum;
// removing the member that is down is allowed (it is not part of the
// active quorum).
func TestRemoveRefusedWhenQuorumWouldBreak(t *testing.T) {
	root := newRoot(t)
	a := startMember(t, root, "n1", "", StateNew, proc.FreeAddr(t))
	ctx := context.Background()
	join := func(name string) *Embedded {
		peer := proc.FreeAddr(t)
		_, initial, err := a.AddLearner(ctx, name, []string{"https://" + peer})
		if err != nil {
			t.Fatal(err)
		}
		m := startMember(t, root, name, initial, StateExisting, peer)
		if err := m.WaitVoter(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		return m
	}
	b := join("n2")
	c := join("n3")
	c.Close() // n3 is down
	if _, err := a.Remove(ctx, ID(b.MemberID())); !errors.Is(err, ErrLoseQuorum) {
		t.Fatalf("removing a voter with another one down: %v", err)
	}
	if _, err := a.Remove(ctx, ID(c.MemberID())); err != nil {
		t.Fatalf("removing the member that is down: %v", err)
	}
}

// TestClientPortServesGRPCOnly: the member's client port is etcd's gRPC
// server alone (gRPC's own server, not Go's HTTP/2 server in front of
// it): an HTTP request with a cluster certificate gets no HTTP answer
// there, while a gRPC client with the same certificate is served.
func TestClientPortServesGRPCOnly(t *testing.T) {
	root := newRoot(t)
	m := startMember(t, root, "n1", "", StateNew, proc.FreeAddr(t))
	ca, _ := DeriveCA(root)
	good, err := ca.Issue("other-node", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL()}, TLS: ca.ClientTLS(good), DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("gRPC on the client port: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLS(good)}, Timeout: 10 * time.Second}
	resp, err := hc.Get(m.ClientURL() + "/health")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("HTTP on the client port answered %s %s; want gRPC only", resp.Status, b)
	}
}
