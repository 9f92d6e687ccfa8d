package server

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/store"
)

// BlockList holds Firebase owners an operator blocked. Revoked or disabled
// Firebase users cannot be known offline (ID tokens stay valid up to an
// hour): this is the operator's way to stop one at once. Kept in memory,
// written through to the store.
type BlockList struct {
	mu  sync.RWMutex
	set map[string]time.Time
	db  *store.DB
}

// LoadBlockList reads the block list from the store. The native Firebase
// handlers (firebase.HTTPOptions.Blocked) and the Portal TBS routes ask
// its Has; the admin routes change it.
func LoadBlockList(ctx context.Context, db *store.DB) (*BlockList, error) {
	b := &BlockList{set: map[string]time.Time{}, db: db}
	err := db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketBlocked, nil, func(k, v []byte) error {
			t, _ := time.Parse(time.RFC3339, string(v))
			b.set[string(k)] = t
			return nil
		})
	})
	return b, err
}

// Has reports whether the operator blocked owner.
func (b *BlockList) Has(owner string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.set[owner]
	return ok
}

// blockedOwner takes the full owner "firebase:<project>/<tenant>/<sub>" as
// the :subject parameter (URL-escaped).
func blockedOwner(c echo.Context) (enclave.Owner, error) {
	raw, err := httpx.PathParam(c, "subject")
	if err != nil {
		return "", apierr.ErrBadRequest.WithMessage("the user name is not URL-escaped correctly")
	}
	o := enclave.Owner(raw)
	if err := o.Validate(); err != nil || len(o) < len("firebase:") || o[:9] != "firebase:" {
		return "", apierr.ErrBadRequest.WithMessage("name the user as firebase:<project>/<tenant>/<uid> (URL-escaped; tenant empty when none)")
	}
	return o, nil
}

func (s *Server) block(c echo.Context) error {
	o, err := blockedOwner(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := s.opts.Audit.Record(ctx, s.event(c, "admin_block", string(o), MethodFirebase, "")); err != nil {
		return err
	}
	now := s.now().UTC()
	if err := s.opts.DB.Update(ctx, func(tx *store.Tx) error {
		return tx.Put(store.BucketBlocked, []byte(o), []byte(now.Format(time.RFC3339)))
	}); err != nil {
		return err
	}
	s.blocked.mu.Lock()
	s.blocked.set[string(o)] = now
	s.blocked.mu.Unlock()
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) unblock(c echo.Context) error {
	o, err := blockedOwner(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := s.opts.Audit.Record(ctx, s.event(c, "admin_unblock", string(o), MethodFirebase, "")); err != nil {
		return err
	}
	if err := s.opts.DB.Update(ctx, func(tx *store.Tx) error { return tx.Delete(store.BucketBlocked, []byte(o)) }); err != nil {
		return err
	}
	s.blocked.mu.Lock()
	delete(s.blocked.set, string(o))
	s.blocked.mu.Unlock()
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) listBlocked(c echo.Context) error {
	type entry struct {
		Owner     string    `json:"owner"`
		BlockedAt time.Time `json:"blockedAt"`
	}
	s.blocked.mu.RLock()
	out := make([]entry, 0, len(s.blocked.set))
	for o, t := range s.blocked.set {
		out = append(out, entry{o, t})
	}
	s.blocked.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Owner < out[j].Owner })
	return c.JSON(http.StatusOK, map[string]any{"blocked": out})
}
