// Package clusterapi serves the cluster's admin-listener routes: the
// attested join (joins.go, over package cluster/join) and the members
// (members.go).
package clusterapi

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/cluster/join"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/httpx"
)

// Joins serves the join routes. The joiner's three routes are on the admin
// listener without the admin key (a joining node has none): the nonce, the
// request and the poll, which answers only the holder of the request's
// poll secret. The operator's routes are under /v1/admin with the key.
type Joins struct {
	svc *join.Service
}

// NewJoins serves svc.
func NewJoins(svc *join.Service) *Joins { return &Joins{svc: svc} }

// Nonce is POST /v1/cluster/joins/nonce: 200 {nonce, pcrSelection, expires}.
func (h *Joins) Nonce(c echo.Context) error {
	n, err := h.svc.IssueNonce(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, n)
}

// Submit is POST /v1/cluster/joins: 202 {id, pollSecret, akName,
// ekFingerprint, expires}.
func (h *Joins) Submit(c echo.Context) error {
	var req join.Request
	if err := httpx.Bind(c, &req, join.MaxRequestBytes); err != nil {
		var he *echo.HTTPError
		if errors.Is(err, apierr.ErrTooLarge) || (errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge) {
			return join.ErrTooLarge
		}
		return err
	}
	sub, err := h.svc.Submit(c.Request().Context(), &req, c.RealIP())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, sub)
}

// Poll is GET /v1/cluster/joins/:id with "Authorization: Bearer <poll
// secret>": 200 {id, state, reason, expires, answer}. Without the secret:
// 404 join_not_found, as for an unknown id.
func (h *Joins) Poll(c echo.Context) error {
	secret, _ := httpx.Bearer(c.Request().Header.Get(echo.HeaderAuthorization))
	st, err := h.svc.Poll(c.Request().Context(), c.Param("id"), secret)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// List is GET /v1/admin/cluster/joins: {joins: [...]}.
func (h *Joins) List(c echo.Context) error {
	l, err := h.svc.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"joins": l})
}

// Get is GET /v1/admin/cluster/joins/:id.
func (h *Joins) Get(c echo.Context) error {
	p, err := h.svc.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

// Approve is POST /v1/admin/cluster/joins/:id/approve.
func (h *Joins) Approve(c echo.Context) error {
	p, err := h.svc.Approve(c.Request().Context(), c.Param("id"), httpx.Actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

// refuseBody is the optional body of a refusal.
type refuseBody struct {
	Reason string `json:"reason"`
}

func (*refuseBody) Optional() {}

// Refuse is POST /v1/admin/cluster/joins/:id/refuse {reason?} (a
// snake_case code; default refused_by_operator).
func (h *Joins) Refuse(c echo.Context) error {
	var b refuseBody
	if err := httpx.Bind(c, &b, 4<<10); err != nil {
		return err
	}
	if !snake(b.Reason) {
		return join.ErrInvalid.WithMessage("reason: a snake_case code of at most 64 characters (a-z, 0-9, _)")
	}
	p, err := h.svc.Refuse(c.Request().Context(), c.Param("id"), httpx.Actor(c), b.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

// snake accepts "" (the default reason) or a snake_case code: audit
// reasons are stable codes.
func snake(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}
