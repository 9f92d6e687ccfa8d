// Package clusterapi serves the admin routes of an appliance cluster on
// embedded etcd: the members (members.go: status and removal) and the
// attested join (joins.go).
package clusterapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
)

// Audit actions of the member routes.
const (
	ActionClusterStatus = "admin_cluster_status"
	ActionClusterRemove = "admin_cluster_remove"
)

// Errors of the member routes.
var (
	ErrBadMemberID   = apierr.New(http.StatusBadRequest, "invalid_member_id", "the member id is hexadecimal, as `keywarden cluster status` prints it")
	ErrNoSuchMember  = apierr.New(http.StatusNotFound, "member_not_found", "no member of this cluster has that id")
	ErrLastVoter     = apierr.New(http.StatusConflict, "last_voter", "refusing to remove the last voting member: the cluster and every key in it would be gone")
	ErrLoseQuorum    = apierr.New(http.StatusConflict, "would_lose_quorum", "refusing to remove a voting member: the members left that are up would not make a majority; bring the others back first")
	ErrRemoveSelf    = apierr.New(http.StatusConflict, "member_is_self", "refusing to remove the member serving this request; send the removal to another member")
	ErrClusterFailed = apierr.New(http.StatusServiceUnavailable, "cluster_unavailable", "the cluster's membership cannot be read or changed now (no quorum?); retry later")
)

// Cluster is what the member routes need of the embedded member
// (*cluster.Embedded).
type Cluster interface {
	Status(ctx context.Context) (cluster.Status, error)
	Remove(ctx context.Context, id cluster.ID) (cluster.MemberInfo, error)
}

// Members serves GET /v1/admin/cluster and
// DELETE /v1/admin/cluster/members/:id.
type Members struct {
	c     Cluster
	audit keys.Auditor
	log   *slog.Logger
}

// NewMembers makes the member routes' handler.
func NewMembers(c Cluster, a keys.Auditor, log *slog.Logger) (*Members, error) {
	if c == nil || a == nil {
		return nil, errors.New("clusterapi: the member and the audit log are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Members{c: c, audit: a, log: log}, nil
}

// Status answers the cluster's members as this member sees them: id
// (hexadecimal), name, peer URLs, learner, leader and which one is this
// node.
func (h *Members) Status(c echo.Context) error {
	ctx := c.Request().Context()
	st, err := h.c.Status(ctx)
	if err != nil {
		h.log.Warn("cluster status", "err", err)
		return ErrClusterFailed.Wrap(err)
	}
	if err := h.audit.Record(ctx, h.event(c, ActionClusterStatus, audit.OutcomeSuccess, "", nil)); err != nil {
		return apierr.ErrAuditFailed.Wrap(err)
	}
	return c.JSON(http.StatusOK, st)
}

// RemoveMember removes a member by id, refusing the last voter, a removal
// that would lose quorum, and the member serving the request.
func (h *Members) RemoveMember(c echo.Context) error {
	ctx := c.Request().Context()
	raw, err := httpx.PathParam(c, "id")
	if err != nil {
		return ErrBadMemberID
	}
	id, err := cluster.ParseID(raw)
	if err != nil {
		return ErrBadMemberID
	}
	fields := map[string]string{"member_id": id.String()}
	m, err := h.c.Remove(ctx, id)
	if m.Name != "" {
		fields["member_name"] = m.Name
	}
	if err != nil {
		e := removeError(err)
		if e.Status < 500 {
			// Every refused removal is a line (not a sampled refusal):
			// an operator's membership change matters even when refused.
			_ = h.audit.Record(ctx, h.event(c, ActionClusterRemove, audit.OutcomeRefused, e.Code, fields))
		} else {
			h.log.Error("cluster member removal failed", "member_id", id.String(), "err", err)
		}
		return e
	}
	if err := h.audit.Record(ctx, h.event(c, ActionClusterRemove, audit.OutcomeSuccess, "", fields)); err != nil {
		// The member is gone already; say so, and that the line is missing.
		h.log.Error("cluster member removed but its audit line could not be written", "member_id", id.String(), "err", err)
		return apierr.ErrAuditFailed.Wrap(err)
	}
	h.log.Info("cluster member removed", "member_id", id.String(), "name", m.Name)
	return c.JSON(http.StatusOK, map[string]any{"removed": m})
}

func removeError(err error) *apierr.Error {
	switch {
	case errors.Is(err, cluster.ErrMemberNotFound):
		return ErrNoSuchMember
	case errors.Is(err, cluster.ErrLastVoter):
		return ErrLastVoter
	case errors.Is(err, cluster.ErrLoseQuorum):
		return ErrLoseQuorum
	case errors.Is(err, cluster.ErrRemoveSelf):
		return ErrRemoveSelf
	}
	return ErrClusterFailed.Wrap(err)
}

func (h *Members) event(c echo.Context, action, outcome, reason string, fields map[string]string) audit.Event {
	r := httpx.KeysRequest(c)
	return audit.Event{Action: action, Outcome: outcome, Reason: reason, Actor: r.Actor, RequestID: r.RequestID, Remote: r.Remote, Fields: fields}
}
