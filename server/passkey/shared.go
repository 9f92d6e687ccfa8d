package passkey

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/store"
)

// State that says yes or no lives in a store.Ephemeral (decisions/46):
//
//	pk/c/<kind>/<SHA-256(ceremony id)>   an open ceremony (take-once), sealed
//	pk/p/<SHA-256(ceremony id)>          a step-up proof (take-once), sealed
//	pk/u/<SHA-256(owner)>                the owner's failure budget (leaky counter)
//
// On a cluster (etcd backend) that is the store's shared Ephemeral, so a
// ceremony begun on one node finishes on any other, exactly once, and a
// budget spent anywhere counts everywhere. On one node (bbolt) each lives in
// the process's memory, bounded as before. On a cluster the ceremony id and
// the owner are hashed into the key: a reader of etcd cannot name (and so
// finish or spoil) a ceremony, or tell whose budget it reads. The values
// name users and credentials: on a cluster they are sealed with the
// "ephemeral state" subkey, bound to their key. In memory nothing leaves
// the process: keys are the ids and owners themselves, and ceremonies and
// proofs are kept as Go values, neither encoded nor sealed.

// ephemerals are the three stores of the service (one shared one on a
// cluster).
type ephemerals struct {
	ceremonies store.Ephemeral
	proofs     store.Ephemeral
	budgets    store.Ephemeral
	seal       cipher.AEAD // nil: values stay in memory, unsealed
}

func newEphemerals(db *store.DB, root *enclave.Root, o Options) (ephemerals, error) {
	if shared, ok := db.SharedEphemeral(); ok {
		k := root.Subkey(enclave.SubkeyEphemeralState)
		block, err := aes.NewCipher(k.Reveal())
		k.Wipe()
		if err != nil {
			return ephemerals{}, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return ephemerals{}, err
		}
		return ephemerals{ceremonies: shared, proofs: shared, budgets: shared, seal: aead}, nil
	}
	return ephemerals{
		// The caps of the ceremony table bound what is open; the slack
		// covers ceremonies taken here but not yet swept from the table.
		ceremonies: store.NewMemoryEphemeral(2 * o.MaxCeremonies),
		proofs:     store.NewMemoryEphemeral(o.MaxCeremonies),
		budgets:    store.NewMemoryEphemeral(o.MaxTrackedLimits),
	}, nil
}

func digestKey(prefix, id string) string {
	h := sha256.Sum256([]byte(id))
	return prefix + base64.RawURLEncoding.EncodeToString(h[:])
}

// ceremonyPrefix is the key prefix of every ceremony.
const ceremonyPrefix = "pk/c/"

// ceremonyPrefixes are the key prefixes of each kind ("pk/c/<kind>/").
var ceremonyPrefixes = [...]string{
	kindRegistration:   ceremonyPrefix + strconv.Itoa(int(kindRegistration)) + "/",
	kindAuthentication: ceremonyPrefix + strconv.Itoa(int(kindAuthentication)) + "/",
}

// ceremonyKey is the key of the ceremony id of kind. On a shared store it
// is a digest of the id (its readers cannot name a ceremony); in memory
// the id itself: the entry never leaves the process, and the digest cost
// a SHA-256 and three allocations at each of the ceremony's three uses on
// every release. Ids are at most 256 bytes (takeCeremony checks; begin
// mints 43), so the in-memory keys stay short.
func (e ephemerals) ceremonyKey(kind ceremonyKind, id string) string {
	prefix := ceremonyPrefix + strconv.Itoa(int(kind)) + "/"
	if int(kind) < len(ceremonyPrefixes) && ceremonyPrefixes[kind] != "" {
		prefix = ceremonyPrefixes[kind]
	}
	if e.seal == nil {
		return prefix + id
	}
	return digestKey(prefix, id)
}

// proofKey is the key of the step-up proof id, as ceremonyKey.
func (e ephemerals) proofKey(id string) string {
	if e.seal == nil {
		return "pk/p/" + id
	}
	return digestKey("pk/p/", id)
}

// budgetKey is the key of owner's failure budget: on a shared store a
// digest (its readers cannot tell whose budget it is), in memory the owner
// itself (a SHA-256 less on every release; owners are short: Validate).
func (e ephemerals) budgetKey(owner enclave.Owner) string {
	if e.seal == nil {
		return "pk/u/" + string(owner)
	}
	return digestKey("pk/u/", string(owner))
}

const sealAD = "keywarden passkey ephemeral v1\x00"

func (e ephemerals) sealValue(key string, plain []byte) []byte {
	if e.seal == nil {
		return plain
	}
	out := make([]byte, e.seal.NonceSize(), e.seal.NonceSize()+len(plain)+e.seal.Overhead())
	_, _ = rand.Read(out)
	return e.seal.Seal(out, out, plain, []byte(sealAD+key))
}

func (e ephemerals) openValue(key string, v []byte) ([]byte, error) {
	if e.seal == nil {
		return v, nil
	}
	n := e.seal.NonceSize()
	if len(v) < n {
		return nil, errors.New("passkey: sealed ephemeral value too short")
	}
	return e.seal.Open(nil, v[:n], v[n:], []byte(sealAD+key))
}

// A ceremony as stored: a version byte, the kind, flags, the end (Unix
// ns), then length-prefixed fields: relying party id, owner, user id,
// owner prefix, recipient key, and go-webauthn's session data in its own
// MessagePack form. Binary, not JSON: it is written and read on every
// release, and JSON cost about as much again as everything else around it.
const ceremonyFormat = 1

const (
	flagSubject = 1 << iota
	flagStepUp
	flagKeyStored
	flagClaim
)

func encodeCeremony(c *ceremony) ([]byte, error) {
	sess, err := c.session.MarshalMsg(nil)
	if err != nil {
		return nil, err
	}
	var flags byte
	var owner, userID string
	if c.subject != nil {
		flags |= flagSubject
		owner, userID = string(c.subject.Owner), c.subject.UserID
	}
	for _, f := range []struct {
		on  bool
		bit byte
	}{{c.stepUp, flagStepUp}, {c.keyStored, flagKeyStored}, {c.claim, flagClaim}} {
		if f.on {
			flags |= f.bit
		}
	}
	b := make([]byte, 0, 64+len(sess)+len(c.recipient)+len(owner)+len(c.prefix))
	b = append(b, ceremonyFormat, byte(c.kind), flags)
	b = binary.BigEndian.AppendUint64(b, uint64(c.expires.UnixNano()))
	for _, f := range [][]byte{[]byte(c.rp.cfg.ID), []byte(owner), []byte(userID), []byte(c.prefix), c.recipient, sess} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

var errCeremonyFormat = errors.New("passkey: a stored ceremony does not decode")

func decodeCeremony(b []byte) (c *ceremony, rpID string, err error) {
	if len(b) < 11 || b[0] != ceremonyFormat {
		return nil, "", errCeremonyFormat
	}
	c = &ceremony{kind: ceremonyKind(b[1])}
	flags := b[2]
	c.expires = time.Unix(0, int64(binary.BigEndian.Uint64(b[3:11])))
	b = b[11:]
	var fields [6][]byte
	for i := range fields {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, "", errCeremonyFormat
		}
		fields[i], b = b[k:k+int(n)], b[k+int(n):]
	}
	if len(b) != 0 {
		return nil, "", errCeremonyFormat
	}
	if flags&flagSubject != 0 {
		c.subject = &Subject{Owner: enclave.Owner(fields[1]), UserID: string(fields[2])}
	}
	c.prefix = string(fields[3])
	if len(fields[4]) > 0 {
		c.recipient = bytes.Clone(fields[4])
	}
	if _, err := c.session.UnmarshalMsg(fields[5]); err != nil {
		return nil, "", errCeremonyFormat
	}
	c.stepUp, c.keyStored, c.claim = flags&flagStepUp != 0, flags&flagKeyStored != 0, flags&flagClaim != 0
	return c, string(fields[0]), nil
}

// putCeremony stores c (begun) for CeremonyTTL. On one node the
// in-memory store keeps a copy of the struct itself (nothing to encode:
// the release path costs what it did before the cluster).
func (s *Service) putCeremony(ctx context.Context, c *ceremony, key string, now time.Time) error {
	if m, ok := s.eph.ceremonies.(*store.MemoryEphemeral); ok {
		cp := *c
		if ok, err := m.PutObject(key, &cp, now, s.opts.CeremonyTTL); err != nil || !ok {
			return apierr.ErrInternal.WithMessage("ceremony id collision")
		}
		return nil
	}
	plain, err := encodeCeremony(c)
	if err != nil {
		return apierr.ErrInternal.Wrap(err)
	}
	ok, err := s.eph.ceremonies.PutIfAbsent(ctx, key, s.eph.sealValue(key, plain), now, s.opts.CeremonyTTL)
	if err != nil {
		return err
	}
	if !ok { // 256 random bits collided: never
		return apierr.ErrInternal.WithMessage("ceremony id collision")
	}
	return nil
}

// takeCeremony takes the ceremony id of kind, once in the whole cluster.
// A ceremony of another kind is left in place and reported as unknown.
func (s *Service) takeCeremony(ctx context.Context, now time.Time, id string, kind ceremonyKind) (*ceremony, error) {
	if id == "" || len(id) > 256 {
		return nil, ErrCeremonyUnknown
	}
	key := s.eph.ceremonyKey(kind, id)
	var v []byte
	var obj any
	var err error
	m, local := s.eph.ceremonies.(*store.MemoryEphemeral)
	if local {
		obj, err = m.TakeObject(key, now)
	} else {
		v, err = s.eph.ceremonies.Take(ctx, key, now)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, ErrCeremonyUnknown
	case errors.Is(err, store.ErrExpired):
		s.ceremonies.forget(id)
		return nil, ErrCeremonyExpired
	case err != nil:
		return nil, err
	}
	s.ceremonies.forget(id)
	if local {
		return obj.(*ceremony), nil
	}
	plain, err := s.eph.openValue(key, v)
	if err != nil {
		return nil, apierr.ErrInternal.Wrap(err)
	}
	c, rpID, err := decodeCeremony(plain)
	if err != nil || c.kind != kind {
		return nil, apierr.ErrInternal.Wrap(errCeremonyFormat)
	}
	rp, err := s.rp(rpID)
	if err != nil || rpID == "" {
		// Another node knows a relying party this one does not: the
		// configurations differ.
		return nil, ErrCeremonyRP
	}
	c.id, c.rp = id, rp
	return c, nil
}

// proofState is a finished authentication kept as a step-up proof.
type proofState struct {
	Owner  enclave.Owner `json:"o"`
	UserID string        `json:"u"`
	RPID   string        `json:"rp"`
}

// putProof keeps the finished authentication id as a step-up proof. On
// one node the in-memory store keeps the struct itself (nothing to
// encode), as for ceremonies.
func (s *Service) putProof(ctx context.Context, id string, subj Subject, rp *relyingParty, now time.Time) error {
	key := s.eph.proofKey(id)
	if m, ok := s.eph.proofs.(*store.MemoryEphemeral); ok {
		_, err := m.PutObject(key, &proofState{Owner: subj.Owner, UserID: subj.UserID, RPID: rp.cfg.ID}, now, s.opts.CeremonyTTL)
		return err
	}
	plain, _ := json.Marshal(proofState{Owner: subj.Owner, UserID: subj.UserID, RPID: rp.cfg.ID})
	_, err := s.eph.proofs.PutIfAbsent(ctx, key, s.eph.sealValue(key, plain), now, s.opts.CeremonyTTL)
	return err
}

// takeProof uses up the proof id; any proof missing, expired or of
// another user or relying party is ErrAssertionInvalid.
func (s *Service) takeProof(ctx context.Context, id string, owner enclave.Owner, rp *relyingParty) error {
	p, err := s.takeProofState(ctx, id)
	if err != nil {
		return err
	}
	if p.Owner != owner || p.RPID != rp.cfg.ID {
		return ErrAssertionInvalid
	}
	return nil
}

// takeProofState uses up the proof id and returns it; a proof missing,
// expired, already used or unreadable is ErrAssertionInvalid.
func (s *Service) takeProofState(ctx context.Context, id string) (proofState, error) {
	if id == "" || len(id) > 256 {
		return proofState{}, ErrAssertionInvalid
	}
	key := s.eph.proofKey(id)
	var p proofState
	if m, ok := s.eph.proofs.(*store.MemoryEphemeral); ok {
		obj, err := m.TakeObject(key, s.now())
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExpired) {
			return proofState{}, ErrAssertionInvalid
		}
		if err != nil {
			return proofState{}, err
		}
		pp, ok := obj.(*proofState)
		if !ok {
			return proofState{}, ErrAssertionInvalid
		}
		p = *pp
	} else {
		v, err := s.eph.proofs.Take(ctx, key, s.now())
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExpired) {
			return proofState{}, ErrAssertionInvalid
		}
		if err != nil {
			return proofState{}, err
		}
		plain, err := s.eph.openValue(key, v)
		if err != nil || json.Unmarshal(plain, &p) != nil {
			return proofState{}, ErrAssertionInvalid
		}
	}
	if p.Owner == "" {
		return proofState{}, ErrAssertionInvalid
	}
	return p, nil
}

// TakeProof uses up the proof of a fresh passkey assertion
// ([Authentication.ProofID], the assertionCeremonyId of
// authentication/finish: single use, valid for the ceremony lifetime) and
// returns whose it is. It is the proof that adds a passkey to a stored key;
// GET /v1/me/events takes it too. A proof missing, expired, already used
// or of a relying party no longer configured is [ErrProofInvalid].
func (s *Service) TakeProof(ctx context.Context, id string) (Subject, error) {
	p, err := s.takeProofState(ctx, id)
	if errors.Is(err, ErrAssertionInvalid) {
		return Subject{}, ErrProofInvalid
	}
	if err != nil {
		return Subject{}, err
	}
	if !s.HasRelyingParty(p.RPID) {
		return Subject{}, ErrProofInvalid
	}
	return Subject{Owner: p.Owner, UserID: p.UserID}, nil
}

// checkBudget reports whether owner may try again (spending nothing), and
// if not, after how long, rounded up to whole seconds: a token bucket of
// UserFailureBurst tokens regaining one per UserFailureInterval, kept as a
// leaky counter of failures.
func (s *Service) checkBudget(ctx context.Context, owner enclave.Owner, now time.Time) (bool, time.Duration, error) {
	burst, interval := s.opts.UserFailureBurst, s.opts.UserFailureInterval
	if burst < 0 {
		return true, 0, nil
	}
	until, err := s.eph.budgets.Until(ctx, s.eph.budgetKey(owner), now)
	if err != nil {
		return false, 0, err
	}
	if until.Before(now) {
		until = now
	}
	wait := until.Sub(now) - time.Duration(burst-1)*interval
	if burst >= 1 && wait <= 0 {
		return true, 0, nil
	}
	if burst < 1 {
		wait = max(wait, interval)
	}
	wait = max(wait, time.Second)
	if r := wait.Truncate(time.Second); r < wait {
		wait = r + time.Second
	}
	return false, wait, nil
}

// spendBudget spends one of owner's failures. An empty bucket stays
// empty (its debt is not pushed further out), as a token bucket does.
func (s *Service) spendBudget(ctx context.Context, owner enclave.Owner) error {
	burst, interval := s.opts.UserFailureBurst, s.opts.UserFailureInterval
	if burst < 0 {
		return nil
	}
	now := s.now()
	until, err := s.eph.budgets.Until(ctx, s.eph.budgetKey(owner), now)
	if err != nil {
		return err
	}
	if until.After(now) && until.Sub(now) > time.Duration(burst-1)*interval {
		return nil
	}
	_, err = s.eph.budgets.Incr(ctx, s.eph.budgetKey(owner), now, interval)
	return err
}
