// Package keys is the keys service: storing, releasing, deleting and
// restoring the client key of an owner, with every rule that goes with it
// in one place, whatever the transport:
//
//   - audit first, fail closed: a store, release, delete, restore or purge
//     happens only once its audit line is durable, and every line is built
//     here ([Request.Event]);
//   - the client isolation rule (enclave.Custody.SetClientIsolation)
//     answered early, before any audit line or write, its refusal audited
//     (sampled); the custody checks it again on the record it acts on;
//   - a release's audit line describes what the client received: a check
//     on the opened record runs before the line is written;
//   - the sign-in age rule of overwrites and deletes ([SignIn]);
//   - metrics (keywarden_key_stores_total, keywarden_release_duration_seconds)
//     observed for every path: native Firebase, Portal, passkeys, admin;
//   - the rollback generation advanced after a destructive change.
//
// It knows nothing of HTTP: callers (server/firebase's handlers, the
// Portal adapter, the passkey service, the admin routes) parse, call one
// method and render.
package keys

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/receipt"
)

// Auditor is the audit log: Record is durable (fail closed), Refusal is
// counted and sampled.
type Auditor interface {
	Record(ctx context.Context, ev audit.Event) error
	Refusal(ctx context.Context, ev audit.Event)
}

// Options are the service's dependencies.
type Options struct {
	Custody *enclave.Custody // required
	Audit   Auditor          // required
	Metrics *metrics.Metrics // required
	Clock   func() time.Time // nil: time.Now
	Logger  *slog.Logger     // nil: discard
}

// Validate names the missing dependency.
func (o Options) Validate() error {
	switch {
	case o.Custody == nil:
		return errors.New("keys: Options.Custody is required")
	case o.Audit == nil:
		return errors.New("keys: Options.Audit is required")
	case o.Metrics == nil:
		return errors.New("keys: Options.Metrics is required")
	}
	return nil
}

// Service is the keys service.
type Service struct {
	custody *enclave.Custody
	audit   Auditor
	metrics *metrics.Metrics
	now     func() time.Time
	log     *slog.Logger
}

// New validates opts and returns the service.
func New(opts Options) (*Service, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{custody: opts.Custody, audit: opts.Audit, metrics: opts.Metrics, now: opts.Clock,
		log: opts.Logger}, nil
}

// Request is who asks, as an audit line records it.
type Request struct {
	Actor     string // "admin:<key id>", "firebase:<…>", "portal:<clientId>", "user:<id>"
	RequestID string // correlation id; empty: the one in ctx (audit.WithRequestID)
	Remote    string // client address
	// Action overrides the action of the audit line of a store
	// ("admin_import"); empty: the operation's own.
	Action string
	// Basis, when set, is recorded as the reason of a successful line: on
	// what ground the action was allowed ("passkey_assertion").
	Basis string
	// Fields are added to the audit lines (strings the caller vouches
	// for: credential id, relying party, …).
	Fields map[string]string
	// SignIn, when set, applies the sign-in age rule to overwrites and
	// deletes.
	SignIn *SignIn
}

// Event is the one place an audit event is built: actor, request id and
// client address from the request; reason non-empty marks a refusal.
func (r Request) Event(action string, owner enclave.Owner, method, reason string) audit.Event {
	ev := audit.Event{Action: action, Outcome: audit.OutcomeSuccess, Actor: r.Actor, Owner: string(owner), Method: method,
		Reason: reason, RequestID: r.RequestID, Remote: r.Remote}
	if reason != "" {
		ev.Outcome = audit.OutcomeRefused
	} else {
		ev.Reason = r.Basis
	}
	if len(r.Fields) > 0 {
		ev.Fields = make(map[string]string, len(r.Fields))
		for k, v := range r.Fields {
			ev.Fields[k] = v
		}
	}
	return ev
}

// Record writes a durable audit line for an action the caller carries out
// itself (fail closed: do not act when it errors).
func (s *Service) Record(ctx context.Context, req Request, action string, owner enclave.Owner, method string) error {
	if err := s.audit.Record(ctx, req.Event(action, owner, method, "")); err != nil {
		return auditFailed(err)
	}
	return nil
}

// Refuse audits (sampled) a refusal for reason.
func (s *Service) Refuse(ctx context.Context, req Request, owner enclave.Owner, method, reason string) {
	s.audit.Refusal(ctx, req.Event(audit.ActionRefusal, owner, method, reason))
}

func auditFailed(err error) error {
	if _, ok := apierr.As(err); ok {
		return err
	}
	return apierr.ErrAuditFailed.WithRetry(5 * time.Second).Wrap(err)
}

var (
	// ErrStoreUnaudited answers a store whose record was committed but
	// whose audit line could not be made durable (its fsync failed or
	// timed out): not acknowledged, 503 audit_unavailable like every
	// audit failure. The record stays; storing again is safe (an
	// overwrite keeps the earlier value as a prior version).
	ErrStoreUnaudited = apierr.ErrAuditFailed.WithMessage("the audit log could not make this store's line durable; the store is not acknowledged: retry it")
	// ErrRecentSignIn refuses to replace a stored key with a credential
	// from an old sign-in.
	ErrRecentSignIn = apierr.ErrKeyExists.WithMessage("a key is already stored; replacing it needs a recent sign-in (re-authenticate and retry with a fresh token)")
	// ErrReauthenticate refuses to delete a key with a credential from an
	// old sign-in.
	ErrReauthenticate = apierr.New(http.StatusForbidden, "reauthentication_required", "deleting the key needs a recent sign-in (re-authenticate and retry with a fresh token)")
)

// SignIn is the sign-in age rule (firebase.overwrite_max_auth_age): with
// MaxAge > 0, a credential whose sign-in (At) is older than MaxAge may
// store a key where none is, but neither replace nor delete one: otherwise
// a stolen old token deletes the key and stores its own.
type SignIn struct {
	At     time.Time
	MaxAge time.Duration
}

// Stale reports whether the sign-in is too old to replace or delete a key
// at now.
func (r *SignIn) Stale(now time.Time) bool {
	return r != nil && r.MaxAge > 0 && now.Sub(r.At) > r.MaxAge
}

// knownMethods are the metrics labels of methods; every other method (the
// admin import names any) is "other", so no client value becomes a label.
var knownMethods = map[string]bool{"FIREBASE": true, "PASSKEY": true, "PIN": true}

func methodLabel(method string) string {
	if knownMethods[method] {
		return method
	}
	return "other"
}

// CheckAccess answers early, before any audit line or write, whether the
// client isolation rule lets acc act on the key of (owner, method),
// auditing (sampled) a refusal.
func (s *Service) CheckAccess(ctx context.Context, req Request, owner enclave.Owner, method string, acc enclave.Access) error {
	if !s.custody.ClientIsolation() {
		return nil
	}
	info, err := s.info(ctx, owner, method)
	if err != nil {
		return err
	}
	return s.refused(ctx, req, owner, method, s.custody.CheckAccess(owner, info, acc))
}

// info describes the stored key, nil when there is none.
func (s *Service) info(ctx context.Context, owner enclave.Owner, method string) (*enclave.KeyInfo, error) {
	info, err := s.custody.Info(ctx, owner, method)
	if errors.Is(err, apierr.ErrNotFound) {
		return nil, nil
	}
	return info, err
}

// refused audits (sampled) err when it is a client isolation refusal.
func (s *Service) refused(ctx context.Context, req Request, owner enclave.Owner, method string, err error) error {
	if errors.Is(err, enclave.ErrClientMismatch) {
		s.Refuse(ctx, req, owner, method, enclave.ErrClientMismatch.Code)
	}
	return err
}

// Store stores key for (owner, method): the client isolation rule for
// opts.ClientID and the sign-in age rule (req.SignIn) answered early, the
// audit line made durable (fail closed), then the key sealed and written
// (an overwrite keeps the old value as a prior version). replaced reports
// an overwrite.
func (s *Service) Store(ctx context.Context, req Request, owner enclave.Owner, method string, key []byte, opts enclave.PutOptions) (replaced bool, err error) {
	label := methodLabel(method)
	if err := s.checkStore(ctx, req, owner, method, opts); err != nil {
		s.metrics.Stores.WithLabelValues(label, "failed").Inc()
		return false, err
	}
	action := req.Action
	if action == "" {
		action = audit.ActionStore
	}
	// The audit line is written first (a line that cannot be written
	// refuses the store, nothing committed); its fsync then runs while
	// the record's group commit does, and the store is answered only once
	// both are durable (decisions/53).
	wait, err := s.recordPending(ctx, req.Event(action, owner, method, ""))
	if err != nil {
		s.metrics.Stores.WithLabelValues(label, "audit_failed").Inc()
		return false, auditFailed(err)
	}
	replaced, err = s.custody.PutKey(ctx, owner, method, key, opts)
	if err != nil {
		s.metrics.Stores.WithLabelValues(label, "failed").Inc()
		return false, s.refused(ctx, req, owner, method, err)
	}
	if err := wait(ctx); err != nil {
		// Committed, but its audit line may be lost: not acknowledged.
		// The record stays (nothing was disclosed); a retry stores again.
		s.log.Warn("a store was committed but its audit line could not be made durable: answered audit_failed",
			"method", label, "error", err)
		s.metrics.Stores.WithLabelValues(label, "audit_failed").Inc()
		return false, ErrStoreUnaudited.WithRetry(5 * time.Second).Wrap(err)
	}
	s.metrics.Stores.WithLabelValues(label, "stored").Inc()
	return replaced, nil
}

// pendingAuditor is an Auditor that can answer once a line is written and
// wait for its fsync separately (*audit.Log).
type pendingAuditor interface {
	RecordPending(ctx context.Context, ev audit.Event) (wait func(context.Context) error, err error)
}

// recordPending writes ev and returns the wait for its durability; with an
// Auditor that cannot split the two, the line is durable on return.
func (s *Service) recordPending(ctx context.Context, ev audit.Event) (func(context.Context) error, error) {
	if p, ok := s.audit.(pendingAuditor); ok {
		return p.RecordPending(ctx, ev)
	}
	if err := s.audit.Record(ctx, ev); err != nil {
		return nil, err
	}
	return func(context.Context) error { return nil }, nil
}

func (s *Service) checkStore(ctx context.Context, req Request, owner enclave.Owner, method string, opts enclave.PutOptions) error {
	stale := req.SignIn.Stale(s.now())
	if !stale && !s.custody.ClientIsolation() {
		return nil
	}
	info, err := s.info(ctx, owner, method)
	if err != nil {
		return err
	}
	if err := s.refused(ctx, req, owner, method, s.custody.CheckAccess(owner, info, enclave.Access{ClientID: opts.ClientID})); err != nil {
		return err
	}
	if stale && info != nil {
		s.Refuse(ctx, req, owner, method, ErrRecentSignIn.Code)
		return ErrRecentSignIn
	}
	return nil
}

// Release opens the key of (owner, method) for acc (the custody applies
// the client isolation rule to the record it opens), runs check (when not
// nil) on the description of that very record, and only then makes the
// release's audit line durable: a refusal leaves no "release" line, so
// every line describes what the client received. It makes no TPM command.
// The latency is observed by method and outcome.
func (s *Service) Release(ctx context.Context, req Request, owner enclave.Owner, method string, acc enclave.Access, check func(*enclave.KeyInfo) error) (secret.Bytes, *enclave.KeyInfo, error) {
	start := time.Now()
	label := methodLabel(method)
	key, info, err := s.custody.LookupAs(ctx, owner, method, acc)
	err = s.refused(ctx, req, owner, method, err)
	if err == nil && check != nil {
		if err = check(info); err != nil {
			key.Wipe()
		}
	}
	if err != nil {
		s.metrics.Releases.WithLabelValues(label, "not_released").Observe(time.Since(start).Seconds())
		return secret.Bytes{}, nil, err
	}
	ev := req.Event(audit.ActionRelease, owner, method, "")
	if info != nil {
		// The version released, in the line and in its receipt.
		if ev.Fields == nil {
			ev.Fields = make(map[string]string, 1)
		}
		ev.Fields[receipt.FieldKeyVersion] = strconv.FormatUint(info.Version, 10)
	}
	if err := s.audit.Record(ctx, ev); err != nil {
		key.Wipe()
		s.metrics.Releases.WithLabelValues(label, "audit_failed").Observe(time.Since(start).Seconds())
		return secret.Bytes{}, nil, auditFailed(err)
	}
	s.metrics.Releases.WithLabelValues(label, "released").Observe(time.Since(start).Seconds())
	return key, info, nil
}

// Delete removes the key of (owner, method) for acc and keeps its value as
// a prior version (restorable by the admin for keys.version_retention): a
// stolen credential cannot erase a key's history. The client isolation
// and sign-in age rules are answered first, then the audit line is made
// durable, then the rollback generation advances.
func (s *Service) Delete(ctx context.Context, req Request, owner enclave.Owner, method string, acc enclave.Access) error {
	if err := s.CheckAccess(ctx, req, owner, method, acc); err != nil {
		return err
	}
	if req.SignIn.Stale(s.now()) {
		s.Refuse(ctx, req, owner, method, ErrReauthenticate.Code)
		return ErrReauthenticate
	}
	if err := s.audit.Record(ctx, req.Event(audit.ActionDelete, owner, method, "")); err != nil {
		return auditFailed(err)
	}
	if err := s.custody.DeleteKeyKeepingPrior(ctx, owner, method, acc); err != nil {
		return s.refused(ctx, req, owner, method, err)
	}
	return nil
}

// Versions lists the prior versions of (owner, method), never their values.
func (s *Service) Versions(ctx context.Context, owner enclave.Owner, method string) ([]enclave.VersionInfo, error) {
	vs, err := s.custody.ListVersions(ctx, owner, method)
	if vs == nil && err == nil {
		vs = []enclave.VersionInfo{}
	}
	return vs, err
}

// Restore makes prior version id of (owner, method) current again (the
// current value, if any, becomes a prior version): the id's form is
// checked before the store is read, the audit line made durable first.
// The admin's restore is not subject to the client isolation rule.
func (s *Service) Restore(ctx context.Context, req Request, owner enclave.Owner, method, id string) error {
	if err := enclave.CheckVersionID(id); err != nil {
		return err
	}
	ev := req.Event("admin_restore_version", owner, method, "")
	if ev.Fields == nil {
		ev.Fields = map[string]string{}
	}
	ev.Fields["version"] = id
	if err := s.audit.Record(ctx, ev); err != nil {
		return auditFailed(err)
	}
	return s.custody.RestoreVersion(ctx, owner, method, id)
}

// Purge is the admin's deletion of an owner: audited first (fail closed),
// then every key and prior version of owner removed at once, then also
// (what other capabilities keep for the owner, may be nil). The rollback
// generation advances with every commit (the store's change ledger), so
// no call is needed here.
func (s *Service) Purge(ctx context.Context, req Request, owner enclave.Owner, also func(context.Context) error) error {
	if err := s.audit.Record(ctx, req.Event("admin_delete_user", owner, "", "")); err != nil {
		return auditFailed(err)
	}
	if _, err := s.custody.DeleteOwner(ctx, owner); err != nil {
		return err
	}
	if also != nil {
		if err := also(ctx); err != nil {
			return err
		}
	}
	return nil
}
