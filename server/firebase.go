package server

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/httpx"
)

// FirebaseVerifier verifies Firebase ID tokens (server/firebase.Verifier).
type FirebaseVerifier interface {
	Verify(ctx context.Context, rawToken string) (*firebase.Identity, error)
}

// MethodFirebase is the backup method of keys stored through a Firebase
// ID token.
const MethodFirebase = "FIREBASE"

var (
	errFirebaseOff  = apierr.New(http.StatusServiceUnavailable, "firebase_not_configured", "Firebase Auth is not configured on this appliance (firebase.project_ids)")
	errBlocked      = apierr.New(http.StatusForbidden, "user_blocked", "this user is blocked by the operator")
	errTokenMissing = apierr.New(http.StatusUnauthorized, "token_missing", "send the Firebase ID token as Authorization: Bearer <token>")
	errRecentSignIn = apierr.ErrKeyExists.WithMessage("a key is already stored; replacing it needs a recent sign-in (re-authenticate and retry with a fresh token)")
	// ErrReauthenticate refuses a delete with a token from an old sign-in
	// when firebase.overwrite_max_auth_age is set.
	ErrReauthenticate = apierr.New(http.StatusForbidden, "reauthentication_required", "deleting the key needs a recent sign-in (re-authenticate and retry with a fresh token)")
)

func (s *Server) firebaseRoutes(public, admin *echo.Group) {
	public.PUT("/v1/firebase/key", s.firebasePut, s.unsealed)
	public.GET("/v1/firebase/key", s.firebaseGet, s.unsealed)
	public.POST("/v1/firebase/key/release", s.firebaseGet, s.unsealed)
	public.DELETE("/v1/firebase/key", s.firebaseDelete, s.unsealed)
	// The admin's view of Firebase users' keys: :subject is the owner
	// firebase:<project>/<tenant>/<uid>, URL-escaped.
	admin.GET("/firebase/users/:subject/keys/:method/versions", s.listFirebaseVersions, s.unsealed)
	admin.POST("/firebase/users/:subject/keys/:method/versions/:versionId/restore", s.restoreFirebaseVersion, s.unsealed)
	admin.DELETE("/firebase/users/:subject", s.deleteFirebaseUser, s.unsealed)
}

// VerifyFirebase checks the request's Firebase ID token (from header h, or
// Authorization: Bearer when h is empty) and the operator's block list.
func (s *Server) VerifyFirebase(c echo.Context, header string) (*firebase.Identity, error) {
	if s.opts.Firebase == nil {
		return nil, errFirebaseOff
	}
	var raw string
	if header != "" {
		raw = strings.TrimSpace(c.Request().Header.Get(header))
		raw = strings.TrimPrefix(raw, "Bearer ")
	} else {
		raw, _ = httpx.Bearer(c.Request().Header.Get("Authorization"))
	}
	if raw == "" {
		return nil, errTokenMissing
	}
	id, err := s.opts.Firebase.Verify(c.Request().Context(), raw)
	if err != nil {
		if e, ok := apierr.As(err); ok && e.Status == http.StatusUnauthorized {
			s.opts.Audit.Refusal(c.Request().Context(), s.event(c, audit.ActionRefusal, "", MethodFirebase, e.Code))
		}
		return nil, err
	}
	if s.blocked.has(id.Owner()) {
		s.opts.Audit.Refusal(c.Request().Context(), s.event(c, audit.ActionRefusal, id.Owner(), MethodFirebase, "user_blocked"))
		return nil, errBlocked
	}
	c.Set("actor", id.Owner())
	return id, nil
}

type keyRequest struct {
	Key string `json:"key"`
}

func (s *Server) firebasePut(c echo.Context) error {
	id, err := s.VerifyFirebase(c, "")
	if err != nil {
		return err
	}
	var req keyRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	key, err := httpx.DecodeKey(req.Key)
	if err != nil {
		return err
	}
	defer key.Wipe()
	ctx := c.Request().Context()
	owner := enclave.Owner(id.Owner())
	if err := s.CheckAccess(c, owner, MethodFirebase, enclave.Access{}); err != nil {
		return err
	}
	if max := s.cfg.Firebase.OverwriteMaxAuthAge; max > 0 && s.now().Sub(id.AuthTime) > max {
		if has, err := s.opts.Custody.HasKey(ctx, owner, MethodFirebase); err != nil {
			return err
		} else if has {
			s.opts.Audit.Refusal(ctx, s.event(c, audit.ActionRefusal, string(owner), MethodFirebase, "key_exists"))
			return errRecentSignIn
		}
	}
	replaced, err := s.StoreKey(c, owner, MethodFirebase, key.Reveal(), enclave.PutOptions{})
	if err != nil {
		return err
	}
	if replaced {
		return c.NoContent(http.StatusOK)
	}
	return c.NoContent(http.StatusCreated)
}

// CheckAccess answers early, before any audit line or write, whether the
// client isolation rule (enclave.Custody.SetClientIsolation) lets acc act
// on the key of (owner, method), auditing (sampled) a refusal. The custody
// checks the rule again on the record it acts on.
func (s *Server) CheckAccess(c echo.Context, owner enclave.Owner, method string, acc enclave.Access) error {
	if !s.opts.Custody.ClientIsolation() {
		return nil
	}
	info, err := s.opts.Custody.Info(c.Request().Context(), owner, method)
	if errors.Is(err, apierr.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.refusedAccess(c, owner, method, s.opts.Custody.CheckAccess(owner, info, acc))
}

// refusedAccess audits (sampled) err when it is a client isolation refusal.
func (s *Server) refusedAccess(c echo.Context, owner enclave.Owner, method string, err error) error {
	if errors.Is(err, enclave.ErrClientMismatch) {
		s.opts.Audit.Refusal(c.Request().Context(), s.event(c, audit.ActionRefusal, string(owner), method, enclave.ErrClientMismatch.Code))
	}
	return err
}

// StoreKey stores a key with audit (fail closed: the audit line is durable
// before the key is written) and metrics. opts.ClientID is the acting
// client for the client isolation rule.
func (s *Server) StoreKey(c echo.Context, owner enclave.Owner, method string, key []byte, opts enclave.PutOptions) (bool, error) {
	ctx := c.Request().Context()
	if err := s.CheckAccess(c, owner, method, enclave.Access{ClientID: opts.ClientID}); err != nil {
		s.opts.Metrics.Stores.WithLabelValues(method, "failed").Inc()
		return false, err
	}
	if err := s.opts.Audit.Record(ctx, s.event(c, audit.ActionStore, string(owner), method, "")); err != nil {
		s.opts.Metrics.Stores.WithLabelValues(method, "audit_failed").Inc()
		return false, err
	}
	replaced, err := s.opts.Custody.PutKey(ctx, owner, method, key, opts)
	outcome := "stored"
	if err != nil {
		outcome = "failed"
		err = s.refusedAccess(c, owner, method, err)
	}
	s.opts.Metrics.Stores.WithLabelValues(method, outcome).Inc()
	return replaced, err
}

// ReleaseKey opens a key for its verified owner, audits the release (fail
// closed) and observes its latency. It makes no TPM command.
func (s *Server) ReleaseKey(c echo.Context, owner enclave.Owner, method string) (secret.Bytes, *enclave.KeyInfo, error) {
	return s.ReleaseKeyChecked(c, owner, method, enclave.Access{}, nil)
}

// ReleaseKeyChecked is ReleaseKey for acc (the client isolation rule is
// applied by the custody to the record it opens) with check run on the
// description of the very record that was opened, before the release is
// audited: a refusal (audited as one) leaves no "release" line, so every
// audit line describes what the client received.
func (s *Server) ReleaseKeyChecked(c echo.Context, owner enclave.Owner, method string, acc enclave.Access, check func(*enclave.KeyInfo) error) (secret.Bytes, *enclave.KeyInfo, error) {
	start := time.Now()
	ctx := c.Request().Context()
	key, info, err := s.opts.Custody.LookupAs(ctx, owner, method, acc)
	err = s.refusedAccess(c, owner, method, err)
	if err == nil && check != nil {
		if err = check(info); err != nil {
			key.Wipe()
		}
	}
	if err != nil {
		s.opts.Metrics.Releases.WithLabelValues(method, "not_released").Observe(time.Since(start).Seconds())
		return secret.Bytes{}, nil, err
	}
	if err := s.opts.Audit.Record(ctx, s.event(c, audit.ActionRelease, string(owner), method, "")); err != nil {
		key.Wipe()
		s.opts.Metrics.Releases.WithLabelValues(method, "audit_failed").Observe(time.Since(start).Seconds())
		return secret.Bytes{}, nil, err
	}
	s.opts.Metrics.Releases.WithLabelValues(method, "released").Observe(time.Since(start).Seconds())
	return key, info, nil
}

type releaseRequest struct {
	RecipientPublicKey string `json:"recipientPublicKey"`
}

// KeyResponse is a released key: in the clear (over TLS) or sealed to the
// client's HPKE key.
type KeyResponse struct {
	Key       string `json:"key,omitempty"`
	SealedKey string `json:"sealedKey,omitempty"`
	Enc       string `json:"enc,omitempty"`
	Suite     string `json:"suite,omitempty"`
}

var errRecipientEncoding = apierr.New(http.StatusBadRequest, "invalid_recipient_key", "recipientPublicKey must be base64 or base64url")

// HPKEInfo is the HPKE info string a Firebase release is sealed with.
func HPKEInfo(route string, owner enclave.Owner) []byte {
	return []byte("keywarden release v1|" + route + "|" + string(owner))
}

func (s *Server) firebaseGet(c echo.Context) error {
	id, err := s.VerifyFirebase(c, "")
	if err != nil {
		return err
	}
	recipient := c.QueryParam("recipientPublicKey")
	if c.Request().Method == http.MethodPost {
		var req releaseRequest
		if err := httpx.Bind(c, &req, 0); err != nil {
			return err
		}
		recipient = req.RecipientPublicKey
	}
	var rpk []byte
	if recipient != "" {
		var ok bool
		if rpk, ok = httpx.DecodeBase64(recipient); !ok {
			return errRecipientEncoding
		}
		if err := enclave.ValidRecipientKey(rpk); err != nil {
			return err
		}
	}
	owner := enclave.Owner(id.Owner())
	key, _, err := s.ReleaseKey(c, owner, MethodFirebase)
	if err != nil {
		return err
	}
	defer key.Wipe()
	c.Response().Header().Set("Cache-Control", "no-store")
	if rpk != nil {
		enc, ct, suite, err := enclave.SealToRecipient(rpk, key.Reveal(), HPKEInfo("firebase", owner))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, KeyResponse{SealedKey: base64.StdEncoding.EncodeToString(ct), Enc: base64.StdEncoding.EncodeToString(enc), Suite: suite})
	}
	return c.JSON(http.StatusOK, KeyResponse{Key: base64.StdEncoding.EncodeToString(key.Reveal())})
}

func (s *Server) firebaseDelete(c echo.Context) error {
	id, err := s.VerifyFirebase(c, "")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	owner := enclave.Owner(id.Owner())
	if err := s.CheckAccess(c, owner, MethodFirebase, enclave.Access{}); err != nil {
		return err
	}
	// The sign-in age rule of overwrites holds for deletes too: otherwise
	// a stolen old token deletes the key and stores its own.
	if max := s.cfg.Firebase.OverwriteMaxAuthAge; max > 0 && s.now().Sub(id.AuthTime) > max {
		s.opts.Audit.Refusal(ctx, s.event(c, audit.ActionRefusal, string(owner), MethodFirebase, ErrReauthenticate.Code))
		return ErrReauthenticate
	}
	if err := s.opts.Audit.Record(ctx, s.event(c, audit.ActionDelete, string(owner), MethodFirebase, "")); err != nil {
		return err
	}
	// The value is kept as a prior version (restorable by the admin for
	// keys.version_retention); only the admin's user deletion purges.
	if err := s.opts.Custody.DeleteKeyKeepingPrior(ctx, owner, MethodFirebase, enclave.Access{}); err != nil {
		return s.refusedAccess(c, owner, MethodFirebase, err)
	}
	s.Destructive(c)
	return c.NoContent(http.StatusNoContent)
}
