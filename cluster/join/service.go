package join

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/ratelimit"
	"github.com/keywarden/keywarden/store"
)

// Audit actions of the join, on the member's side (the joiner writes
// ActionJoined in its own log).
const (
	ActionRequested = "cluster_join_requested"
	ActionApproved  = "cluster_join_approved"
	ActionRefused   = "cluster_join_refused"
	ActionJoined    = "cluster_joined"
)

// Auditor is the audit log (internal/audit.Log).
type Auditor interface {
	Record(ctx context.Context, ev audit.Event) error
	Refusal(ctx context.Context, ev audit.Event)
}

// Options configure a [Service], the member's side of the join.
type Options struct {
	// DB is the shared store (bucket cluster_joins). Required.
	DB *store.DB
	// Audit is the member's audit log. Required.
	Audit Auditor
	// Root is the unsealed root key, sent to approved joiners. Required.
	Root *enclave.Root
	// Member adds an approved joiner to the etcd cluster. Nil: this node
	// is not a cluster member (every route answers 503 join_unavailable).
	Member cluster.Member
	// Policy returns the cluster's PCR policy a joiner's quote must meet
	// at approval (cluster.join_policy, or in dev mode this member's own
	// PCR values). Nil or an error: approvals answer 503
	// join_policy_unavailable.
	Policy func(ctx context.Context) (*attest.Policy, error)
	// PCRs is the selection sent with nonces (the policy's PCRs, else
	// tpm.pcrs); empty: [DefaultPCRs].
	PCRs []int
	// EKRoots, when set, are the TPM makers' root certificates
	// (cluster.join_ek_roots): a request must then carry an EK certificate
	// for its EK that chains to one of them. Nil: the EK is identified by
	// its fingerprint only, which the operator compares out of band.
	EKRoots *x509.CertPool
	// AllowUnverifiedEK lets Approve work without EKRoots (dev mode, or
	// cluster.join_allow_unverified_ek): a joiner's EK is then whatever
	// it claims. False and no EKRoots: every approval answers 503
	// join_ek_roots_required.
	AllowUnverifiedEK bool
	// Clock is the time source; nil: time.Now.
	Clock func() time.Time
	// Rand is the randomness source; nil: crypto/rand.
	Rand io.Reader
}

// approvingClaim is how long one member's claim to approve a request holds
// (a member that died while approving leaves its claim behind).
const approvingClaim = 2 * time.Minute

// addLearnerTimeout bounds the cluster's answer to a member addition
// (well inside approvingClaim).
const addLearnerTimeout = 30 * time.Second

// Service is the member's side of the join.
type Service struct {
	o       Options
	submits *ratelimit.Limiter // stored requests per client address
}

// New checks the options and makes the service.
func New(o Options) (*Service, error) {
	if o.DB == nil || o.Audit == nil || o.Root == nil {
		return nil, errors.New("join: DB, Audit and Root are required")
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if len(o.PCRs) == 0 {
		o.PCRs = DefaultPCRs
	}
	o.PCRs = slices.Clone(o.PCRs)
	slices.Sort(o.PCRs)
	o.PCRs = slices.Compact(o.PCRs)
	for _, i := range o.PCRs {
		if i < 0 || i > attest.MaxPCR {
			return nil, fmt.Errorf("join: PCR %d outside 0..%d", i, attest.MaxPCR)
		}
	}
	return &Service{o: o, submits: ratelimit.New(SubmitBurst, SubmitInterval, maxTrackedAddresses)}, nil
}

// nonceRecord is a nonce in the store.
type nonceRecord struct {
	Expires time.Time `json:"expires"`
	Spent   bool      `json:"spent,omitempty"`
}

// record is a request in the store.
type record struct {
	ID            string            `json:"id"`
	PollHash      []byte            `json:"pollHash"` // SHA-256 of the poll secret
	State         string            `json:"state"`
	Reason        string            `json:"reason,omitempty"`
	Nonce         []byte            `json:"nonce"`
	Name          string            `json:"name"`
	PeerURLs      []string          `json:"peerURLs"`
	EKPublic      []byte            `json:"ekPublic"`
	EKCertificate []byte            `json:"ekCertificate,omitempty"`
	Evidence      *attest.Evidence  `json:"evidence"`
	AKName        string            `json:"akName"`
	EKFingerprint string            `json:"ekFingerprint"`
	PCRs          map[string]string `json:"pcrs"`
	Remote        string            `json:"remote,omitempty"`
	Created       time.Time         `json:"created"`
	Expires       time.Time         `json:"expires"`
	Approving     time.Time         `json:"approving,omitzero"`   // when a member claimed it for approval
	ClaimToken    string            `json:"claimToken,omitempty"` // which approval holds the claim
	Answer        *Answer           `json:"answer,omitempty"`
}

func nonceKey(n []byte) []byte { return store.Key("n", hex.EncodeToString(n)) }
func requestKey(id string) []byte {
	return store.Key("r", id)
}

// state is the record's state at now (a pending request past its expiry
// is expired).
func (r *record) state(now time.Time) string {
	if r.State == StatePending && !now.Before(r.Expires) {
		return StateExpired
	}
	if r.State == StateApproved && !now.Before(r.Expires) {
		return StateExpired
	}
	return r.State
}

func (s *Service) available() error {
	if s.o.Member == nil {
		return ErrNotMember
	}
	return nil
}

// IssueNonce makes a nonce, keeps it in the shared store (any member can
// take the request that spends it) and returns it with the PCR selection
// the quote must cover. At most [MaxNonces] unexpired nonces are kept.
func (s *Service) IssueNonce(ctx context.Context) (*Nonce, error) {
	if err := s.available(); err != nil {
		return nil, err
	}
	n := make([]byte, NonceSize)
	if _, err := io.ReadFull(s.o.Rand, n); err != nil {
		return nil, err
	}
	now := s.o.Clock()
	rec := nonceRecord{Expires: now.Add(NonceTTL).UTC()}
	b, _ := json.Marshal(rec)
	err := s.o.DB.Update(ctx, func(tx *store.Tx) error {
		live := 0
		var stale [][]byte
		if err := tx.ForEach(store.BucketClusterJoins, store.Prefix("n"), func(k, v []byte) error {
			var r nonceRecord
			if json.Unmarshal(v, &r) != nil || !now.Before(r.Expires) {
				stale = append(stale, slices.Clone(k))
			} else {
				live++
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range stale {
			if err := tx.Delete(store.BucketClusterJoins, k); err != nil {
				return err
			}
		}
		if live >= MaxNonces {
			return ErrTooManyNonces
		}
		return tx.Put(store.BucketClusterJoins, nonceKey(n), b)
	})
	if err != nil {
		return nil, err
	}
	return &Nonce{Nonce: n, PCRSelection: slices.Clone(s.o.PCRs), Expires: rec.Expires}, nil
}

// Submit takes a join request: it checks the request's shape, verifies the
// quote (signed by the AK it carries, the AK a restricted TPM key, fresh
// for the nonce, bound to the EK, name and peer URLs, covering the PCR
// selection) and, in one transaction, spends the nonce (known, unexpired,
// unspent) and stores the request as pending. remote is the client's
// address, for the operator and the audit line.
func (s *Service) Submit(ctx context.Context, req *Request, remote string) (*Submitted, error) {
	if err := s.available(); err != nil {
		return nil, err
	}
	refused := func(err error) (*Submitted, error) {
		code := "join_request_invalid"
		if e, ok := apierr.As(err); ok {
			code = e.Code
		}
		s.o.Audit.Refusal(ctx, audit.Event{Action: ActionRequested, Outcome: audit.OutcomeRefused, Reason: code, Remote: remote, RequestID: audit.RequestIDFrom(ctx)})
		return nil, err
	}
	if err := checkShape(req); err != nil {
		return refused(err)
	}
	ek, err := parseEK(req.EKPublic)
	if err != nil {
		return refused(err)
	}
	fp, err := attest.EKFingerprint(ek)
	if err != nil {
		return refused(ErrInvalid.Wrap(err))
	}
	var certText string
	if len(req.EKCertificate) > 0 {
		c, err := x509.ParseCertificate(req.EKCertificate)
		if err != nil {
			return refused(ErrInvalid.WithMessage("ekCertificate is not a DER certificate"))
		}
		der, err := x509.MarshalPKIXPublicKey(c.PublicKey)
		if err != nil || string(der) != string(req.EKPublic) {
			return refused(ErrInvalid.WithMessage("ekCertificate certifies another key than ekPublic"))
		}
		certText = "subject " + c.Subject.String() + ", issuer " + c.Issuer.String()
	}
	facts, err := s.verify(req, nil)
	if err != nil {
		return refused(err)
	}
	// A replay, or a nonce this cluster never issued, is answered as such
	// without spending the address's allowance (the transaction below
	// checks again).
	if err := s.nonceUsable(ctx, req.Nonce); err != nil {
		return refused(err)
	}
	// A request whose quote verifies takes a token of its address (in one
	// step, so that requests sent at once cannot all pass a check first).
	if ok, wait := s.submits.Take(ratelimit.AddrKey(remote), s.o.Clock()); !ok {
		return refused(ErrRateLimited.WithRetry(wait))
	}
	id, secretHex, pollHash, err := s.newIDs()
	if err != nil {
		return nil, err
	}
	now := s.o.Clock()
	rec := &record{
		ID: id, PollHash: pollHash, State: StatePending,
		Nonce: req.Nonce, Name: req.Name, PeerURLs: req.PeerURLs,
		EKPublic: req.EKPublic, EKCertificate: req.EKCertificate, Evidence: req.Evidence,
		AKName: hexName(facts.AKName), EKFingerprint: fp, PCRs: hexPCRs(facts.PCRs),
		Remote: remote, Created: now.UTC(), Expires: now.Add(RequestTTL).UTC(),
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	err = s.o.DB.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.Get(store.BucketClusterJoins, nonceKey(req.Nonce))
		if errors.Is(err, store.ErrNotFound) {
			return ErrNonceInvalid
		} else if err != nil {
			return err
		}
		var n nonceRecord
		if err := json.Unmarshal(v, &n); err != nil {
			return err
		}
		if n.Spent {
			return ErrReplayed
		}
		if !now.Before(n.Expires) {
			return ErrNonceInvalid
		}
		pending, err := s.purgeAndCount(tx, now)
		if err != nil {
			return err
		}
		if pending >= MaxPending {
			return ErrTooManyPending
		}
		n.Spent = true
		nb, _ := json.Marshal(n)
		if err := tx.Put(store.BucketClusterJoins, nonceKey(req.Nonce), nb); err != nil {
			return err
		}
		return tx.Put(store.BucketClusterJoins, requestKey(id), b)
	})
	if err != nil {
		return refused(err)
	}
	if err := s.o.Audit.Record(ctx, audit.Event{
		Action: ActionRequested, Outcome: audit.OutcomeSuccess, Remote: remote, RequestID: audit.RequestIDFrom(ctx),
		Fields: map[string]string{"join_id": id, "name": req.Name, "ak_name": rec.AKName, "ek_fingerprint": fp, "ek_certificate": certText},
	}); err != nil {
		// No operator may approve what the log does not show.
		if _, terr := s.transition(context.WithoutCancel(ctx), id, func(r *record) error {
			r.State, r.Reason = StateRefused, "audit_unavailable"
			return nil
		}); terr != nil {
			return nil, errors.Join(err, terr)
		}
		return nil, err
	}
	return &Submitted{ID: id, PollSecret: secretHex, AKName: rec.AKName, EKFingerprint: fp, Expires: rec.Expires}, nil
}

// purgeAndCount deletes finished requests kept past keepAfter and counts
// the pending ones.
func (s *Service) purgeAndCount(tx *store.Tx, now time.Time) (int, error) {
	pending := 0
	var stale [][]byte
	err := tx.ForEach(store.BucketClusterJoins, store.Prefix("r"), func(k, v []byte) error {
		var r record
		if json.Unmarshal(v, &r) != nil {
			return nil
		}
		switch {
		case r.state(now) == StatePending:
			pending++
		case now.After(r.Expires.Add(keepAfter)):
			stale = append(stale, slices.Clone(k))
		}
		return nil
	})
	for _, k := range stale {
		if err := tx.Delete(store.BucketClusterJoins, k); err != nil {
			return 0, err
		}
	}
	return pending, err
}

// verify checks a request's quote. With policy nil (at submission) it
// checks everything but the PCR values: the quote must cover every PCR of
// the selection, whatever their values. With the cluster's policy (at
// approval) the values must be within it too.
func (s *Service) verify(req *Request, policy *attest.Policy) (*attest.Facts, error) {
	if policy == nil {
		values := make(map[int][]byte, len(s.o.PCRs))
		for _, i := range s.o.PCRs {
			v, ok := req.Evidence.PCRs[i]
			if !ok {
				return nil, evidenceError(&attest.VerifyError{Reason: attest.ErrPCRNotQuoted.Reason, Detail: fmt.Sprintf("PCR %d of the selection is not quoted", i)})
			}
			values[i] = v
		}
		p, err := attest.PolicyFromPCRs(values)
		if err != nil {
			return nil, evidenceError(err)
		}
		policy = p
	}
	ev := *req.Evidence
	// The EK certificate that counts is the one for the request's EK
	// (Submit checked that it certifies ekPublic), not any the evidence lists.
	ev.EKCertificates = nil
	if len(req.EKCertificate) > 0 {
		ev.EKCertificates = [][]byte{req.EKCertificate}
	}
	facts, err := attest.Verify(&ev, attest.VerifyOptions{
		Nonce:    req.Nonce,
		BoundKey: Binding(req.EKPublic, req.Name, req.PeerURLs),
		Policy:   policy,
		EKRoots:  s.o.EKRoots,
		Now:      s.o.Clock(),
	})
	if err != nil {
		return nil, evidenceError(err)
	}
	return facts, nil
}

// newIDs makes a request id and its poll secret.
func (s *Service) newIDs() (id, pollSecret string, pollHash []byte, err error) {
	b := make([]byte, 16+32)
	if _, err := io.ReadFull(s.o.Rand, b); err != nil {
		return "", "", nil, err
	}
	id = hex.EncodeToString(b[:16])
	pollSecret = hex.EncodeToString(b[16:])
	h := sha256.Sum256([]byte(pollSecret))
	return id, pollSecret, h[:], nil
}

func hexPCRs(m map[int][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for i, v := range m {
		out[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	return out
}

func (s *Service) load(ctx context.Context, id string) (*record, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	var rec record
	err := s.o.DB.View(ctx, func(tx *store.Tx) error {
		v, err := tx.Get(store.BucketClusterJoins, requestKey(id))
		if errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// Poll answers the holder of a request's poll secret with its state, and
// once approved with the answer. A wrong secret is the same 404 as an
// unknown id.
func (s *Service) Poll(ctx context.Context, id, pollSecret string) (*Status, error) {
	rec, err := s.load(ctx, id)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(pollSecret))
	if pollSecret == "" || !ctEqualHex(hex.EncodeToString(h[:]), hex.EncodeToString(rec.PollHash)) {
		return nil, ErrNotFound
	}
	st := &Status{ID: rec.ID, State: rec.state(s.o.Clock()), Reason: rec.Reason, Expires: rec.Expires}
	if st.State == StateApproved {
		st.Answer = rec.Answer
	}
	return st, nil
}

func (r *record) view(now time.Time) Pending {
	p := Pending{
		ID: r.ID, State: r.state(now), Reason: r.Reason, Name: r.Name, PeerURLs: r.PeerURLs,
		AKName: r.AKName, EKFingerprint: r.EKFingerprint, PCRs: r.PCRs, Remote: r.Remote,
		Created: r.Created, Expires: r.Expires,
	}
	if c, err := x509.ParseCertificate(r.EKCertificate); err == nil {
		p.EKCertificate = "subject " + c.Subject.String() + ", issuer " + c.Issuer.String()
	}
	if r.Answer != nil {
		p.MemberID = r.Answer.MemberID
	}
	return p
}

// Get is the operator's view of one request.
func (s *Service) Get(ctx context.Context, id string) (*Pending, error) {
	rec, err := s.load(ctx, id)
	if err != nil {
		return nil, err
	}
	p := rec.view(s.o.Clock())
	return &p, nil
}

// List is the operator's view of every request kept, oldest first.
func (s *Service) List(ctx context.Context) ([]Pending, error) {
	now := s.o.Clock()
	out := []Pending{}
	err := s.o.DB.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketClusterJoins, store.Prefix("r"), func(_, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r.view(now))
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Pending) int { return a.Created.Compare(b.Created) })
	return out, err
}

// transition moves a request from pending, checking it is still pending
// and unexpired; fn edits the record inside the transaction.
func (s *Service) transition(ctx context.Context, id string, fn func(r *record) error) (*record, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	var out record
	err := s.o.DB.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.Get(store.BucketClusterJoins, requestKey(id))
		if errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if err := fn(&r); err != nil {
			return err
		}
		b, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		out = r
		return tx.Put(store.BucketClusterJoins, requestKey(id), b)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (s *Service) mustBePending(r *record) error {
	switch r.state(s.o.Clock()) {
	case StatePending:
		if !r.Approving.IsZero() && s.o.Clock().Sub(r.Approving) < approvingClaim {
			return ErrNotPending.WithMessage("another member is approving this request now")
		}
		return nil
	case StateExpired:
		return ErrExpired
	default:
		return ErrNotPending
	}
}

// Refuse refuses a pending request (the operator's `cluster refuse`).
func (s *Service) Refuse(ctx context.Context, id, actor, reason string) (*Pending, error) {
	if reason == "" {
		reason = "refused_by_operator"
	}
	rec, err := s.transition(ctx, id, func(r *record) error {
		if err := s.mustBePending(r); err != nil {
			return err
		}
		r.State, r.Reason = StateRefused, reason
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.o.Audit.Record(ctx, audit.Event{
		Action: ActionRefused, Outcome: audit.OutcomeSuccess, Actor: actor, Reason: reason, RequestID: audit.RequestIDFrom(ctx),
		Fields: map[string]string{"join_id": id, "name": rec.Name, "ak_name": rec.AKName, "ek_fingerprint": rec.EKFingerprint},
	}); err != nil {
		return nil, err
	}
	p := rec.view(s.o.Clock())
	return &p, nil
}

// Approve approves a pending request: it verifies the quote again, now
// against the cluster's PCR policy (a quote outside it refuses the
// request, audited, and nothing is sent), adds the joiner as a learner,
// and encrypts the root key so that only the joiner's TPM recovers it:
// MakeCredential to its EK for its AK's Name gives a secret; the root key
// is sealed with AES-256-GCM under HKDF-SHA256(secret), the additional
// data binding the cluster id, the request id and the AK Name. The store
// keeps the ciphertext only.
func (s *Service) Approve(ctx context.Context, id, actor string) (*Pending, error) {
	if err := s.available(); err != nil {
		return nil, err
	}
	if s.o.EKRoots == nil && !s.o.AllowUnverifiedEK {
		// A software "TPM" passes every other check: its AK's attributes
		// and its PCR values are its own claims, and the credential would
		// go to an EK its maker holds.
		return nil, ErrEKRootsRequired
	}
	if s.o.Policy == nil {
		return nil, ErrNoPolicy
	}
	policy, err := s.o.Policy(ctx)
	if err != nil || policy == nil {
		return nil, ErrNoPolicy.Wrap(err)
	}
	// Claim the request, so that two members approving at once do not
	// both add a learner. The claim carries a token of this approval: its
	// later steps change the request only while this approval still holds
	// it (a claim that ran out lets an operator refuse the request, or
	// another approval claim it, meanwhile).
	tb := make([]byte, 16)
	if _, err := io.ReadFull(s.o.Rand, tb); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(tb)
	rec, err := s.transition(ctx, id, func(r *record) error {
		if err := s.mustBePending(r); err != nil {
			return err
		}
		r.Approving, r.ClaimToken = s.o.Clock().UTC(), token
		return nil
	})
	if err != nil {
		return nil, err
	}
	stillClaimed := func(r *record) error {
		if r.State != StatePending || r.ClaimToken != token {
			return ErrNotPending.WithMessage("the join request was refused, or claimed by another approval, while this approval was under way; nothing was sent")
		}
		return nil
	}
	release := func() {
		_, _ = s.transition(context.WithoutCancel(ctx), id, func(r *record) error {
			if err := stillClaimed(r); err != nil {
				return err
			}
			r.Approving, r.ClaimToken = time.Time{}, ""
			return nil
		})
	}
	req := &Request{Nonce: rec.Nonce, Name: rec.Name, PeerURLs: rec.PeerURLs, EKPublic: rec.EKPublic, EKCertificate: rec.EKCertificate, Evidence: rec.Evidence}
	if _, err := s.verify(req, policy); err != nil {
		reason := "pcr_policy"
		if ve, ok := errors.Unwrap(err).(*attest.VerifyError); ok {
			reason = string(ve.Reason)
		}
		if _, terr := s.transition(context.WithoutCancel(ctx), id, func(r *record) error {
			if err := stillClaimed(r); err != nil {
				return err
			}
			r.Approving, r.ClaimToken, r.State, r.Reason = time.Time{}, "", StateRefused, reason
			return nil
		}); terr != nil {
			return nil, terr
		}
		if aerr := s.o.Audit.Record(ctx, audit.Event{
			Action: ActionRefused, Outcome: audit.OutcomeRefused, Actor: actor, Reason: reason, RequestID: audit.RequestIDFrom(ctx),
			Fields: map[string]string{"join_id": id, "name": rec.Name, "ak_name": rec.AKName, "ek_fingerprint": rec.EKFingerprint},
		}); aerr != nil {
			return nil, aerr
		}
		var detail string
		if e, ok := apierr.As(err); ok {
			if ve, ok := e.Cause.(*attest.VerifyError); ok {
				detail = ve.Detail
			}
		}
		return nil, ErrPolicyRefused.WithMessage("%s (%s: %s)", ErrPolicyRefused.Message, reason, detail)
	}
	ek, err := parseEK(rec.EKPublic)
	if err != nil {
		release()
		return nil, err
	}
	ch, credSecret, err := attest.MakeEnrollChallenge(s.o.Rand, ek, rec.Evidence.AKPublic)
	if err != nil {
		release()
		return nil, err
	}
	defer credSecret.Wipe()
	aead, err := rootKeyAEAD(credSecret.Reveal())
	if err != nil {
		release()
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(s.o.Rand, nonce); err != nil {
		release()
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, addLearnerTimeout)
	memberID, initial, err := s.o.Member.AddLearner(actx, rec.Name, rec.PeerURLs)
	cancel()
	if err != nil {
		release()
		return nil, ErrMemberAdd.Wrap(err)
	}
	clusterID := s.o.Member.ClusterID()
	akName, _ := hex.DecodeString(rec.AKName)
	ct, err := s.o.Root.SealRootKeyWith(aead, nonce, additionalData(clusterID, id, akName))
	if err != nil {
		release()
		return nil, err
	}
	ans := &Answer{ClusterID: cluster.ID(clusterID), MemberID: cluster.ID(memberID), InitialCluster: initial, Credential: ch, Nonce: nonce, Ciphertext: ct}
	// The line is durable before the answer can be fetched: an approval
	// that cannot be audited sends nothing.
	if err := s.o.Audit.Record(ctx, audit.Event{
		Action: ActionApproved, Outcome: audit.OutcomeSuccess, Actor: actor, RequestID: audit.RequestIDFrom(ctx),
		Fields: map[string]string{
			"join_id": id, "name": rec.Name, "ak_name": rec.AKName, "ek_fingerprint": rec.EKFingerprint,
			"member_id": strconv.FormatUint(memberID, 16), "cluster_id": strconv.FormatUint(clusterID, 16),
		},
	}); err != nil {
		release()
		return nil, err
	}
	// Only if this approval still holds the request: an operator's refusal
	// (or another approval) that came in while this one stalled past its
	// claim stands, and no answer is stored.
	rec, err = s.transition(context.WithoutCancel(ctx), id, func(r *record) error {
		if err := stillClaimed(r); err != nil {
			return err
		}
		r.Approving, r.ClaimToken, r.State, r.Answer = time.Time{}, "", StateApproved, ans
		r.Expires = s.o.Clock().Add(RequestTTL).UTC()
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNotPending) {
			// The learner this approval added will never get its answer.
			note := "the answer was not stored; the learner was removed"
			if rerr := s.removeLearner(context.WithoutCancel(ctx), memberID); rerr != nil {
				note = "the answer was not stored; remove the learner with `keywarden cluster remove`"
			}
			s.o.Audit.Refusal(ctx, audit.Event{
				Action: ActionApproved, Outcome: audit.OutcomeRefused, Actor: actor, Reason: "join_not_pending", RequestID: audit.RequestIDFrom(ctx),
				Fields: map[string]string{"join_id": id, "member_id": strconv.FormatUint(memberID, 16), "note": note},
			})
		}
		return nil, err
	}
	p := rec.view(s.o.Clock())
	return &p, nil
}

// learnerRemover is a [cluster.Member] that can also remove a member
// (cluster.Embedded).
type learnerRemover interface {
	Remove(ctx context.Context, id cluster.ID) (cluster.MemberInfo, error)
}

var _ learnerRemover = (*cluster.Embedded)(nil)

// removeLearner removes the learner an approval added when the approval
// could not store its answer; an error when the member cannot.
func (s *Service) removeLearner(ctx context.Context, memberID uint64) error {
	r, ok := s.o.Member.(learnerRemover)
	if !ok {
		return errors.New("join: this member cannot remove members")
	}
	ctx, cancel := context.WithTimeout(ctx, addLearnerTimeout)
	defer cancel()
	_, err := r.Remove(ctx, cluster.ID(memberID))
	return err
}

// nonceUsable reports ErrReplayed for a spent nonce and ErrNonceInvalid
// for one this cluster did not issue or that expired.
func (s *Service) nonceUsable(ctx context.Context, nonce []byte) error {
	var n nonceRecord
	err := s.o.DB.View(ctx, func(tx *store.Tx) error {
		v, err := tx.Get(store.BucketClusterJoins, nonceKey(nonce))
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &n)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ErrNonceInvalid
	case err != nil:
		return err
	case n.Spent:
		return ErrReplayed
	case !s.o.Clock().Before(n.Expires):
		return ErrNonceInvalid
	}
	return nil
}
