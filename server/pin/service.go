package pin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/oprf"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/store"
)

// Method is the backup method of keys released behind a PIN.
const Method = "PIN"

// Suite is the OPRF suite of the wire (RFC 9497, mode 0x00).
const Suite = "ristretto255-SHA512"

// Defaults of [Options] (pin.* in the configuration).
const (
	DefaultGuessLimit  = 10
	DefaultPendingTTL  = 5 * time.Minute
	DefaultRecoveryTTL = 5 * time.Minute
	MaxGuessLimit      = 255
	// TagBytes is the length of an unlock tag.
	TagBytes = 32
	// GeneratedKeyBytes is the length of a key the appliance generates
	// when a registration carries none.
	GeneratedKeyBytes = 32
)

// Audit actions of this package (the release itself is the keys
// service's "release" line with reason "pin_unlock").
const (
	ActionRegister = "pin_register"
	ActionLocked   = "pin_locked"
	ActionDelete   = "pin_delete"
)

var (
	// ErrNotRegistered: the owner has no PIN registration.
	ErrNotRegistered = apierr.New(http.StatusNotFound, "pin_not_registered", "no PIN is registered for this account")
	// ErrLocked: no guesses are left; the registration and its key were deleted.
	ErrLocked = apierr.New(http.StatusGone, "pin_locked", "no PIN guesses are left: the PIN registration and the key it protected have been deleted")
	// ErrExists: replacing a registration needs a recent unlock with the old PIN.
	ErrExists = apierr.New(http.StatusConflict, "pin_exists", "a PIN is already registered; replacing it needs an unlock with the old PIN (POST /v1/pin/recoveries, then …/unlock) within the last minutes")
	// ErrRegistrationNotFound: the pending registration is unknown,
	// completed, expired or another owner's.
	ErrRegistrationNotFound = apierr.New(http.StatusNotFound, "pin_registration_not_found", "no pending PIN registration with this id (unknown, already completed or expired): start again with POST /v1/pin/registrations")
	// ErrRecoveryNotFound: the recovery is unknown, used, expired or
	// another owner's.
	ErrRecoveryNotFound = apierr.New(http.StatusNotFound, "pin_recovery_not_found", "no open PIN recovery with this id (unknown, already used or expired): start again with POST /v1/pin/recoveries")
	// ErrBlindedElement refuses a blinded element that is not a
	// canonical, non-identity ristretto255 element in base64url.
	ErrBlindedElement = apierr.New(http.StatusBadRequest, "invalid_blinded_element", "blindedElement must be a ristretto255 element (32 bytes, canonical, not the identity) in base64url without padding (RFC 9497, ristretto255-SHA512)")
	// ErrUnlockTag refuses an unlock tag that is not 32 bytes of base64url.
	ErrUnlockTag = apierr.New(http.StatusBadRequest, "invalid_unlock_tag", "unlockTag must be 32 bytes in base64url without padding")
	// ErrGuessLimit refuses a guess limit outside 1–255.
	ErrGuessLimit = apierr.New(http.StatusBadRequest, "invalid_guess_limit", "guessLimit must be between 1 and 255")
	// ErrCounter: the guess was counted but the TPM counter could not be
	// advanced, so no evaluation is sent.
	ErrCounter = apierr.New(http.StatusServiceUnavailable, "rollback_counter_unavailable", "the guess was counted but the appliance could not advance its TPM rollback counter; no evaluation was sent, retry later").WithRetry(5 * time.Second)
)

// IncorrectError is a wrong unlock tag: 403 pin_incorrect with the
// guesses that remain.
type IncorrectError struct {
	Remaining int
}

func (e *IncorrectError) Error() string { return ErrIncorrect.Error() }
func (e *IncorrectError) Unwrap() error { return ErrIncorrect }

// ErrIncorrect is the code of [IncorrectError].
var ErrIncorrect = apierr.New(http.StatusForbidden, "pin_incorrect", "the PIN is not correct")

// Counter is the TPM rollback counter (enclave.Rollback).
type Counter interface {
	// NewGeneration gives the write transaction a store generation of
	// its own.
	NewGeneration(tx *store.Tx) error
	// Sync returns once the TPM counter covers every commit before it.
	Sync(ctx context.Context) error
}

// Options are pin.* of the configuration.
type Options struct {
	// DefaultGuessLimit applies when a registration names none (1–255).
	DefaultGuessLimit int
	// PendingTTL is how long a registration's OPRF key waits for its PUT.
	PendingTTL time.Duration
	// RecoveryTTL is how long a recovery may be unlocked, and how long an
	// unlock proves the old PIN for replacing the registration.
	RecoveryTTL time.Duration
}

// Validate names the field in error; zero values take the defaults.
func (o *Options) Validate() error {
	if o.DefaultGuessLimit == 0 {
		o.DefaultGuessLimit = DefaultGuessLimit
	}
	if o.PendingTTL == 0 {
		o.PendingTTL = DefaultPendingTTL
	}
	if o.RecoveryTTL == 0 {
		o.RecoveryTTL = DefaultRecoveryTTL
	}
	switch {
	case o.DefaultGuessLimit < 1 || o.DefaultGuessLimit > MaxGuessLimit:
		return errors.New("pin.default_guess_limit: must be between 1 and 255")
	case o.PendingTTL < time.Second || o.PendingTTL > time.Hour:
		return errors.New("pin.pending_ttl: must be between 1s and 1h")
	case o.RecoveryTTL < time.Second || o.RecoveryTTL > time.Hour:
		return errors.New("pin.recovery_ttl: must be between 1s and 1h")
	}
	return nil
}

// Deps are the service's dependencies.
type Deps struct {
	DB       *store.DB        // required
	Custody  *enclave.Custody // required
	Keys     *keys.Service    // required
	Rollback Counter          // required: a guess waits for the NV counter
	Clock    func() time.Time // nil: time.Now
	Logger   *slog.Logger     // nil: discard
	// afterCount, when set (tests), runs after a guess is committed and
	// the counter synced, before the evaluation is computed.
	afterCount func(owner enclave.Owner)
}

// Service is the PIN service.
type Service struct {
	opts       Options
	db         *store.DB
	custody    *enclave.Custody
	root       *enclave.Root
	keys       *keys.Service
	rb         Counter
	now        func() time.Time
	log        *slog.Logger
	afterCount func(owner enclave.Owner)
}

// New validates opts and deps and returns the service.
func New(opts Options, deps Deps) (*Service, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.DB == nil:
		return nil, errors.New("pin: Deps.DB is required")
	case deps.Custody == nil:
		return nil, errors.New("pin: Deps.Custody is required")
	case deps.Keys == nil:
		return nil, errors.New("pin: Deps.Keys is required")
	case deps.Rollback == nil:
		return nil, errors.New("pin: Deps.Rollback is required (a guess is answered only once the TPM counter covers it)")
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{opts: opts, db: deps.DB, custody: deps.Custody, root: deps.Custody.Root(), keys: deps.Keys,
		rb: deps.Rollback, now: deps.Clock, log: deps.Logger, afterCount: deps.afterCount}, nil
}

// registration is the sealed registration record.
type registration struct {
	ID       string    `json:"id"`
	OPRFKey  []byte    `json:"k,omitempty"`
	Tag      []byte    `json:"t,omitempty"`
	Limit    int       `json:"limit"`
	Used     int       `json:"used"`
	ProvenAt time.Time `json:"proven,omitzero"` // last unlock with the right tag
	Created  time.Time `json:"created"`
	Locked   bool      `json:"locked,omitempty"` // tombstone: ran out of guesses
}

func (r *registration) remaining() int { return max(r.Limit-r.Used, 0) }

type pending struct {
	OPRFKey []byte    `json:"k"`
	Expires time.Time `json:"exp"`
}

type recovery struct {
	Registration string    `json:"reg"`
	Recipient    []byte    `json:"rpk,omitempty"`
	Expires      time.Time `json:"exp"`
}

const (
	kindRegistration = "pin_registration"
	kindPending      = "pin_pending"
	kindRecovery     = "pin_recovery"
)

func regKey(owner enclave.Owner) []byte                 { return store.Key("r", string(owner)) }
func pendingKey(owner enclave.Owner, id string) []byte  { return store.Key("p", string(owner), id) }
func recoveryKey(owner enclave.Owner, id string) []byte { return store.Key("v", string(owner), id) }

func (s *Service) seal(kind string, owner enclave.Owner, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	return s.root.Seal(enclave.Binding{Kind: kind, Owner: owner, Method: Method, Version: 1}, b)
}

func (s *Service) open(kind string, owner enclave.Owner, sealed []byte, v any) error {
	b, err := s.root.Open(enclave.Binding{Kind: kind, Owner: owner, Method: Method}, sealed)
	if err != nil {
		return fmt.Errorf("pin: %s record: %w", kind, err)
	}
	defer clear(b)
	return json.Unmarshal(b, v)
}

// getReg reads the owner's registration; nil when there is none.
func (s *Service) getReg(tx *store.Tx, owner enclave.Owner) (*registration, error) {
	b, err := tx.Get(store.BucketPIN, regKey(owner))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r registration
	if err := s.open(kindRegistration, owner, b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *Service) putReg(tx *store.Tx, owner enclave.Owner, r *registration) error {
	b, err := s.seal(kindRegistration, owner, r)
	if err != nil {
		return err
	}
	return tx.Put(store.BucketPIN, regKey(owner), b)
}

// lockTx turns the registration into a tombstone and purges the key with
// its prior versions, in the caller's transaction.
func (s *Service) lockTx(tx *store.Tx, owner enclave.Owner, r *registration) error {
	t := &registration{ID: r.ID, Limit: r.Limit, Used: r.Limit, Created: r.Created, Locked: true}
	if err := s.putReg(tx, owner, t); err != nil {
		return err
	}
	if err := s.deleteRecoveriesTx(tx, owner); err != nil {
		return err
	}
	_, err := s.custody.DeleteKeyTx(tx, owner, Method)
	return err
}

// deleteRecoveriesTx removes every open recovery of owner.
func (s *Service) deleteRecoveriesTx(tx *store.Tx, owner enclave.Owner) error {
	_, err := tx.DeletePrefix(store.BucketPIN, store.Prefix("v", string(owner)))
	return err
}

// pruneTx removes owner's expired records under prefix p ("p" or "v").
func (s *Service) pruneTx(tx *store.Tx, owner enclave.Owner, p, kind string, now time.Time) error {
	var stale [][]byte
	err := tx.ForEach(store.BucketPIN, store.Prefix(p, string(owner)), func(k, v []byte) error {
		var exp struct {
			Expires time.Time `json:"exp"`
		}
		if err := s.open(kind, owner, v, &exp); err != nil || !now.Before(exp.Expires) {
			stale = append(stale, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := tx.Delete(store.BucketPIN, k); err != nil {
			return err
		}
	}
	return nil
}

// newID is 16 random bytes in base64url.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// validID bounds an id from a path before it reaches the store.
func validID(id string) bool {
	if len(id) != 22 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(id)
	return err == nil
}

// DecodeElement is the one rule for a blinded element: base64url without
// padding (a trailing '=' tolerated) of a canonical ristretto255 element
// that is not the identity (RFC 9497, DeserializeElement).
func DecodeElement(s string) (group.Element, error) {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, ErrBlindedElement
	}
	e := group.Ristretto255.NewElement()
	if err := e.UnmarshalBinary(b); err != nil || e.IsIdentity() {
		return nil, ErrBlindedElement
	}
	return e, nil
}

// DecodeTag is the one rule for an unlock tag: 32 bytes of base64url.
func DecodeTag(s string) ([]byte, error) {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != TagBytes {
		return nil, ErrUnlockTag
	}
	return b, nil
}

// evaluate is the OPRF evaluation of blinded under the sealed key sk.
func evaluate(sk []byte, blinded group.Element) (string, error) {
	var k oprf.PrivateKey
	if err := k.UnmarshalBinary(oprf.SuiteRistretto255, sk); err != nil {
		return "", fmt.Errorf("pin: stored OPRF key: %w", err)
	}
	ev, err := oprf.NewServer(oprf.SuiteRistretto255, &k).Evaluate(&oprf.EvaluationRequest{Elements: []oprf.Blinded{blinded}})
	if err != nil {
		return "", err
	}
	out, err := ev.Elements[0].MarshalBinaryCompress()
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(out), nil
}

func newOPRFKey() ([]byte, error) {
	k, err := oprf.GenerateKey(oprf.SuiteRistretto255, rand.Reader)
	if err != nil {
		return nil, err
	}
	return k.MarshalBinary()
}

// Begin is POST /v1/pin/registrations: a fresh OPRF key, pending for
// PendingTTL (an owner's earlier pending registration is replaced), and
// the evaluation of blinded under it. Nothing is counted: the PIN is new.
func (s *Service) Begin(ctx context.Context, owner enclave.Owner, blinded group.Element) (id, evaluated string, err error) {
	sk, err := newOPRFKey()
	if err != nil {
		return "", "", err
	}
	defer clear(sk)
	id = newID()
	now := s.now()
	sealed, err := s.seal(kindPending, owner, pending{OPRFKey: sk, Expires: now.Add(s.opts.PendingTTL)})
	if err != nil {
		return "", "", err
	}
	if err := s.db.Update(ctx, func(tx *store.Tx) error {
		if _, err := tx.DeletePrefix(store.BucketPIN, store.Prefix("p", string(owner))); err != nil {
			return err
		}
		return tx.Put(store.BucketPIN, pendingKey(owner, id), sealed)
	}); err != nil {
		return "", "", err
	}
	evaluated, err = evaluate(sk, blinded)
	return id, evaluated, err
}

// RegisterRequest is PUT /v1/pin/registrations/{id}.
type RegisterRequest struct {
	ID         string
	Tag        []byte
	GuessLimit int          // 0: Options.DefaultGuessLimit
	Key        secret.Bytes // empty: keep the key when replacing, else generate one
}

// RegisterResult says what Register did.
type RegisterResult struct {
	Replaced bool
	// Generated is the key the appliance generated (returned once), or
	// empty.
	Generated secret.Bytes
}

// Register completes a pending registration: the unlock tag, the guess
// limit and the key (given, kept from the registration it replaces, or
// generated). Replacing a live registration needs an unlock with its PIN
// within RecoveryTTL (ErrExists otherwise). The audit line is durable
// before anything is written; the pending record, the registration and
// the key commit together.
func (s *Service) Register(ctx context.Context, req keys.Request, owner enclave.Owner, r RegisterRequest) (RegisterResult, error) {
	var res RegisterResult
	if !validID(r.ID) {
		return res, ErrRegistrationNotFound
	}
	if len(r.Tag) != TagBytes {
		return res, ErrUnlockTag
	}
	limit := r.GuessLimit
	if limit == 0 {
		limit = s.opts.DefaultGuessLimit
	}
	if limit < 1 || limit > MaxGuessLimit {
		return res, ErrGuessLimit
	}
	now := s.now()
	// Check first (no audit line for a refusal), then audit, then write
	// with the same checks inside the transaction.
	check := func(tx *store.Tx) (*pending, *registration, error) {
		b, err := tx.Get(store.BucketPIN, pendingKey(owner, r.ID))
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, ErrRegistrationNotFound
		}
		if err != nil {
			return nil, nil, err
		}
		var p pending
		if err := s.open(kindPending, owner, b, &p); err != nil {
			return nil, nil, err
		}
		if !now.Before(p.Expires) {
			return nil, nil, ErrRegistrationNotFound
		}
		old, err := s.getReg(tx, owner)
		if err != nil {
			return nil, nil, err
		}
		if old != nil && !old.Locked {
			if old.ProvenAt.IsZero() || now.Sub(old.ProvenAt) > s.opts.RecoveryTTL || now.Before(old.ProvenAt) {
				return nil, nil, ErrExists
			}
		} else {
			old = nil
		}
		return &p, old, nil
	}
	var oldLive bool
	if err := s.db.View(ctx, func(tx *store.Tx) error {
		_, old, err := check(tx)
		oldLive = old != nil
		return err
	}); err != nil {
		if errors.Is(err, ErrExists) {
			s.keys.Refuse(ctx, req, owner, Method, ErrExists.Code)
		}
		return res, err
	}
	key := r.Key
	if key.Len() == 0 && !oldLive {
		b := make([]byte, GeneratedKeyBytes)
		if _, err := rand.Read(b); err != nil {
			return res, err
		}
		key = secret.NewBytes(b)
		res.Generated = key
	}
	if err := s.keys.Record(ctx, req, ActionRegister, owner, Method); err != nil {
		res.Generated.Wipe()
		return RegisterResult{}, err
	}
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		p, old, err := check(tx)
		if err != nil {
			return err
		}
		defer clear(p.OPRFKey)
		if (old != nil) != oldLive {
			return ErrExists // changed since the check: let the client retry
		}
		if err := tx.Delete(store.BucketPIN, pendingKey(owner, r.ID)); err != nil {
			return err
		}
		if key.Len() > 0 {
			if _, err := s.custody.PutKeyTx(tx, owner, Method, key.Reveal(), enclave.PutOptions{}); err != nil {
				return err
			}
		} else if ok, err := s.custody.HasKeyTx(tx, owner, Method); err != nil || !ok {
			if err == nil {
				err = ErrNotRegistered.WithMessage("the key of the PIN registration being replaced is gone; send a key")
			}
			return err
		}
		// Open recoveries belong to the old PIN.
		if err := s.deleteRecoveriesTx(tx, owner); err != nil {
			return err
		}
		return s.putReg(tx, owner, &registration{ID: r.ID, OPRFKey: p.OPRFKey, Tag: r.Tag, Limit: limit, Created: now})
	})
	if err != nil {
		res.Generated.Wipe()
		return RegisterResult{}, err
	}
	res.Replaced = oldLive
	return res, nil
}

// Status is GET /v1/pin.
type Status struct {
	Registered       bool `json:"registered"`
	GuessLimit       int  `json:"guessLimit"`
	GuessesRemaining int  `json:"guessesRemaining"`
}

// Status describes the owner's registration without counting a guess.
func (s *Service) Status(ctx context.Context, owner enclave.Owner) (Status, error) {
	var st Status
	err := s.db.View(ctx, func(tx *store.Tx) error {
		r, err := s.getReg(tx, owner)
		if err != nil || r == nil {
			return err
		}
		st = Status{Registered: !r.Locked, GuessLimit: r.Limit, GuessesRemaining: r.remaining()}
		return nil
	})
	return st, err
}

// Recovery is the answer to POST /v1/pin/recoveries.
type Recovery struct {
	ID               string `json:"recoveryId"`
	Evaluated        string `json:"evaluatedElement"`
	GuessesRemaining int    `json:"guessesRemaining"`
}

// Evaluate is POST /v1/pin/recoveries: one guess is counted and a
// single-use recovery (bound to recipient, may be nil) written in one
// transaction that takes a store generation of its own; the TPM counter is
// synced to it; only then is the evaluation computed. With no guesses
// left, the registration is locked and its key purged (ErrLocked).
func (s *Service) Evaluate(ctx context.Context, req keys.Request, owner enclave.Owner, blinded group.Element, recipient []byte) (Recovery, error) {
	now := s.now()
	id := newID()
	var sk []byte
	var remaining int
	var locked, lockedNow bool
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		clear(sk)
		sk, locked, lockedNow = nil, false, false
		r, err := s.getReg(tx, owner)
		if err != nil {
			return err
		}
		if r == nil {
			return ErrNotRegistered
		}
		if r.Locked {
			locked = true
			return nil
		}
		if err := s.rb.NewGeneration(tx); err != nil {
			return err
		}
		if r.Used >= r.Limit {
			locked, lockedNow = true, true
			return s.lockTx(tx, owner, r)
		}
		if err := s.pruneTx(tx, owner, "v", kindRecovery, now); err != nil {
			return err
		}
		r.Used++
		remaining = r.remaining()
		// The recovery names the registration it counted against.
		b, err := s.seal(kindRecovery, owner, recovery{Registration: r.ID, Recipient: recipient, Expires: now.Add(s.opts.RecoveryTTL)})
		if err != nil {
			return err
		}
		if err := tx.Put(store.BucketPIN, recoveryKey(owner, id), b); err != nil {
			return err
		}
		if err := s.putReg(tx, owner, r); err != nil {
			return err
		}
		sk = append([]byte(nil), r.OPRFKey...)
		clear(r.OPRFKey)
		return nil
	})
	defer clear(sk)
	if err != nil {
		return Recovery{}, err
	}
	if lockedNow {
		s.recordLocked(ctx, req, owner)
	}
	if locked {
		s.keys.Refuse(ctx, req, owner, Method, ErrLocked.Code)
		return Recovery{}, ErrLocked
	}
	// The guess is committed; the answer waits for the NV counter.
	if err := s.rb.Sync(ctx); err != nil {
		s.log.Error("pin: rollback counter sync failed; the guess stays counted, no evaluation sent", "err", err)
		return Recovery{}, ErrCounter.Wrap(err)
	}
	if s.afterCount != nil {
		s.afterCount(owner)
	}
	ev, err := evaluate(sk, blinded)
	if err != nil {
		return Recovery{}, err
	}
	return Recovery{ID: id, Evaluated: ev, GuessesRemaining: remaining}, nil
}

func (s *Service) recordLocked(ctx context.Context, req keys.Request, owner enclave.Owner) {
	if err := s.keys.Record(ctx, req, ActionLocked, owner, Method); err != nil {
		// The lock is done: it must not wait for the audit log.
		s.log.Error("pin: audit of a locked registration failed", "err", err)
	}
}

// Unlocked is a successful unlock: the key and the recipient bound at the
// recovery's start (nil: in the clear).
type Unlocked struct {
	Key       secret.Bytes
	Recipient []byte
}

// Unlock is POST /v1/pin/recoveries/{id}/unlock: the recovery is used up
// whatever the outcome; the right tag resets the count and releases the
// key through the keys service; a wrong one answers the guesses left
// (*IncorrectError) or, at zero, locks (ErrLocked).
func (s *Service) Unlock(ctx context.Context, req keys.Request, owner enclave.Owner, id string, tag []byte) (Unlocked, error) {
	if !validID(id) {
		return Unlocked{}, ErrRecoveryNotFound
	}
	if len(tag) != TagBytes {
		return Unlocked{}, ErrUnlockTag
	}
	now := s.now()
	var (
		ok, gone, locked, lockedNow bool
		remaining                   int
		rpk                         []byte
	)
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		ok, gone, locked, lockedNow, remaining, rpk = false, false, false, false, 0, nil
		b, err := tx.Get(store.BucketPIN, recoveryKey(owner, id))
		if errors.Is(err, store.ErrNotFound) {
			// Locking removes open recoveries: say why they are gone.
			r, err := s.getReg(tx, owner)
			if err != nil {
				return err
			}
			if r == nil || !r.Locked {
				return ErrRecoveryNotFound
			}
			locked = true
			return nil
		}
		if err != nil {
			return err
		}
		var rec recovery
		if err := s.open(kindRecovery, owner, b, &rec); err != nil {
			return err
		}
		// Used up whatever the outcome.
		if err := tx.Delete(store.BucketPIN, recoveryKey(owner, id)); err != nil {
			return err
		}
		r, err := s.getReg(tx, owner)
		if err != nil {
			return err
		}
		switch {
		case !now.Before(rec.Expires), r == nil, r.ID != rec.Registration:
			// Expired, or counted against a registration since
			// deleted or replaced.
			gone = true
			return nil
		case r.Locked:
			locked = true
			return nil
		}
		defer clear(r.OPRFKey)
		if subtle.ConstantTimeCompare(r.Tag, tag) == 1 {
			ok, rpk = true, rec.Recipient
			r.Used, r.ProvenAt = 0, now
			// Guesses counted before the reset do not carry over.
			if err := s.deleteRecoveriesTx(tx, owner); err != nil {
				return err
			}
			return s.putReg(tx, owner, r)
		}
		remaining = r.remaining()
		if remaining == 0 {
			locked, lockedNow = true, true
			return s.lockTx(tx, owner, r)
		}
		return nil
	})
	if err != nil {
		return Unlocked{}, err
	}
	if gone {
		return Unlocked{}, ErrRecoveryNotFound
	}
	if lockedNow {
		s.recordLocked(ctx, req, owner)
	}
	if locked {
		s.keys.Refuse(ctx, req, owner, Method, ErrLocked.Code)
		return Unlocked{}, ErrLocked
	}
	if !ok {
		s.keys.Refuse(ctx, req, owner, Method, ErrIncorrect.Code)
		return Unlocked{}, &IncorrectError{Remaining: remaining}
	}
	kreq := req
	kreq.Basis = "pin_unlock"
	key, _, err := s.keys.Release(ctx, kreq, owner, Method, enclave.Access{}, nil)
	if err != nil {
		return Unlocked{}, err
	}
	return Unlocked{Key: key, Recipient: rpk}, nil
}

// Delete is DELETE /v1/pin: the registration, its open recoveries and
// pending registrations go; the key is deleted keeping its prior version
// (as every user delete does). Audited first.
func (s *Service) Delete(ctx context.Context, req keys.Request, owner enclave.Owner) error {
	if err := s.keys.Record(ctx, req, ActionDelete, owner, Method); err != nil {
		return err
	}
	if err := s.DeleteOwner(ctx, owner, false); err != nil {
		return err
	}
	return nil
}

// DeleteOwner removes every PIN record of owner; purge also removes the
// key with its prior versions (the admin's user deletion purges keys
// itself).
func (s *Service) DeleteOwner(ctx context.Context, owner enclave.Owner, purge bool) error {
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		for _, p := range []string{"p", "v"} {
			if _, err := tx.DeletePrefix(store.BucketPIN, store.Prefix(p, string(owner))); err != nil {
				return err
			}
		}
		if err := tx.Delete(store.BucketPIN, regKey(owner)); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if purge {
			_, err := s.custody.DeleteKeyTx(tx, owner, Method)
			return err
		}
		return nil
	})
	if err != nil || purge {
		return err
	}
	if err := s.custody.DeleteKeyKeepingPrior(ctx, owner, Method, enclave.Access{}); err != nil && !errors.Is(err, apierr.ErrNotFound) {
		return err
	}
	return nil
}
