package clientshares

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
)

// Audit actions of this package besides audit.ActionStore, ActionRelease
// and ActionDelete. Every line carries the field kind=client_share.
const (
	ActionStatus  = "admin_client_share_status"
	ActionRestore = "admin_restore_version"
	auditKind     = "client_share"
)

// Handler serves the client-share admin routes (mounted by the admin
// routes table, server/routes_admin.go: List, Put, Get, Delete, Status,
// Versions, Restore) and lists and deletes a user's client shares with the
// user (DescribeUser, DeleteUser).
type Handler struct {
	store *Store
	audit keys.Auditor
}

// NewHandler returns the routes over st, auditing to audit.
func NewHandler(st *Store, audit keys.Auditor) (*Handler, error) {
	if st == nil || audit == nil {
		return nil, errors.New("clientshares: the store and the audit log are required")
	}
	return &Handler{store: st, audit: audit}, nil
}

// Store is the underlying store.
func (h *Handler) Store() *Store { return h.store }

// target validates the path's user id and method.
func target(c echo.Context) (enclave.Owner, string, error) {
	userID := c.Param("userId")
	if err := enclave.ValidUserID(userID); err != nil {
		return "", "", err
	}
	method := c.Param("method")
	if err := ValidMethod(method); err != nil {
		return "", "", err
	}
	return enclave.UserOwner(userID), method, nil
}

func (h *Handler) record(c echo.Context, action string, owner enclave.Owner, method string, fields map[string]string) error {
	ev := httpx.KeysRequest(c).Event(action, owner, method, "")
	ev.Fields = map[string]string{"kind": auditKind}
	for k, v := range fields {
		ev.Fields[k] = v
	}
	return h.audit.Record(c.Request().Context(), ev)
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

// Put is PUT …/client-shares/:method.
func (h *Handler) Put(c echo.Context) error {
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

// Get is GET …/client-shares/:method.
func (h *Handler) Get(c echo.Context) error {
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

// Status is PUT …/client-shares/:method/status.
func (h *Handler) Status(c echo.Context) error {
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

// Delete is DELETE …/client-shares/:method.
func (h *Handler) Delete(c echo.Context) error {
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

// List is GET /v1/admin/users/:userId/client-shares.
func (h *Handler) List(c echo.Context) error {
	userID := c.Param("userId")
	if err := enclave.ValidUserID(userID); err != nil {
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

// Versions is GET …/client-shares/:method/versions.
func (h *Handler) Versions(c echo.Context) error {
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

// Restore is POST …/client-shares/:method/versions/:versionId/restore.
func (h *Handler) Restore(c echo.Context) error {
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
