//go:build cgo

package join_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/cluster/join"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// Tests that use the simulator must not call t.Parallel: it is one per
// process.

// etcdMember is the approving side's cluster.Member on a real embedded
// etcd member: AddLearner is MemberAddAsLearner.
type etcdMember struct{ cli *clientv3.Client }

func (m etcdMember) AddLearner(ctx context.Context, name string, peerURLs []string) (uint64, string, error) {
	rsp, err := m.cli.MemberAddAsLearner(ctx, peerURLs)
	if err != nil {
		return 0, "", err
	}
	var parts []string
	for _, mem := range rsp.Members {
		n := mem.Name
		if mem.ID == rsp.Member.ID {
			n = name
		}
		for _, u := range mem.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return rsp.Member.ID, strings.Join(parts, ","), nil
}

// Remove removes a member (as cluster.Embedded.Remove does, without its
// checks).
func (m etcdMember) Remove(ctx context.Context, id cluster.ID) (cluster.MemberInfo, error) {
	_, err := m.cli.MemberRemove(ctx, uint64(id))
	return cluster.MemberInfo{ID: id}, err
}

func (m etcdMember) ClusterID() uint64 {
	rsp, err := m.cli.MemberList(context.Background())
	if err != nil {
		return 0
	}
	return rsp.Header.ClusterId
}

// learners lists the learners' peer URLs.
func (m etcdMember) learners(t *testing.T) []string {
	t.Helper()
	rsp, err := m.cli.MemberList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mem := range rsp.Members {
		if mem.IsLearner {
			out = append(out, mem.PeerURLs...)
		}
	}
	return out
}

type fixture struct {
	svc      *join.Service
	db       *store.DB
	rootKey  secret.Bytes
	log      *audit.Log
	auditDir string
	anchor   secret.Bytes
	member   etcdMember
	now      time.Time
	policy   *attest.Policy
}

// newFixture is one approving member: a real embedded etcd member (the
// shared store lives in it, as on a cluster), a root key, a real audit log.
func newFixture(t *testing.T, opts ...func(*join.Options)) *fixture {
	t.Helper()
	c := etcddev.Embedded(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	db, err := store.New(c.Backend(t, etcdstore.Options{}), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	key := enclave.NewRootKey()
	root, err := enclave.NewRoot(secret.CopyBytes(key.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(root.Close)
	f := &fixture{db: db, rootKey: key, member: etcdMember{cli}, now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	f.auditDir = t.TempDir()
	f.anchor = root.Subkey(enclave.SubkeyAuditAnchor)
	f.log, err = audit.Open(context.Background(), audit.Options{Dir: f.auditDir, AnchorKey: f.anchor, Clock: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.log.Close(context.Background()) })
	o := join.Options{
		DB: db, Audit: f.log, Root: root, Member: f.member,
		Policy: func(context.Context) (*attest.Policy, error) {
			if f.policy == nil {
				return nil, errors.New("no policy")
			}
			return f.policy, nil
		},
		Clock: func() time.Time { return f.now },
		// The simulator has no maker's EK certificate; tests that need
		// EK roots set EKRoots (and TestApprovalNeedsEKRootsOrOptOut this
		// back to false).
		AllowUnverifiedEK: true,
	}
	for _, opt := range opts {
		opt(&o)
	}
	f.svc, err = join.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// auditLines closes the log and returns its text.
func (f *fixture) auditText(t *testing.T) string {
	t.Helper()
	if err := f.log.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(f.auditDir, "*"))
	var b strings.Builder
	for _, p := range files {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	if _, err := audit.Verify(f.auditDir, f.anchor); err != nil {
		t.Fatalf("audit verify: %v", err)
	}
	return b.String()
}

func openSim(t *testing.T) transport.TPM {
	t.Helper()
	sim, err := tpmsim.Open(tpmsim.DevSeed + 15)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// policyOf is the policy that admits tpm's present PCR values.
func policyOf(t *testing.T, tpm transport.TPM) *attest.Policy {
	t.Helper()
	v, err := attest.ReadPCRs(context.Background(), tpm, join.DefaultPCRs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := attest.PolicyFromPCRs(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	e, ok := apierr.As(err)
	if !ok || e.Code != code {
		t.Fatalf("want %s, got %v", code, err)
	}
}

// submit runs the joiner's first steps on tpm: nonce, prepare, submit.
func (f *fixture) submit(t *testing.T, tpm transport.TPM, name string) (*join.Request, *attest.AK, *join.Submitted) {
	t.Helper()
	return f.submitFrom(t, tpm, name, "192.0.2.7")
}

// submitFrom is submit from the client address remote.
func (f *fixture) submitFrom(t *testing.T, tpm transport.TPM, name, remote string) (*join.Request, *attest.AK, *join.Submitted) {
	t.Helper()
	ctx := context.Background()
	n, err := f.svc.IssueNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, ak, err := join.Prepare(ctx, tpm, n, name, []string{"https://" + name + ".example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ak.Close() })
	sub, err := f.svc.Submit(ctx, req, remote)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return req, ak, sub
}

// TestJoinHappyPath: a joiner's TPM (the simulator) asks, an operator
// approves, and the joiner recovers exactly the cluster's root key; it is
// a learner of the etcd cluster; both steps are audited.
func TestJoinHappyPath(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	f.policy = policyOf(t, tpm)
	ctx := context.Background()

	_, ak, sub := f.submit(t, tpm, "n2")
	if sub.AKName != join.AKNameHex(ak) || len(sub.EKFingerprint) != 64 || len(sub.PollSecret) != 64 {
		t.Fatalf("submitted: %+v", sub)
	}
	ek, _ := attest.ReadEKPublic(ctx, tpm)
	if fp, _ := attest.EKFingerprint(ek); fp != sub.EKFingerprint {
		t.Fatalf("EK fingerprint %s, the TPM's is %s", sub.EKFingerprint, fp)
	}
	st, err := f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StatePending || st.Answer != nil {
		t.Fatalf("poll before approval: %+v %v", st, err)
	}
	list, err := f.svc.List(ctx)
	if err != nil || len(list) != 1 || list[0].AKName != sub.AKName || list[0].EKFingerprint != sub.EKFingerprint || list[0].Name != "n2" {
		t.Fatalf("list: %+v %v", list, err)
	}

	p, err := f.svc.Approve(ctx, sub.ID, "admin:test")
	if err != nil {
		t.Fatalf("Approve: %v", err)
	}
	if p.State != join.StateApproved || p.MemberID == 0 {
		t.Fatalf("approved: %+v", p)
	}
	if l := f.member.learners(t); len(l) != 1 || l[0] != "https://n2.example:2380" {
		t.Fatalf("learners %v", l)
	}
	st, err = f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StateApproved || st.Answer == nil {
		t.Fatalf("poll after approval: %+v %v", st, err)
	}
	// The store holds no plaintext root key.
	assertNotStored(t, f, f.rootKey.Reveal())

	joined, err := join.Recover(ctx, tpm, ak, sub.ID, "n2", st.Answer)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if !joined.RootKey.Equal(f.rootKey) {
		t.Fatal("the joiner recovered another root key")
	}
	if joined.Name != "n2" || cluster.ID(joined.MemberID) != p.MemberID || joined.ClusterID != f.member.ClusterID() || !strings.Contains(joined.InitialCluster, "n2=https://n2.example:2380") {
		t.Fatalf("joined: %+v", joined)
	}
	// The answer is bound to its request: under another request id it
	// does not open, even on the right TPM.
	if _, err := join.Recover(ctx, tpm, ak, strings.Repeat("0", 32), "n2", st.Answer); err == nil {
		t.Fatal("the answer opened for another request id")
	}
	// Approving again: refused.
	_, err = f.svc.Approve(ctx, sub.ID, "admin:test")
	wantCode(t, err, "join_not_pending")

	text := f.auditText(t)
	for _, want := range []string{`"action":"cluster_join_requested"`, `"action":"cluster_join_approved"`, sub.AKName, sub.EKFingerprint} {
		if !strings.Contains(text, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
}

func assertNotStored(t *testing.T, f *fixture, needle []byte) {
	t.Helper()
	err := f.db.View(context.Background(), func(tx *store.Tx) error {
		return tx.ForEach(store.BucketClusterJoins, nil, func(k, v []byte) error {
			if bytes.Contains(v, needle) {
				t.Fatalf("the root key is stored in plain at %q", k)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAnswerOpensOnlyOnTheJoinersTPM: an answer made for TPM A does not
// open on another TPM (swtpm), whatever key it loads there; and an
// attacker who submits A's EK public key with its own TPM's AK gets an
// answer nobody can open (its TPM lacks A's EK, A lacks its AK).
func TestAnswerOpensOnlyOnTheJoinersTPM(t *testing.T) {
	f := newFixture(t)
	a := openSim(t)
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	b, err := tpmdev.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	f.policy = policyOf(t, a)

	_, _, sub := f.submit(t, a, "n2")
	if _, err := f.svc.Approve(ctx, sub.ID, "admin:test"); err != nil {
		t.Fatal(err)
	}
	st, err := f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.Answer == nil {
		t.Fatal(err)
	}
	bak := loadAK(t, b)
	if _, err := join.Recover(ctx, b, bak, sub.ID, "n2", st.Answer); err == nil {
		t.Fatal("another TPM opened the answer")
	}

	// etcd takes one learner at a time: remove A's before the next.
	rm, err := f.member.cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rm.Members {
		if m.IsLearner {
			if _, err := f.member.cli.MemberRemove(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The attacker on B claims A's EK. Its quote is B's, so the policy
	// must admit B's PCRs for the approval to go through at all.
	f.policy = policyOf(t, b)
	n, err := f.svc.IssueNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, bak2, err := join.Prepare(ctx, b, n, "evil", []string{"https://evil.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	defer bak2.Close()
	aEK, _ := attest.ReadEKPublic(ctx, a)
	req.EKPublic = marshalPKIX(t, aEK)
	// The quote binds B's EK: carrying it over to A's is refused at once.
	_, err = f.svc.Submit(ctx, req, "")
	wantCode(t, err, "join_evidence_invalid")
	// So the attacker quotes again, bound to A's EK.
	n2, _ := f.svc.IssueNonce(ctx)
	ev, err := attest.Quote(ctx, b, bak2, attest.QuoteOptions{Nonce: n2.Nonce, BoundKey: join.Binding(req.EKPublic, "evil", req.PeerURLs), PCRs: n2.PCRSelection})
	if err != nil {
		t.Fatal(err)
	}
	req.Nonce, req.Evidence = n2.Nonce, ev
	sub2, err := f.svc.Submit(ctx, req, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Approve(ctx, sub2.ID, "admin:test"); err != nil {
		t.Fatal(err)
	}
	st2, _ := f.svc.Poll(ctx, sub2.ID, sub2.PollSecret)
	if _, err := join.Recover(ctx, b, bak2, sub2.ID, "evil", st2.Answer); err == nil {
		t.Fatal("a TPM without the EK the answer was made for opened it")
	}
}

func loadAK(t *testing.T, tpm transport.TPM) *attest.AK {
	t.Helper()
	blob, err := attest.CreateAK(context.Background(), tpm)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.LoadAK(context.Background(), tpm, blob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ak.Close() })
	return ak
}

// TestPCROutsidePolicyIsRefused: a joiner whose quote shows a PCR value
// the cluster's policy does not allow is refused at approval: no learner
// is added, no answer is stored or served, the refusal is audited.
func TestPCROutsidePolicyIsRefused(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)
	f.policy.PCRs[7] = [][]byte{bytes.Repeat([]byte{0xaa}, 32)} // another Secure Boot state

	_, _, sub := f.submit(t, tpm, "n2")
	_, err := f.svc.Approve(ctx, sub.ID, "admin:test")
	wantCode(t, err, "join_policy_refused")
	if !strings.Contains(err.Error(), "pcr_not_allowed") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	if l := f.member.learners(t); len(l) != 0 {
		t.Fatalf("a learner was added: %v", l)
	}
	st, err := f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StateRefused || st.Answer != nil || st.Reason != "pcr_not_allowed" {
		t.Fatalf("poll: %+v %v", st, err)
	}
	_, err = f.svc.Approve(ctx, sub.ID, "admin:test")
	wantCode(t, err, "join_not_pending")
	if !strings.Contains(f.auditText(t), `"action":"cluster_join_refused"`) {
		t.Fatal("the refusal is not audited")
	}
}

// TestUnapprovedNeverGetsTheKey: a request nobody approves is pending
// (no answer), then expired (no answer), and cannot be approved late;
// a refused one gets no answer either.
func TestUnapprovedNeverGetsTheKey(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)

	_, _, sub := f.submit(t, tpm, "n2")
	_, _, sub2 := f.submit(t, tpm, "n3")
	st, err := f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StatePending || st.Answer != nil {
		t.Fatalf("pending: %+v %v", st, err)
	}
	if _, err := f.svc.Refuse(ctx, sub2.ID, "admin:test", ""); err != nil {
		t.Fatal(err)
	}
	st, err = f.svc.Poll(ctx, sub2.ID, sub2.PollSecret)
	if err != nil || st.State != join.StateRefused || st.Answer != nil {
		t.Fatalf("refused: %+v %v", st, err)
	}
	_, err = f.svc.Approve(ctx, sub2.ID, "admin:test")
	wantCode(t, err, "join_not_pending")

	f.now = f.now.Add(join.RequestTTL)
	st, err = f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StateExpired || st.Answer != nil {
		t.Fatalf("expired: %+v %v", st, err)
	}
	_, err = f.svc.Approve(ctx, sub.ID, "admin:test")
	wantCode(t, err, "join_expired")
	if l := f.member.learners(t); len(l) != 0 {
		t.Fatalf("learners %v", l)
	}
	text := f.auditText(t)
	if !strings.Contains(text, `"action":"cluster_join_refused"`) {
		t.Fatal("the operator's refusal is not audited")
	}
}

// TestReplayIsRefused: the same request posted again, a nonce the cluster
// never issued and an expired nonce are refused with stable codes.
func TestReplayIsRefused(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()

	req, ak0, _ := f.submit(t, tpm, "n2")
	_ = ak0.Close() // the simulator holds three objects at most
	// (Each from its own address: a request whose quote verifies takes a
	// token of its address's submission limit.)
	_, err := f.svc.Submit(ctx, req, "192.0.2.8")
	wantCode(t, err, "join_replayed")

	// A nonce of its own choosing, with a genuine quote over it.
	n := &join.Nonce{Nonce: bytes.Repeat([]byte{7}, join.NonceSize), PCRSelection: join.DefaultPCRs}
	forged, ak, err := join.Prepare(ctx, tpm, n, "n3", []string{"https://n3.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	_ = ak.Close()
	_, err = f.svc.Submit(ctx, forged, "192.0.2.9")
	wantCode(t, err, "join_nonce_invalid")

	// An issued nonce spent after its expiry.
	n, err = f.svc.IssueNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	late, ak2, err := join.Prepare(ctx, tpm, n, "n4", []string{"https://n4.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	defer ak2.Close()
	f.now = f.now.Add(join.NonceTTL)
	_, err = f.svc.Submit(ctx, late, "192.0.2.10")
	wantCode(t, err, "join_nonce_invalid")
}

// TestPollNeedsTheSecret: without the request's poll secret, a poll gets
// the same 404 as for an unknown id.
func TestPollNeedsTheSecret(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)
	_, _, sub := f.submit(t, tpm, "n2")
	if _, err := f.svc.Approve(ctx, sub.ID, "admin:test"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", strings.Repeat("0", 64), sub.PollSecret[:63], sub.ID} {
		st, err := f.svc.Poll(ctx, sub.ID, s)
		wantCode(t, err, "join_not_found")
		if st != nil {
			t.Fatal("a poll without the secret got an answer")
		}
	}
	_, err := f.svc.Poll(ctx, strings.Repeat("a", 32), sub.PollSecret)
	wantCode(t, err, "join_not_found")
}

// TestForgedEvidenceIsRefused: an AK that is not a restricted key (it
// could sign a made-up quote with TPM2_Sign), and a genuine quote
// presented with another key, are refused at submission.
func TestForgedEvidenceIsRefused(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	n, err := f.svc.IssueNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, ak, err := join.Prepare(ctx, tpm, n, "n2", []string{"https://n2.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	_ = ak.Close() // the simulator holds three objects at most

	// The quote's bytes signed by an unrestricted TPM key.
	forged := *req
	ev := *req.Evidence
	ev.AKPublic, ev.Signature = signUnrestricted(t, tpm, ev.Quote)
	forged.Evidence = &ev
	_, err = f.svc.Submit(ctx, &forged, "")
	wantCode(t, err, "join_evidence_invalid")
	if !strings.Contains(err.Error(), "bad_attestation_key") {
		t.Fatalf("%v", err)
	}

	// The genuine quote with another (genuine) AK's public area.
	other := loadAK(t, tpm)
	ev2 := *req.Evidence
	ev2.AKPublic = other.Public()
	_ = other.Close()
	forged.Evidence = &ev2
	_, err = f.svc.Submit(ctx, &forged, "")
	wantCode(t, err, "join_evidence_invalid")
	if !strings.Contains(err.Error(), "bad_signature") {
		t.Fatalf("%v", err)
	}
	// A PCR of the selection left out of the quote.
	short, ak3, err := join.Prepare(ctx, tpm, &join.Nonce{Nonce: n.Nonce, PCRSelection: []int{0}}, "n2", []string{"https://n2.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	_ = ak3.Close()
	_, err = f.svc.Submit(ctx, short, "")
	wantCode(t, err, "join_evidence_invalid")

	// None of them spent the nonce: the genuine request still goes in.
	if _, err := f.svc.Submit(ctx, req, ""); err != nil {
		t.Fatalf("the genuine request after the forgeries: %v", err)
	}
}

func signUnrestricted(t *testing.T, tpm transport.TPM, msg []byte) (pub, sig []byte) {
	t.Helper()
	tmpl := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
	key, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: key.ObjectHandle}.Execute(tpm)
	digest := sha256.Sum256(msg)
	rsp, err := tpm2.Sign{
		KeyHandle:  tpm2.AuthHandle{Handle: key.ObjectHandle, Name: key.Name, Auth: tpm2.PasswordAuth(nil)},
		Digest:     tpm2.TPM2BDigest{Buffer: digest[:]},
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	return key.OutPublic.Bytes(), tpm2.Marshal(rsp.Signature)
}

// TestBounds: the nonce route and the pending requests are bounded.
func TestBounds(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	for range join.MaxNonces {
		if _, err := f.svc.IssueNonce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.svc.IssueNonce(ctx)
	wantCode(t, err, "join_nonce_limit")
	f.now = f.now.Add(join.NonceTTL) // they expire and make room
	for i := range join.MaxPending {
		_, ak, _ := f.submitFrom(t, tpm, "n", fmt.Sprintf("192.0.2.%d", i+1))
		_ = ak.Close()
	}
	n, err := f.svc.IssueNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, ak, err := join.Prepare(ctx, tpm, n, "n", []string{"https://n.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	_, err = f.svc.Submit(ctx, req, "")
	wantCode(t, err, "join_pending_limit")
}

func marshalPKIX(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// testCA is a TPM maker's root that certifies EKs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *testCA) ekCert(t *testing.T, ek any) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "EK"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage: x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, ek, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestEKCertificateRequiredWithRoots: with TPM makers' roots configured, a
// request must carry a certificate of its EK from one of them: none, one
// from another CA, or one for another key is refused.
func TestEKCertificateRequiredWithRoots(t *testing.T) {
	maker, other := newTestCA(t, "TPM Maker Root"), newTestCA(t, "Someone Else")
	f := newFixture(t, func(o *join.Options) { o.EKRoots = maker.pool() })
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)
	ek, err := attest.ReadEKPublic(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.svc.IssueNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, ak, err := join.Prepare(ctx, tpm, n, "n2", []string{"https://n2.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()

	_, err = f.svc.Submit(ctx, req, "")
	wantCode(t, err, "join_evidence_invalid")
	if !strings.Contains(err.Error(), "no_ek_certificate") {
		t.Fatalf("%v", err)
	}
	req.EKCertificate = other.ekCert(t, ek)
	_, err = f.svc.Submit(ctx, req, "")
	wantCode(t, err, "join_evidence_invalid")
	if !strings.Contains(err.Error(), "ek_untrusted") {
		t.Fatalf("%v", err)
	}
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req.EKCertificate = maker.ekCert(t, &stranger.PublicKey)
	_, err = f.svc.Submit(ctx, req, "")
	wantCode(t, err, "join_request_invalid")

	req.EKCertificate = maker.ekCert(t, ek)
	sub, err := f.svc.Submit(ctx, req, "")
	if err != nil {
		t.Fatalf("a certified EK: %v", err)
	}
	p, err := f.svc.Approve(ctx, sub.ID, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.EKCertificate, "TPM Maker Root") {
		t.Fatalf("the operator is not shown the EK certificate: %+v", p)
	}
}

// TestNoAnswerWithoutAuditLine: when the approval cannot be audited, the
// joiner gets no answer (fail closed): the request stays pending.
func TestNoAnswerWithoutAuditLine(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)
	_, ak, sub := f.submit(t, tpm, "n2")
	_ = ak.Close()
	if err := f.log.Close(ctx); err != nil { // the audit disk is gone
		t.Fatal(err)
	}
	if _, err := f.svc.Approve(ctx, sub.ID, "admin:test"); !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("approve without an audit log: %v", err)
	}
	st, err := f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StatePending || st.Answer != nil {
		t.Fatalf("an approval that was not audited was served: %+v %v", st, err)
	}
}

// TestNoPendingRequestWithoutAuditLine: a request whose arrival cannot be
// audited is not left for an operator to approve.
func TestNoPendingRequestWithoutAuditLine(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	n, err := f.svc.IssueNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, ak, err := join.Prepare(ctx, tpm, n, "n2", []string{"https://n2.example:2380"})
	if err != nil {
		t.Fatal(err)
	}
	_ = ak.Close()
	if err := f.log.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Submit(ctx, req, ""); !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("submit without an audit log: %v", err)
	}
	list, err := f.svc.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.State == join.StatePending {
			t.Fatalf("an unaudited request waits for approval: %+v", p)
		}
	}
}

// TestTwoMembersApproveAtOnce: two members approving the same request at
// the same moment add one learner and send one answer; the other is told
// the request is not pending.
func TestTwoMembersApproveAtOnce(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)
	root2, err := enclave.NewRoot(secret.CopyBytes(f.rootKey.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	defer root2.Close()
	second, err := join.New(join.Options{DB: f.db, Audit: f.log, Root: root2, Member: f.member,
		Policy: func(context.Context) (*attest.Policy, error) { return f.policy, nil }, Clock: func() time.Time { return f.now }, AllowUnverifiedEK: true})
	if err != nil {
		t.Fatal(err)
	}
	_, ak, sub := f.submit(t, tpm, "n2")
	_ = ak.Close()
	errs := make(chan error, 2)
	for _, s := range []*join.Service{f.svc, second} {
		go func() { _, err := s.Approve(ctx, sub.ID, "admin:test"); errs <- err }()
	}
	var ok, busy int
	for range 2 {
		err := <-errs
		switch e, _ := apierr.As(err); {
		case err == nil:
			ok++
		case e != nil && e.Code == "join_not_pending":
			busy++
		default:
			t.Fatalf("approve: %v", err)
		}
	}
	if ok != 1 || busy != 1 {
		t.Fatalf("%d approvals went through, %d were turned away", ok, busy)
	}
	if l := f.member.learners(t); len(l) != 1 {
		t.Fatalf("learners %v", l)
	}
}

// stallingAuditor is the member's real audit log, except that writing the
// approval's line waits until the test lets it go (a slow audit disk).
type stallingAuditor struct {
	join.Auditor
	reached, release chan struct{}
}

func (a *stallingAuditor) Record(ctx context.Context, ev audit.Event) error {
	if ev.Action == join.ActionApproved && ev.Outcome == audit.OutcomeSuccess {
		a.reached <- struct{}{}
		<-a.release
	}
	return a.Auditor.Record(ctx, ev)
}

// TestRefusalDuringStalledApprovalStands: an approval that stalls past its
// claim while an operator refuses the request does not overwrite the
// refusal: it ends with join_not_pending and no answer is stored.
func TestRefusalDuringStalledApprovalStands(t *testing.T) {
	sa := &stallingAuditor{reached: make(chan struct{}), release: make(chan struct{})}
	f := newFixture(t, func(o *join.Options) { sa.Auditor = o.Audit; o.Audit = sa })
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)
	_, ak, sub := f.submit(t, tpm, "n2")
	_ = ak.Close()

	done := make(chan error, 1)
	go func() { _, err := f.svc.Approve(ctx, sub.ID, "admin:first"); done <- err }()
	<-sa.reached
	// While the approval claims it, the request cannot be refused.
	_, err := f.svc.Refuse(ctx, sub.ID, "admin:second", "")
	wantCode(t, err, "join_not_pending")
	f.now = f.now.Add(3 * time.Minute) // the claim runs out
	if _, err := f.svc.Refuse(ctx, sub.ID, "admin:second", "not ours"); err != nil {
		t.Fatalf("refuse after the claim ran out: %v", err)
	}
	close(sa.release)
	err = <-done
	if !errors.Is(err, join.ErrNotPending) {
		t.Fatalf("the stalled approval: %v, want join_not_pending", err)
	}
	st, err := f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StateRefused || st.Answer != nil || st.Reason != "not ours" {
		t.Fatalf("after the refusal: %+v %v", st, err)
	}
	// The learner it added, which will never get an answer, is gone.
	if l := f.member.learners(t); len(l) != 0 {
		t.Fatalf("learners %v", l)
	}
}

// TestSubmissionsLimitedPerAddress: one address (an IPv6 /64 counts as
// one) cannot fill the pending slots: its request after SubmitBurst is 429
// join_rate_limited and stores nothing, while other addresses still get
// through; requests whose quote does not verify cost nothing; a
// pending request lives 15 minutes, then frees its slot.
func TestSubmissionsLimitedPerAddress(t *testing.T) {
	f := newFixture(t)
	tpm := openSim(t)
	ctx := context.Background()
	var attacker []string // one /64
	for i := range join.SubmitBurst {
		attacker = append(attacker, fmt.Sprintf("2001:db8:1:2::%x", 0x10+i))
	}
	for _, a := range attacker {
		_, ak, sub := f.submitFrom(t, tpm, "x", a)
		_ = ak.Close()
		if want := f.now.Add(15 * time.Minute); !sub.Expires.Equal(want) {
			t.Fatalf("a pending request expires at %v, want %v", sub.Expires, want)
		}
	}
	try := func(remote string, spoil bool) error {
		n, err := f.svc.IssueNonce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req, ak, err := join.Prepare(ctx, tpm, n, "x", []string{"https://x.example:2380"})
		if err != nil {
			t.Fatal(err)
		}
		defer ak.Close()
		if spoil {
			req.Name = "other" // the quote no longer binds the request
		}
		_, err = f.svc.Submit(ctx, req, remote)
		return err
	}
	err := try("2001:db8:1:2::12", false)
	wantCode(t, err, "join_rate_limited")
	if e, _ := apierr.As(err); e.RetryAfter <= 0 {
		t.Fatalf("no Retry-After: %+v", e)
	}
	list, err := f.svc.List(ctx)
	if err != nil || len(list) != join.SubmitBurst {
		t.Fatalf("the limited request was stored: %d kept, %v", len(list), err)
	}
	// Another address is not held up; its refused attempts cost it nothing.
	for range 3 {
		wantCode(t, try("198.51.100.9", true), "join_evidence_invalid")
	}
	if err := try("198.51.100.9", false); err != nil {
		t.Fatalf("another address: %v", err)
	}
	// The pending requests expire after 15 minutes and leave room.
	f.now = f.now.Add(15 * time.Minute)
	for _, p := range mustList(t, f) {
		if p.State != join.StateExpired {
			t.Fatalf("after 15 minutes: %+v", p)
		}
	}
	if err := try("2001:db8:1:2::12", false); err != nil {
		t.Fatalf("the address after 15 minutes: %v", err)
	}
}

func mustList(t *testing.T, f *fixture) []join.Pending {
	t.Helper()
	l, err := f.svc.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestApprovalNeedsEKRootsOrOptOut: without TPM makers' roots, a member
// that was not told to accept unverified EKs approves nothing: a software
// TPM's request (here the simulator's, which has no maker certificate)
// stays pending, no learner is added, no answer is stored. With the
// explicit opt-out it is approved.
func TestApprovalNeedsEKRootsOrOptOut(t *testing.T) {
	f := newFixture(t, func(o *join.Options) { o.AllowUnverifiedEK = false })
	tpm := openSim(t)
	ctx := context.Background()
	f.policy = policyOf(t, tpm)
	_, ak, sub := f.submit(t, tpm, "n2")
	_ = ak.Close()
	_, err := f.svc.Approve(ctx, sub.ID, "admin:test")
	wantCode(t, err, "join_ek_roots_required")
	if e, _ := apierr.As(err); e.Status != 503 || !strings.Contains(e.Message, "cluster.join_ek_roots") {
		t.Fatalf("%+v", e)
	}
	st, err := f.svc.Poll(ctx, sub.ID, sub.PollSecret)
	if err != nil || st.State != join.StatePending || st.Answer != nil {
		t.Fatalf("after the refused approval: %+v %v", st, err)
	}
	if l := f.member.learners(t); len(l) != 0 {
		t.Fatalf("learners %v", l)
	}

	root2, err := enclave.NewRoot(secret.CopyBytes(f.rootKey.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	defer root2.Close()
	optedOut, err := join.New(join.Options{DB: f.db, Audit: f.log, Root: root2, Member: f.member, AllowUnverifiedEK: true,
		Policy: func(context.Context) (*attest.Policy, error) { return f.policy, nil }, Clock: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := optedOut.Approve(ctx, sub.ID, "admin:test"); err != nil || p.State != join.StateApproved {
		t.Fatalf("with cluster.join_allow_unverified_ek: %+v %v", p, err)
	}
}
