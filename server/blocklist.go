package server

import (
	"context"
	"errors"
	"maps"
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
// hour): this is the operator's way to stop one at once.
//
// On one node (bbolt) the list is kept in memory and written through to
// the store: this process is the store's only writer, so memory is never
// behind it. On a cluster's shared store another node may block a user at
// any moment, so every check is a linearizable read of the store (one
// etcd round trip to the leader, measured in BenchmarkBlockListHas): a
// block committed on any node refuses the next release everywhere, and a
// node without a quorum refuses (503) rather than answer from memory. On
// the Firebase key routes ([BlockList.ReadSession]) that round trip also
// fixes the revision the request's later reads (the key record) use.
type BlockList struct {
	mu     sync.RWMutex
	set    map[string]time.Time // one node only
	db     *store.DB
	shared bool
}

// LoadBlockList reads the block list from the store (on a shared store,
// nothing: it is read at each check). The native Firebase handlers
// (firebase.HTTPOptions.Blocked) and the Portal TBS routes ask its Has;
// the admin routes change it.
func LoadBlockList(ctx context.Context, db *store.DB) (*BlockList, error) {
	b := &BlockList{set: map[string]time.Time{}, db: db, shared: db.Shared()}
	if b.shared {
		return b, nil
	}
	err := db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketBlocked, nil, func(k, v []byte) error {
			t, _ := time.Parse(time.RFC3339, string(v))
			b.set[string(k)] = t
			return nil
		})
	})
	return b, err
}

// Has reports whether the operator blocked owner; an error (the shared
// store cannot answer now) refuses the request.
func (b *BlockList) Has(ctx context.Context, owner string) (bool, error) {
	if !b.shared {
		b.mu.RLock()
		defer b.mu.RUnlock()
		_, ok := b.set[owner]
		return ok, nil
	}
	var blocked bool
	err := b.db.View(ctx, func(tx *store.Tx) error {
		_, err := tx.Get(store.BucketBlocked, []byte(owner))
		if errors.Is(err, store.ErrNotFound) {
			blocked = false
			return nil
		}
		blocked = err == nil
		return err
	})
	return blocked, err
}

// ReadSession is middleware for routes that read the store more than once
// before they answer (a Firebase release reads the block list, then the
// key record): on a shared store it gives the request a store read
// session, so its reads share one linearizable etcd round trip (the
// first) and the later ones read at that revision on the local member.
// Everything committed before the request began is still seen (see
// store.ReadSession). On one node it does nothing.
func (b *BlockList) ReadSession(next echo.HandlerFunc) echo.HandlerFunc {
	if !b.shared {
		return next
	}
	return func(c echo.Context) error {
		r := c.Request()
		c.SetRequest(r.WithContext(store.WithReadSession(r.Context())))
		return next(c)
	}
}

// entries is the list: owner → when blocked.
func (b *BlockList) entries(ctx context.Context) (map[string]time.Time, error) {
	if !b.shared {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return maps.Clone(b.set), nil
	}
	out := map[string]time.Time{}
	err := b.db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketBlocked, nil, func(k, v []byte) error {
			t, _ := time.Parse(time.RFC3339, string(v))
			out[string(k)] = t
			return nil
		})
	})
	return out, err
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
	set, err := s.blocked.entries(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]entry, 0, len(set))
	for o, t := range set {
		out = append(out, entry{o, t})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Owner < out[j].Owner })
	return c.JSON(http.StatusOK, map[string]any{"blocked": out})
}
