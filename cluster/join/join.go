// Package join is the attested cluster join (decisions/28, decisions/43): the
// protocol and its cryptography, with no HTTP (server/clusterapi serves it,
// cmd/keywarden's `cluster join|approve|refuse` drive it).
//
//	joiner                                   any member (admin listener)
//	  ── POST nonce ───────────────────────▶ IssueNonce: 32 random bytes, kept in the
//	                                          shared store (bucket cluster_joins), 5 min
//	  Prepare: fresh AK, EK public key,
//	  quote over the nonce of the selected
//	  PCRs, bound to (EK, name, peer URLs)
//	  ── POST request ─────────────────────▶ Submit: nonce known, unexpired, unspent (spent in
//	                                          the same transaction), quote signed by that AK,
//	                                          AK a restricted TPM key, bounds; stored pending
//	  ◀──── 202 {id, pollSecret, akName, ekFingerprint}
//	                                  operator on ANY member (admin key): Approve
//	                                          quote again against the cluster's PCR policy,
//	                                          Member.AddLearner, MakeCredential(EK, AK) → s,
//	                                          root key under AES-GCM(HKDF(s)), ciphertext stored
//	  ── GET {id} + poll secret ───────────▶ Poll: pending | approved (answer) | refused | expired
//	  Recover: ActivateCredential(EK, AK) → s → root key → cluster.Joined
//
// The root key leaves the approving member only encrypted under a secret
// that only the joining TPM can recover, and only for the attestation key
// whose quote met the policy (TPM2_ActivateCredential releases the secret
// only with an object of exactly that Name loaded beside that EK). The
// store, and so etcd, holds the ciphertext only.
package join

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/internal/apierr"
)

// Bounds and lifetimes of the protocol.
const (
	// NonceSize is the size of a join nonce.
	NonceSize = 32
	// NonceTTL is how long an issued nonce may be spent.
	NonceTTL = 5 * time.Minute
	// RequestTTL is how long a request waits for an operator, and how long
	// an approved answer may be fetched. Short, so that requests nobody
	// approves (or a stranger's) do not hold the pending slots for long.
	RequestTTL = 15 * time.Minute
	// SubmitBurst and SubmitInterval limit the requests stored per client
	// address (an IPv6 /64 counts as one): SubmitBurst at once, then one
	// per SubmitInterval. Requests refused before their quote verifies do
	// not count. One address cannot take more than a few of the
	// MaxPending slots.
	SubmitBurst    = 4
	SubmitInterval = RequestTTL / 2
	// maxTrackedAddresses bounds the limiter's memory.
	maxTrackedAddresses = 4096
	// MaxNonces bounds the unexpired nonces kept at once (the nonce route
	// takes no credential).
	MaxNonces = 64
	// MaxPending bounds the requests waiting for an operator.
	MaxPending = 16
	// MaxRequestBytes bounds a join request's body.
	MaxRequestBytes = 32 << 10
	// MaxPeerURLs bounds the peer URLs of a request.
	MaxPeerURLs = 8
	// keepAfter is how long a finished (refused, expired, approved)
	// request stays readable after it expires, before it is purged.
	keepAfter = 24 * time.Hour
)

// DefaultPCRs is the selection sent with nonces when neither a join policy
// nor tpm.pcrs names any PCR (dev mode): the firmware and boot PCRs.
var DefaultPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// Request states.
const (
	StatePending  = "pending"
	StateApproved = "approved"
	StateRefused  = "refused"
	StateExpired  = "expired"
)

// Errors: the stable codes of the wire.
var (
	ErrInvalid         = apierr.New(http.StatusBadRequest, "join_request_invalid", "the join request is malformed")
	ErrEvidenceInvalid = apierr.New(http.StatusBadRequest, "join_evidence_invalid", "the join request's quote does not verify")
	ErrNonceInvalid    = apierr.New(http.StatusConflict, "join_nonce_invalid", "the nonce was not issued by this cluster or has expired; ask for a new one")
	ErrReplayed        = apierr.New(http.StatusConflict, "join_replayed", "this nonce was already spent by a join request; a request is accepted once")
	ErrTooManyNonces   = apierr.New(http.StatusTooManyRequests, "join_nonce_limit", "too many join nonces are outstanding; retry later").WithRetry(time.Minute)
	ErrTooManyPending  = apierr.New(http.StatusTooManyRequests, "join_pending_limit", "too many join requests are waiting for an operator; approve or refuse some first").WithRetry(time.Minute)
	ErrRateLimited     = apierr.New(http.StatusTooManyRequests, "join_rate_limited", "too many join requests from this address; retry later")
	ErrTooLarge        = apierr.New(http.StatusRequestEntityTooLarge, "join_request_too_large", fmt.Sprintf("a join request is at most %d bytes", MaxRequestBytes))
	ErrNotFound        = apierr.New(http.StatusNotFound, "join_not_found", "no such join request (or the poll secret is wrong)")
	ErrNotPending      = apierr.New(http.StatusConflict, "join_not_pending", "the join request was already approved or refused")
	ErrExpired         = apierr.New(http.StatusGone, "join_expired", "the join request has expired; the node must ask again")
	ErrPolicyRefused   = apierr.New(http.StatusForbidden, "join_policy_refused", "the joining node's quote does not meet the cluster's PCR policy; the request was refused and nothing was sent")
	ErrNoPolicy        = apierr.New(http.StatusServiceUnavailable, "join_policy_unavailable", "this member has no join policy (cluster.join_policy); it cannot approve joins")
	ErrEKRootsRequired = apierr.New(http.StatusServiceUnavailable, "join_ek_roots_required", "this member approves joins only from TPMs whose EK certificate chains to cluster.join_ek_roots, which is not set (cluster.join_allow_unverified_ek: true approves on the EK fingerprint alone)")
	ErrMemberAdd       = apierr.New(http.StatusServiceUnavailable, "join_member_add_failed", "the cluster did not add the member; nothing was sent; retry").WithRetry(5 * time.Second)
	ErrNotMember       = apierr.New(http.StatusServiceUnavailable, "join_unavailable", "this node is not a member of a cluster; joins are served by members")
)

// Nonce is the answer of the nonce route.
type Nonce struct {
	Nonce        []byte    `json:"nonce"`
	PCRSelection []int     `json:"pcrSelection"`
	Expires      time.Time `json:"expires"`
}

// Request is what a joining node submits.
type Request struct {
	// Nonce is the nonce the cluster issued.
	Nonce []byte `json:"nonce"`
	// Name is the member name the node asks for.
	Name string `json:"name"`
	// PeerURLs are the https URLs its peers reach it at.
	PeerURLs []string `json:"peerURLs"`
	// EKPublic is the public key (SubjectPublicKeyInfo DER) of the TPM's
	// standard ECC P-256 endorsement key.
	EKPublic []byte `json:"ekPublic"`
	// EKCertificate is its certificate (DER) when the TPM has one.
	EKCertificate []byte `json:"ekCertificate,omitempty"`
	// Evidence is a quote of the selected PCRs with a fresh attestation
	// key over the nonce, bound to [Binding] of the fields above.
	Evidence *attest.Evidence `json:"evidence"`
}

// Submitted is the answer to a request (202).
type Submitted struct {
	ID            string    `json:"id"`
	PollSecret    string    `json:"pollSecret"`
	AKName        string    `json:"akName"`
	EKFingerprint string    `json:"ekFingerprint"`
	Expires       time.Time `json:"expires"`
}

// Answer is what an approved joiner receives: nothing in it is secret
// (the root key is encrypted to a secret only the joiner's TPM recovers).
type Answer struct {
	ClusterID      cluster.ID              `json:"clusterId"` // hexadecimal, as GET /v1/admin/cluster shows ids
	MemberID       cluster.ID              `json:"memberId"`
	InitialCluster string                  `json:"initialCluster"`
	Credential     *attest.EnrollChallenge `json:"credential"`
	Nonce          []byte                  `json:"nonce"`
	Ciphertext     []byte                  `json:"ciphertext"`
}

// Status is the answer of the poll route.
type Status struct {
	ID      string    `json:"id"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Expires time.Time `json:"expires"`
	Answer  *Answer   `json:"answer,omitempty"`
}

// Pending is the operator's view of a request (admin routes).
type Pending struct {
	ID            string            `json:"id"`
	State         string            `json:"state"`
	Reason        string            `json:"reason,omitempty"`
	Name          string            `json:"name"`
	PeerURLs      []string          `json:"peerURLs"`
	AKName        string            `json:"akName"`
	EKFingerprint string            `json:"ekFingerprint"`
	EKCertificate string            `json:"ekCertificate,omitempty"` // subject and issuer, when one came
	PCRs          map[string]string `json:"pcrs"`
	Remote        string            `json:"remote,omitempty"`
	Created       time.Time         `json:"created"`
	Expires       time.Time         `json:"expires"`
	MemberID      cluster.ID        `json:"memberId,omitempty"` // hexadecimal
}

// Binding is what a join quote binds (its [attest.QuoteOptions.BoundKey]):
// SHA-256 over a label and the length-prefixed EK public key, name and
// peer URLs, so that a quote cannot be carried over to another EK, name or
// peer address.
func Binding(ekPublic []byte, name string, peerURLs []string) []byte {
	h := sha256.New()
	h.Write([]byte("keywarden cluster join request v1"))
	lp(h, ekPublic)
	lp(h, []byte(name))
	for _, u := range peerURLs {
		lp(h, []byte(u))
	}
	return h.Sum(nil)
}

type writer interface{ Write([]byte) (int, error) }

func lp(w writer, b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	w.Write(n[:])
	w.Write(b)
}

// keyLabel is the HKDF info and the start of the additional data of the
// encrypted root key.
const keyLabel = "keywarden cluster join root key v1"

// rootKeyAEAD is AES-256-GCM under HKDF-SHA256(credential secret).
func rootKeyAEAD(credentialSecret []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, credentialSecret, nil, keyLabel, 32)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// additionalData binds the encrypted root key to the cluster, the request
// and the attestation key it was made for.
func additionalData(clusterID uint64, requestID string, akName []byte) []byte {
	var b bytes.Buffer
	b.WriteString(keyLabel)
	_ = binary.Write(&b, binary.BigEndian, clusterID)
	lp(&b, []byte(requestID))
	lp(&b, akName)
	return b.Bytes()
}

// parseEK reads the EK public key a request carries: ECC P-256 or
// RSA-2048, the keys MakeCredential can address.
func parseEK(der []byte) (crypto.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, ErrInvalid.WithMessage("ekPublic is not a SubjectPublicKeyInfo")
	}
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return k, nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() == 2048 {
			return k, nil
		}
	}
	return nil, ErrInvalid.WithMessage("ekPublic must be an ECC P-256 or RSA-2048 endorsement key")
}

// checkShape validates a request's plain fields.
func checkShape(r *Request) error {
	if r == nil {
		return ErrInvalid
	}
	if len(r.Nonce) != NonceSize {
		return ErrInvalid.WithMessage("nonce must be the %d bytes the cluster issued", NonceSize)
	}
	if err := ValidName(r.Name); err != nil {
		return err
	}
	if len(r.PeerURLs) == 0 || len(r.PeerURLs) > MaxPeerURLs {
		return ErrInvalid.WithMessage("peerURLs: 1 to %d https URLs", MaxPeerURLs)
	}
	for _, p := range r.PeerURLs {
		if err := ValidPeerURL(p); err != nil {
			return err
		}
	}
	if r.Evidence == nil {
		return ErrInvalid.WithMessage("evidence is required")
	}
	if len(r.Evidence.EventLog) > 0 {
		return ErrInvalid.WithMessage("evidence.eventLog is not taken with a join request")
	}
	return nil
}

// ValidName checks a member name: 1 to 63 characters, none of '=', ',',
// '/', spaces or control characters (etcd's initial-cluster syntax).
func ValidName(name string) error {
	if name == "" || len(name) > 63 {
		return ErrInvalid.WithMessage("name must be 1 to 63 characters")
	}
	for _, c := range name {
		if c <= 0x20 || c == 0x7f || c == '=' || c == ',' || c == '/' || c > 0x7e {
			return ErrInvalid.WithMessage("name must be printable ASCII without '=', ',', '/' or spaces")
		}
	}
	return nil
}

// ValidPeerURL checks a peer URL: https://host:port, nothing else.
func ValidPeerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil || len(s) > 256 || strings.ContainsAny(s, ", \t\n") {
		return ErrInvalid.WithMessage("peer URLs must be https://host:port (peers speak mutual TLS)")
	}
	return nil
}

// evidenceError turns a verifier refusal into the wire error, naming the
// verifier's reason (a stable string) and detail (public).
func evidenceError(err error) error {
	if ve, ok := err.(*attest.VerifyError); ok {
		return ErrEvidenceInvalid.WithMessage("the quote does not verify: %s", ve.Reason).Wrap(err)
	}
	return ErrEvidenceInvalid.Wrap(err)
}

func hexName(b []byte) string { return hex.EncodeToString(b) }

func ctEqualHex(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
