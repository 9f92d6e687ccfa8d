package store

import (
	"context"
	"sync/atomic"
)

// ReadSession lets the read transactions of one request share one
// linearizable point of a shared backend: the first View made with a
// context carrying it confirms with the cluster's leader where "now" is
// (one round trip), and every later View of the same request reads at that
// point on the member the node talks to, without asking the leader again.
// Nothing a View of the session sees is older than the session's first
// View, which began after the request did: a deletion, a block or a key
// committed before the request began is seen by all of them, and a member
// without a quorum cannot fix the point (the first View fails).
//
// An Update through [DB.Update] with the session's context ends the point
// (the request's next View fixes a new one, so the request reads its own
// writes). Backends without a shared point (bbolt: one writer, every read
// current) ignore sessions.
//
// Give one to the request's context ([WithReadSession]) where a request
// reads the store several times before it answers (a release: the block
// list, then the key record), never to a context that outlives the
// request.
type ReadSession struct {
	rev atomic.Int64
}

type readSessionKey struct{}

// WithReadSession returns ctx carrying a new read session.
func WithReadSession(ctx context.Context) context.Context {
	return context.WithValue(ctx, readSessionKey{}, &ReadSession{})
}

// ReadSessionFrom is the read session ctx carries, or nil.
func ReadSessionFrom(ctx context.Context) *ReadSession {
	s, _ := ctx.Value(readSessionKey{}).(*ReadSession)
	return s
}

// Revision is the backend's point the session reads at (a backend's own
// revision number), 0 before the first View fixed it.
func (s *ReadSession) Revision() int64 { return s.rev.Load() }

// Fix records the point the first View read at, linearizably; a point
// already fixed stays.
func (s *ReadSession) Fix(rev int64) { s.rev.CompareAndSwap(0, rev) }

// end forgets the point: the next View fixes a new one.
func (s *ReadSession) end() { s.rev.Store(0) }
