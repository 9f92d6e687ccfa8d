package passkey

import (
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/ratelimit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/store"
)

// Method is the custody method under which a passkey user's key is stored.
const Method = "PASSKEY"

// ActionImportClaimed is the audit action of a passkey registration that
// claimed a key brought in by the admin import.
const ActionImportClaimed = "import_claimed"

// OwnerPrefixUser is the owner prefix of native users (enclave.UserOwner).
const OwnerPrefixUser = "user:"

// MaxCredentialJSON bounds the size of a credential (registration or
// assertion response JSON) the service parses.
const MaxCredentialJSON = 32 << 10

// Auditor is what the service needs of the audit log (*audit.Log).
// Record is durable and fails closed: when it errors, the action is
// refused. Refusal is sampled and never blocks.
type Auditor interface {
	Record(ctx context.Context, ev audit.Event) error
	Refusal(ctx context.Context, ev audit.Event)
}

// Deps are the components the service uses.
type Deps struct {
	DB      *store.DB        // credentials (store.BucketCredentials)
	Custody *enclave.Custody // keys (owner, Method); its root key derives the decoy-credential key
	Audit   Auditor          // required
	Logger  *slog.Logger     // nil: slog.Default()
	Clock   func() time.Time // nil: time.Now
	// Keys stores and releases keys (audit, metrics) as on every other
	// path; nil: one over Custody and Audit whose metrics nobody exports
	// (tests). The appliance passes the one the server uses.
	Keys *keys.Service
}

// Subject is whose passkeys and key a ceremony concerns.
type Subject struct {
	// Owner owns the key in custody and the credentials:
	// enclave.UserOwner(id) for native users, "portal:<clientId>" for the
	// Portal adapter.
	Owner enclave.Owner
	// UserID is the WebAuthn user handle as a string: the authenticator
	// stores and returns its UTF-8 bytes. 1 to 64 printable ASCII
	// characters, so that raw, base64url and plain-string user handles all
	// round-trip (decisions/32).
	UserID string
}

// UserSubject is the subject of a native user id.
func UserSubject(userID string) Subject {
	return Subject{Owner: enclave.UserOwner(userID), UserID: userID}
}

// ValidUserID is the one user-id rule ([enclave.ValidUserID]).
func ValidUserID(id string) error { return enclave.ValidUserID(id) }

func (s Subject) validate() error {
	if err := ValidUserID(s.UserID); err != nil {
		return err
	}
	return s.Owner.Validate()
}

// Service runs WebAuthn registration and authentication ceremonies, keeps
// credentials in the store and releases keys from custody. Its Begin and
// Finish methods are the API for every transport: the native echo
// handlers ([Handler]) and the Portal adapter.
type Service struct {
	opts    Options
	rps     []*relyingParty
	db      *store.DB
	custody *enclave.Custody
	keys    *keys.Service
	audit   Auditor
	log     *slog.Logger
	now     func() time.Time
	decoy   secret.Bytes
	// decoyKey is the COSE public key an assertion naming an unknown
	// credential is verified against (ES256, like most passkeys), so that
	// it costs what a real one costs (decisions/07).
	decoyKey []byte

	shapes decoyShapes
	// ceremonies counts this node's open ceremonies for its caps (global,
	// per address, per network: they stay per node); the ceremonies
	// themselves, the step-up proofs and the per-user failure budgets
	// (only failures spend, decisions/07) are in eph, shared by every node
	// of a cluster (shared.go).
	ceremonies *ceremonies
	eph        ephemerals
	addrLimit  *ratelimit.Limiter // per node

	stats stats
	// creds caches decoded credentials on a single node (nil on a
	// cluster): credcache.go.
	creds *credCache
}

type relyingParty struct {
	cfg     RelyingParty
	origins []string
	wa      *webauthn.WebAuthn
	begun   atomic.Uint64
	done    atomic.Uint64
}

type stats struct {
	expired  atomic.Uint64
	mu       sync.Mutex
	refusals map[string]uint64
}

// NewService validates opts and returns the service.
func NewService(opts Options, deps Deps) (*Service, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if deps.DB == nil || deps.Custody == nil || deps.Audit == nil {
		return nil, errors.New("passkey: Deps.DB, Deps.Custody and Deps.Audit are required")
	}
	o := opts.withDefaults()
	if deps.Keys == nil {
		ks, err := keys.New(keys.Options{Custody: deps.Custody, Audit: deps.Audit, Metrics: metrics.New(), Clock: deps.Clock, Logger: deps.Logger})
		if err != nil {
			return nil, err
		}
		deps.Keys = ks
	}
	s := &Service{
		opts: o, db: deps.DB, custody: deps.Custody, keys: deps.Keys, audit: deps.Audit, log: deps.Logger, now: deps.Clock,
		decoy:      deps.Custody.Root().Subkey(enclave.SubkeyPasskeyDecoy),
		ceremonies: newCeremonies(o.MaxCeremonies, o.MaxCeremoniesPerAddress),
		addrLimit:  ratelimit.New(o.AddressFailureBurst, o.AddressFailureInterval, o.MaxTrackedLimits),
		creds:      credCacheFor(deps.DB),
	}
	eph, err := newEphemerals(deps.DB, deps.Custody.Root(), o)
	if err != nil {
		return nil, err
	}
	s.eph = eph
	s.stats.refusals = map[string]uint64{}
	s.decoyKey = decoyVerificationKey(s.decoy.Reveal())
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	// Learn what real users' allowCredentials look like, for decoys; on
	// failure the built-in mix stands in and the next begin retries.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := s.refreshDecoyShapes(ctx); err != nil {
		s.log.Warn("passkey: learning decoy credential shapes failed; using the built-in mix", "err", err)
	}
	cancel()
	requireRK := o.ResidentKey == "required"
	for _, rp := range o.RelyingParties {
		name := rp.Name
		if name == "" {
			name = rp.ID
		}
		origins := rp.origins()
		wa, err := webauthn.New(&webauthn.Config{
			RPID: rp.ID, RPDisplayName: name, RPOrigins: origins,
			AttestationPreference: protocol.PreferNoAttestation,
			AuthenticatorSelection: protocol.AuthenticatorSelection{
				ResidentKey:        protocol.ResidentKeyRequirement(o.ResidentKey),
				RequireResidentKey: &requireRK,
				UserVerification:   protocol.UserVerificationRequirement(o.UserVerification),
			},
			Timeouts: webauthn.TimeoutsConfig{
				Login:        webauthn.TimeoutConfig{Timeout: o.CeremonyTTL, TimeoutUVD: o.CeremonyTTL},
				Registration: webauthn.TimeoutConfig{Timeout: o.CeremonyTTL, TimeoutUVD: o.CeremonyTTL},
			},
			// Password managers add outputs nobody asked for; refusing them
			// would lock users out for nothing.
			ExtensionsUnsolicitedOutputPolicy: protocol.UnsolicitedOutputPolicyIgnore,
		})
		if err != nil {
			return nil, fmt.Errorf("passkey: relying party %q: %w", rp.ID, err)
		}
		s.rps = append(s.rps, &relyingParty{cfg: rp, origins: origins, wa: wa})
	}
	if w, ok := s.eph.ceremonies.(store.EphemeralWatcher); ok {
		// A ceremony begun here and finished on another node stops
		// counting against this node's caps when the store says it is
		// gone (not only at its expiry). The watch ends with the store.
		w.WatchRemoved(context.Background(), ceremonyPrefix, func(key string) {
			if s.ceremonies.forgetKey(s.now(), key) {
				s.stats.expired.Add(1)
			}
		})
	}
	return s, nil
}

// rp returns the configured relying party with this ID ("" is
// the default one).
func (s *Service) rp(id string) (*relyingParty, error) {
	if id == "" {
		return s.rps[0], nil
	}
	for _, rp := range s.rps {
		if rp.cfg.ID == id {
			return rp, nil
		}
	}
	return nil, ErrUnknownRP
}

// HasRelyingParty reports whether id is a configured RP ID.
func (s *Service) HasRelyingParty(id string) bool {
	_, err := s.rp(id)
	return id != "" && err == nil
}

// Stats are counters for metrics.
type Stats struct {
	// Per RP ID: ceremonies begun and finished successfully; begun minus
	// finished counts ceremonies abandoned or refused (decisions/34: most
	// passkey failures never reach the server).
	Begun, Finished map[string]uint64
	// Expired counts ceremonies dropped unused at their expiry.
	Expired uint64
	// Open is the number of ceremonies begun on this node and held now
	// (finished nowhere yet, not expired).
	Open int
	// Refusals counts refused requests by error code.
	Refusals map[string]uint64
}

// Stats returns a snapshot of the counters.
func (s *Service) Stats() Stats {
	st := Stats{Begun: map[string]uint64{}, Finished: map[string]uint64{}, Expired: s.stats.expired.Load(),
		Open: s.ceremonies.len(), Refusals: map[string]uint64{}}
	for _, rp := range s.rps {
		st.Begun[rp.cfg.ID] = rp.begun.Load()
		st.Finished[rp.cfg.ID] = rp.done.Load()
	}
	s.stats.mu.Lock()
	for k, v := range s.stats.refusals {
		st.Refusals[k] = v
	}
	s.stats.mu.Unlock()
	return st
}

// refuse counts and audits (sampled) a refusal and returns err.
func (s *Service) refuse(ctx context.Context, err error, owner enclave.Owner, addr, action string) error {
	code := "internal"
	if e, ok := apierr.As(err); ok {
		code = e.Code
	}
	s.stats.mu.Lock()
	s.stats.refusals[code]++
	s.stats.mu.Unlock()
	s.audit.Refusal(ctx, audit.Event{Action: audit.ActionRefusal, Reason: code, Owner: string(owner), Method: Method,
		Remote: addr, Fields: map[string]string{"ceremony": action}})
	return err
}

// addCeremony counts c against this node's caps, then stores it where
// every node can finish it.
func (s *Service) addCeremony(ctx context.Context, c *ceremony) error {
	now := s.now()
	c.id = newCeremonyID()
	c.expires = now.Add(s.opts.CeremonyTTL)
	key := s.eph.ceremonyKey(c.kind, c.id)
	expired, err := s.ceremonies.add(now, &ceremony{id: c.id, addr: c.addr, expires: c.expires, key: key})
	s.stats.expired.Add(uint64(expired))
	if err != nil {
		return err
	}
	if err := s.putCeremony(ctx, c, key, now); err != nil {
		s.ceremonies.forget(c.id)
		return err
	}
	return nil
}

type waUser struct {
	id          []byte
	displayName string
	creds       []webauthn.Credential
}

func (u *waUser) WebAuthnID() []byte                         { return u.id }
func (u *waUser) WebAuthnName() string                       { return string(u.id) }
func (u *waUser) WebAuthnDisplayName() string                { return u.displayName }
func (u *waUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func descriptors(cs []*credential) []protocol.CredentialDescriptor {
	out := make([]protocol.CredentialDescriptor, 0, len(cs))
	for _, c := range cs {
		d := protocol.CredentialDescriptor{Type: protocol.PublicKeyCredentialType, CredentialID: c.ID}
		for _, t := range c.Transports {
			d.Transport = append(d.Transport, protocol.AuthenticatorTransport(t))
		}
		out = append(out, d)
	}
	return out
}

// decoyVerificationKey derives a P-256 public key (COSE_Key) from the
// decoy subkey by HMAC: deterministic, and no one holds its private half
// outside this process (which never signs with it).
func decoyVerificationKey(seed []byte) []byte {
	for i := byte(0); ; i++ {
		m := hmac.New(sha256.New, seed)
		m.Write([]byte("keywarden passkey decoy verification key v1"))
		m.Write([]byte{i})
		k, err := ecdh.P256().NewPrivateKey(m.Sum(nil))
		if err != nil {
			continue // the scalar is out of range (probability ~2^-32)
		}
		pub := k.PublicKey().Bytes() // 0x04 ‖ X ‖ Y
		key, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
			PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
			Curve:         int64(webauthncose.P256), XCoord: pub[1:33], YCoord: pub[33:65],
		})
		if err != nil {
			panic("passkey: encoding the decoy key: " + err.Error())
		}
		return key
	}
}

var credentialParameters = []protocol.CredentialParameter{
	{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgES256},
	{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgEdDSA},
	{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgRS256},
}

// checkClientData makes the client-data checks of both ceremonies
// explicitly, before go-webauthn repeats them, so each failure has its own
// code and a refused origin is logged.
func (s *Service) checkClientData(rp *relyingParty, c *ceremony, cd protocol.CollectedClientData, want protocol.CeremonyType) error {
	if cd.Type != want {
		return ErrClientDataType
	}
	if !hmac.Equal([]byte(cd.Challenge), []byte(c.session.Challenge)) {
		return ErrChallengeMismatch
	}
	if !protocol.IsOriginInHaystack(cd.Origin, rp.origins) {
		// The origin received is the first thing an operator needs
		// (decisions/33).
		s.log.Warn("passkey: origin refused", "origin", truncate(cd.Origin, 256), "rp_id", rp.cfg.ID, "allowed", rp.origins)
		return ErrOriginMismatch
	}
	return nil
}

// checkAuthData checks the RP ID hash and the UP and UV flags.
func (s *Service) checkAuthData(rp *relyingParty, ad protocol.AuthenticatorData) error {
	want := sha256.Sum256([]byte(rp.cfg.ID))
	if !hmac.Equal(ad.RPIDHash, want[:]) {
		return ErrRPIDMismatch
	}
	if !ad.Flags.UserPresent() {
		return ErrUserPresence
	}
	if s.opts.UserVerification == "required" && !ad.Flags.UserVerified() {
		return ErrUserVerification
	}
	if ad.Flags.HasBackupState() && !ad.Flags.HasBackupEligible() {
		return ErrBackupFlags
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// protocolCause maps a go-webauthn error to ours, keeping it as the cause.
func protocolCause(err error, fallback *apierr.Error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Type == protocol.ErrAssertionSignature.Type {
		return ErrSignature.Wrap(err)
	}
	if errors.As(err, &pe) {
		return fallback.Wrap(fmt.Errorf("%s: %s", pe.Details, pe.DevInfo))
	}
	return fallback.Wrap(err)
}

func hasPrefix(o enclave.Owner, p string) bool { return strings.HasPrefix(string(o), p) }

// checkLimit reports whether key may try again under l (spending nothing),
// and if not, after how long, rounded up to whole seconds.
func checkLimit(l *ratelimit.Limiter, key string, now time.Time) (bool, time.Duration) {
	ok, wait := l.Check(key, now)
	// Round up: a Retry-After that is early gets the client refused again.
	if r := wait.Truncate(time.Second); r < wait {
		wait = r + time.Second
	}
	return ok, wait
}
