package clientshares

import (
	"context"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/httpx"
)

// Audit actions of this package besides audit.ActionStore, ActionRelease
// and ActionDelete. Every line carries the field kind=client_share.
const (
	ActionStatus  = "admin_client_share_status"
	ActionRestore = "admin_restore_version"
	auditKind     = "client_share"
)

// Handler serves the client-share admin routes. It implements server.Routes
// and server.UserData.
type Handler struct {
	store *Store
	srv   *server.Server
}

// NewHandler returns the routes over st.
func NewHandler(st *Store) *Handler { return &Handler{store: st} }

// Store is the underlying store.
func (h *Handler) Store() *Store { return h.store }

// RegisterRoutes adds the admin routes (see the package doc).
func (h *Handler) RegisterRoutes(s *server.Server, _, admin *echo.Group) {
	h.srv = s
	const p = "/users/:userId/client-shares"
	admin.GET(p, h.list, s.Unsealed)
	admin.PUT(p+"/:method", h.put, s.Unsealed)
	admin.GET(p+"/:method", h.get, s.Unsealed)
	admin.DELETE(p+"/:method", h.delete, s.Unsealed)
	admin.PUT(p+"/:method/status", h.status, s.Unsealed)
	admin.GET(p+"/:method/versions", h.versions, s.Unsealed)
	admin.POST(p+"/:method/versions/:versionId/restore", h.restore, s.Unsealed)
}

// target validates the path's user id and method.
func target(c echo.Context) (enclave.Owner, string, error) {
	userID := c.Param("userId")
	if err := server.ValidUserID(userID); err != nil {
		return "", "", err
	}
	method := c.Param("method")
	if err := ValidMethod(method); err != nil {
		return "", "", err
	}
	return enclave.UserOwner(userID), method, nil
}

func (h *Handler) record(c echo.Context, action string, owner enclave.Owner, method string, fields map[string]string) error {
	ev := h.srv.Event(c, action, string(owner), method, "")
	ev.Fields = map[string]string{"kind": auditKind}
	for k, v := range fields {
		ev.Fields[k] = v
	}
	return h.srv.Audit().Record(c.Request().Context(), ev)
}

// putRequest is the body of PUT …/client-shares/:method.
type putRequest struct {
	CipherText *string `json:"cipherText"`
	Stored     *bool   `json:"stored"`
}

// Validate checks the body without the store.
func (r putRequest) Validate() error {
	if r.CipherText == nil {
		return ErrEmptyCipherText
	}
	return validCipherText(*r.CipherText)
}

// shareResponse is what GET answers.
type shareResponse struct {
	Info
	CipherText string `json:"cipherText"`
}

func (h *Handler) put(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	var req putRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	stored := req.Stored != nil && *req.Stored
	if err := h.record(c, audit.ActionStore, owner, method, map[string]string{"stored": strconv.FormatBool(stored)}); err != nil {
		return err
	}
	info, replaced, err := h.store.Put(c.Request().Context(), owner, method, *req.CipherText, stored)
	if err != nil {
		return err
	}
	if replaced {
		return c.JSON(http.StatusOK, info)
	}
	return c.JSON(http.StatusCreated, info)
}

func (h *Handler) get(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	sh, err := h.store.Get(c.Request().Context(), owner, method)
	if err != nil {
		return err
	}
	if err := h.record(c, audit.ActionRelease, owner, method, nil); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, shareResponse{Info: sh.Info, CipherText: sh.CipherText.Reveal()})
}

// statusRequest is the body of PUT …/status.
type statusRequest struct {
	Stored *bool `json:"stored"`
}

var errStatusMissing = apierr.ErrBadRequest.WithMessage(`send {"stored": true} or {"stored": false}`)

func (h *Handler) status(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	var req statusRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	if req.Stored == nil {
		return errStatusMissing
	}
	ctx := c.Request().Context()
	// Not found is answered without an audit line: nothing would change.
	if _, err := h.store.Info(ctx, owner, method); err != nil {
		return err
	}
	if err := h.record(c, ActionStatus, owner, method, map[string]string{"stored": strconv.FormatBool(*req.Stored)}); err != nil {
		return err
	}
	info, err := h.store.SetStored(ctx, owner, method, *req.Stored)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, info)
}

func (h *Handler) delete(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := h.store.Info(ctx, owner, method); err != nil {
		return err
	}
	if err := h.record(c, audit.ActionDelete, owner, method, nil); err != nil {
		return err
	}
	if err := h.store.Delete(ctx, owner, method); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (h *Handler) list(c echo.Context) error {
	userID := c.Param("userId")
	if err := server.ValidUserID(userID); err != nil {
		return err
	}
	infos, err := h.store.List(c.Request().Context(), enclave.UserOwner(userID))
	if err != nil {
		return err
	}
	if infos == nil {
		infos = []Info{}
	}
	return c.JSON(http.StatusOK, map[string]any{"shares": infos})
}

func (h *Handler) versions(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	vs, err := h.store.ListVersions(c.Request().Context(), owner, method)
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []VersionInfo{}
	}
	return c.JSON(http.StatusOK, map[string]any{"versions": vs})
}

func (h *Handler) restore(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	id := c.Param("versionId")
	if err := enclave.CheckVersionID(id); err != nil {
		return err
	}
	if err := h.record(c, ActionRestore, owner, method, map[string]string{"version": id}); err != nil {
		return err
	}
	info, err := h.store.RestoreVersion(c.Request().Context(), owner, method, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, info)
}

// Name is the key of this package's part of GET /v1/admin/users/:userId.
func (h *Handler) Name() string { return "clientShares" }

// DescribeUser lists the user's client shares without cipherTexts (nil
// when there are none).
func (h *Handler) DescribeUser(ctx context.Context, userID string) (any, error) {
	infos, err := h.store.List(ctx, enclave.UserOwner(userID))
	if err != nil || len(infos) == 0 {
		return nil, err
	}
	return infos, nil
}

// DeleteUser removes every client share of the user, prior versions
// included.
func (h *Handler) DeleteUser(ctx context.Context, userID string) error {
	_, err := h.store.DeleteOwner(ctx, enclave.UserOwner(userID))
	return err
}

var _ interface {
	server.Routes
	server.UserData
} = (*Handler)(nil)
