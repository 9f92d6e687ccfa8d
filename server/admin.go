package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/keywarden/keywarden/store"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/server/httpx"
)

var errAdminAuth = apierr.New(http.StatusUnauthorized, "admin_unauthorized", "missing or invalid admin API key (Authorization: Bearer <key>)")

// HashAdminKey is the configured form of an admin API key.
func HashAdminKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(h[:])
}

func adminKeyHashes(a config.Admin) ([][32]byte, error) {
	var out [][32]byte
	for _, h := range a.KeyHashes {
		b, err := hex.DecodeString(strings.TrimPrefix(h, "sha256:"))
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("server: admin.key_hashes: bad entry")
		}
		out = append(out, [32]byte(b))
	}
	if !a.Key.IsZero() {
		out = append(out, sha256.Sum256([]byte(a.Key.Reveal())))
	}
	return out, nil
}

// requireAdmin checks the admin API key. The presented key is hashed and
// compared in constant time with every configured hash.
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		tok, ok := httpx.Bearer(c.Request().Header.Get("Authorization"))
		if !ok {
			return errAdminAuth
		}
		h := sha256.Sum256([]byte(tok))
		match := 0
		for _, k := range s.adminKey {
			match |= subtle.ConstantTimeCompare(h[:], k[:])
		}
		if match != 1 {
			s.opts.Audit.Refusal(c.Request().Context(), s.event(c, "admin_auth", "", "", "admin_unauthorized"))
			return errAdminAuth
		}
		httpx.SetActor(c, "admin:"+hex.EncodeToString(h[:4]))
		return next(c)
	}
}

// event makes an audit event for this request (keys.Request.Event, the
// one place events are built).
func (s *Server) event(c echo.Context, action, owner, method, reason string) audit.Event {
	return httpx.KeysRequest(c).Event(action, enclave.Owner(owner), method, reason)
}

// ValidUserID is the one user-id rule ([enclave.ValidUserID]).
func ValidUserID(id string) error { return enclave.ValidUserID(id) }

type sessionTokenRequest struct {
	TTL string `json:"ttl"`
}

type sessionTokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func (s *Server) mintSessionToken(c echo.Context) error {
	userID := c.Param("userId")
	if err := ValidUserID(userID); err != nil {
		return err
	}
	var req sessionTokenRequest
	if c.Request().ContentLength != 0 {
		if err := httpx.Bind(c, &req, 0); err != nil {
			return err
		}
	}
	ttl := s.cfg.Session.TTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > s.cfg.Session.MaxTTL {
			return apierr.ErrBadRequest.WithMessage("ttl must be a duration between 0 and %s", s.cfg.Session.MaxTTL)
		}
		ttl = d
	}
	if err := s.opts.Audit.Record(c.Request().Context(), s.event(c, "admin_session_token", string(enclave.UserOwner(userID)), "", "")); err != nil {
		return err
	}
	tok, exp := s.opts.Sessions.Mint(userID, ttl)
	return c.JSON(http.StatusCreated, sessionTokenResponse{Token: tok, ExpiresAt: exp})
}

type userDescription struct {
	UserID string            `json:"userId"`
	Keys   []enclave.KeyInfo `json:"keys"`
	Data   map[string]any    `json:"data,omitempty"`
}

func (s *Server) describeUser(c echo.Context) error {
	userID := c.Param("userId")
	if err := ValidUserID(userID); err != nil {
		return err
	}
	ctx := c.Request().Context()
	keys, err := s.opts.Custody.ListKeys(ctx, enclave.UserOwner(userID))
	if err != nil {
		return err
	}
	d := userDescription{UserID: userID, Keys: keys, Data: map[string]any{}}
	if d.Keys == nil {
		d.Keys = []enclave.KeyInfo{}
	}
	for _, u := range s.opts.Users {
		v, err := u.DescribeUser(ctx, userID)
		if err != nil {
			return err
		}
		if v != nil {
			d.Data[u.Name()] = v
		}
	}
	if len(d.Keys) == 0 && len(d.Data) == 0 {
		return apierr.ErrNotFound.WithMessage("nothing is stored for this user")
	}
	return c.JSON(http.StatusOK, d)
}

func (s *Server) deleteUser(c echo.Context) error {
	userID := c.Param("userId")
	if err := ValidUserID(userID); err != nil {
		return err
	}
	return s.purgeOwner(c, enclave.UserOwner(userID), userID)
}

// deleteFirebaseUser purges every key and prior version of a Firebase user
// (owner firebase:<project>/<tenant>/<uid>, URL-escaped): the user-facing
// DELETE keeps a prior version, only this purges at once.
func (s *Server) deleteFirebaseUser(c echo.Context) error {
	owner, err := blockedOwner(c)
	if err != nil {
		return err
	}
	return s.purgeOwner(c, owner, "")
}

// purgeOwner is the admin's user deletion: rate-limited, audited (fail
// closed), then every key and prior version of owner, and what the
// capabilities keep (for a user id; any owner for an OwnerDeleter),
// removed at once.
func (s *Server) purgeOwner(c echo.Context, owner enclave.Owner, userID string) error {
	ctx := c.Request().Context()
	if ok, wait := s.deletes.Take("user-delete", s.now()); !ok {
		return apierr.ErrRateLimited.WithMessage("too many user deletions; at most %d a minute (limits.user_deletes_per_minute)", s.cfg.Limits.UserDeletesPerMinute).WithRetry(wait)
	}
	also := func(ctx context.Context) error {
		for _, u := range s.opts.Users {
			var err error
			if od, ok := u.(OwnerDeleter); ok {
				err = od.DeleteOwnerData(ctx, owner)
			} else if userID != "" {
				err = u.DeleteUser(ctx, userID)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := s.keys.Purge(ctx, httpx.KeysRequest(c), owner, also); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) listVersions(c echo.Context) error {
	userID := c.Param("userId")
	if err := ValidUserID(userID); err != nil {
		return err
	}
	return s.listOwnerVersions(c, enclave.UserOwner(userID), c.Param("method"))
}

func (s *Server) listFirebaseVersions(c echo.Context) error {
	owner, err := blockedOwner(c)
	if err != nil {
		return err
	}
	return s.listOwnerVersions(c, owner, c.Param("method"))
}

func (s *Server) listOwnerVersions(c echo.Context, owner enclave.Owner, method string) error {
	vs, err := s.keys.Versions(c.Request().Context(), owner, method)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"versions": vs})
}

func (s *Server) restoreVersion(c echo.Context) error {
	userID := c.Param("userId")
	if err := ValidUserID(userID); err != nil {
		return err
	}
	return s.restoreOwnerVersion(c, enclave.UserOwner(userID), c.Param("method"))
}

func (s *Server) restoreFirebaseVersion(c echo.Context) error {
	owner, err := blockedOwner(c)
	if err != nil {
		return err
	}
	return s.restoreOwnerVersion(c, owner, c.Param("method"))
}

// restoreOwnerVersion restores through the keys service (the version id's
// form checked, audited first).
func (s *Server) restoreOwnerVersion(c echo.Context, owner enclave.Owner, method string) error {
	if err := s.keys.Restore(c.Request().Context(), httpx.KeysRequest(c), owner, method, c.Param("versionId")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// backup streams a consistent copy of the live store (Tx.WriteTo): bbolt's
// lock keeps other processes from copying the file (decisions/15).
func (s *Server) backup(c echo.Context) error {
	if err := s.opts.Audit.Record(c.Request().Context(), s.event(c, "admin_backup", "", "", "")); err != nil {
		return err
	}
	if s.opts.Rollback != nil {
		s.opts.Rollback.BeforeBackup()
	}
	c.Response().Header().Set(echo.HeaderContentType, "application/octet-stream")
	c.Response().Header().Set("Content-Disposition", `attachment; filename="keywarden-backup.db"`)
	c.Response().WriteHeader(http.StatusOK)
	_, err := s.opts.DB.WriteTo(newProgressWriter(c.Response(), max(backupStall, s.cfg.Listen.WriteTimeout)))
	if err != nil {
		s.log.Error("backup stream failed", "err", err)
		return nil
	}
	now := s.now().UTC()
	s.lastBackup.Store(now.Unix())
	if err := s.opts.DB.Update(context.Background(), func(tx *store.Tx) error {
		return tx.PutMeta(store.MetaLastBackup, []byte(now.Format(time.RFC3339)))
	}); err != nil {
		s.log.Error("recording the backup time failed", "err", err)
	}
	return nil
}

// backupStall is the window in which the backup stream must move at least
// backupMinProgress bytes, or be cut. The listener's write timeout bounds a
// whole answer, which a backup of a store of some GB cannot meet (a copy of
// 3.5 GB on a busy host took longer than the default 15 s and was cut), so
// the backup moves its write deadline on while its client keeps reading at
// a useful rate. A client that reads a trickle (on purpose or over a bad
// link) is cut: the stream holds a read transaction open, which keeps the
// store from reusing freed pages, and a concurrency slot. (Variables, not
// constants, for the tests.)
var (
	backupStall             = time.Minute
	backupMinProgress int64 = 8 << 20
)

// progressWriter writes to an HTTP answer and sets the connection's write
// deadline to stall from now at the first write and then each time at
// least min bytes went out since it last did (at most once a second): a
// stream that makes progress is not cut by the listener's write timeout;
// one whose client reads less than min bytes in stall is.
type progressWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	stall time.Duration
	min   int64
	since int64 // bytes written since the deadline was last moved
	last  time.Time
}

func newProgressWriter(w *echo.Response, stall time.Duration) *progressWriter {
	return &progressWriter{w: w, rc: http.NewResponseController(w.Writer), stall: stall, min: backupMinProgress}
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if now := time.Now(); p.last.IsZero() || (p.since >= p.min && now.Sub(p.last) >= time.Second) {
		// Not every writer has a deadline (a test's recorder): then the
		// listener's own bounds apply.
		_ = p.rc.SetWriteDeadline(now.Add(p.stall))
		p.last, p.since = now, 0
	}
	n, err := p.w.Write(b)
	p.since += int64(n)
	return n, err
}
