package custodianapi

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/store"
)

// DefaultMethod is the method of a share stored without ?method=
// (decisions/04).
const DefaultMethod = "default"

// Audit actions of this package besides audit.ActionStore, ActionRelease
// and ActionDelete. Every line carries the field kind=custodian_share.
const (
	ActionRestore = "admin_restore_version"
	ActionRewrap  = "admin_custodian_rewrap"
	auditKind     = "custodian_share"
)

// Errors of this package (the custodian package's pass through).
var (
	// ErrNotConfigured: the appliance has no Vault (vault.addr is empty).
	ErrNotConfigured = apierr.New(http.StatusServiceUnavailable, "custodian_not_configured",
		"custodian shares need Vault Transit, which is not configured on this appliance: set vault.addr and one Vault auth "+
			"(vault.token, vault.role_id + vault.secret_id, or vault.cert_file + vault.key_file)")
	// ErrInvalidShare: the share is not standard base64 of 1 to
	// custodian.MaxShareSize bytes.
	ErrInvalidShare = custodian.ErrInvalidShare.WithMessage(
		"share must be standard base64 of 1 to %d bytes", custodian.MaxShareSize)
	// ErrTooManyItems: a batch over [Options.MaxBatchItems] items.
	ErrTooManyItems = apierr.New(http.StatusBadRequest, "too_many_items", "too many items in one batch")
	// ErrBadMethod: a method that is empty, longer than 128 bytes, not
	// UTF-8 or holding a NUL (the custodian service's rule).
	ErrBadMethod = apierr.ErrBadRequest.WithMessage("method must be 1 to 128 bytes of UTF-8 without NUL")
	// ErrNoItems: a batch without items.
	ErrNoItems = apierr.New(http.StatusBadRequest, "no_items", `send {"items":[…]} with at least one item`)
)

// Options configure [New].
type Options struct {
	// Service stores the shares. Nil means the custodian is unavailable:
	// every route answers Unavailable.
	Service *custodian.Service
	// Unavailable is the answer while Service is nil; nil means
	// [ErrNotConfigured]. The wiring sets it to Vault's refusal at start
	// (credentials refused, key not derived) so the routes say why.
	Unavailable error
	// DB is the store the Service writes to. Required: the admin user
	// routes describe and delete a user's shares from it even without
	// Vault (a user deletion never waits for, or depends on, Vault),
	// through custodian.Records.
	DB *store.DB
	// MaxBatchItems caps the items of one batch; 0 means 500.
	MaxBatchItems int
	// Audit is the audit log every share operation is recorded in first.
	// Required.
	Audit keys.Auditor
	// Registry takes the latency histogram
	// keywarden_custodian_operation_duration_seconds; nil: not exported.
	Registry *prometheus.Registry
}

// Handler serves the custodian admin routes (mounted by the admin routes
// table, server/routes_admin.go, each behind Configured) and describes
// and deletes an owner's shares (DescribeUser, DescribeOwner, DeleteUser).
type Handler struct {
	svc         *custodian.Service
	unavailable error
	records     *custodian.Records // the shares' storage, with or without Vault
	maxBatch    int
	audit       keys.Auditor
	latency     *prometheus.HistogramVec
}

// New returns the routes.
func New(opts Options) (*Handler, error) {
	if opts.DB == nil || opts.Audit == nil {
		return nil, errors.New("custodianapi: DB and Audit are required")
	}
	if opts.Unavailable == nil {
		opts.Unavailable = ErrNotConfigured
	}
	if opts.MaxBatchItems <= 0 {
		opts.MaxBatchItems = 500
	}
	records := custodian.NewRecords(opts.DB, custodian.RecordsOptions{})
	if opts.Service != nil {
		records = opts.Service.Records()
	}
	return &Handler{svc: opts.Service, unavailable: opts.Unavailable, records: records, maxBatch: opts.MaxBatchItems,
		audit: opts.Audit, latency: registerLatency(opts.Registry)}, nil
}

// Service is the share service, or nil with the error the routes answer.
func (h *Handler) Service() (*custodian.Service, error) {
	if h.svc == nil {
		return nil, h.unavailable
	}
	return h.svc, nil
}

// registerLatency makes the latency histogram and registers it with r
// (nil: not exported).
func registerLatency(r *prometheus.Registry) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keywarden_custodian_operation_duration_seconds",
		Help:    "Custodian share operations through Vault Transit (store, release, batch), by operation and outcome (ok or the error code).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"op", "outcome"})
	if r == nil {
		return h
	}
	if err := r.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.HistogramVec); ok {
				return existing
			}
		}
		return h // unregistered, still usable
	}
	return h
}

func (h *Handler) observe(op string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if e, ok := apierr.As(err); ok {
			outcome = e.Code
		}
	}
	h.latency.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
}

// Configured is the middleware of every route: it answers Unavailable
// while there is no Service.
func (h *Handler) Configured(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if h.svc == nil {
			return h.unavailable
		}
		return next(c)
	}
}

// methodOf is ?method= or DefaultMethod.
func methodOf(m string) string {
	if m == "" {
		return DefaultMethod
	}
	return m
}

// validMethod applies the custodian service's rule up front, so that a
// refused item never gets an audit line.
func validMethod(m string) error {
	if m == "" || len(m) > 128 || strings.IndexByte(m, 0) >= 0 || !utf8.ValidString(m) {
		return ErrBadMethod
	}
	return nil
}

// target validates the path's user id and ?method=.
func target(c echo.Context) (enclave.Owner, string, error) {
	userID := c.Param("userId")
	if err := enclave.ValidUserID(userID); err != nil {
		return "", "", err
	}
	method := methodOf(c.QueryParam("method"))
	if err := validMethod(method); err != nil {
		return "", "", err
	}
	return enclave.UserOwner(userID), method, nil
}

// ownerTarget validates the path's owner (any kind) and method.
func ownerTarget(c echo.Context) (enclave.Owner, string, error) {
	owner, err := httpx.OwnerParam(c)
	if err != nil {
		return "", "", err
	}
	method, err := httpx.PathParam(c, "method")
	if err != nil {
		return "", "", ErrBadMethod
	}
	if err := validMethod(method); err != nil {
		return "", "", err
	}
	return owner, method, nil
}

func (h *Handler) event(c echo.Context, action string, owner enclave.Owner, method string, fields map[string]string) audit.Event {
	ev := httpx.KeysRequest(c).Event(action, owner, method, "")
	ev.Fields = map[string]string{"kind": auditKind}
	for k, v := range fields {
		ev.Fields[k] = v
	}
	return ev
}

func (h *Handler) record(c echo.Context, action string, owner enclave.Owner, method string, fields map[string]string) error {
	return h.audit.Record(c.Request().Context(), h.event(c, action, owner, method, fields))
}

// decodeShare reads a standard-base64 share of 1 to MaxShareSize bytes.
func decodeShare(s string) (secret.Bytes, error) {
	if s == "" || base64.StdEncoding.DecodedLen(len(s)) > custodian.MaxShareSize+3 {
		return secret.Bytes{}, ErrInvalidShare
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) == 0 || len(b) > custodian.MaxShareSize {
		clear(b)
		return secret.Bytes{}, ErrInvalidShare
	}
	return secret.NewBytes(b), nil
}

type putRequest struct {
	Share string `json:"share"`
}

type shareResponse struct {
	Method string `json:"method"`
	Share  string `json:"share"`
}

// Put is PUT /v1/admin/users/:userId/custodian-share.
func (h *Handler) Put(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	var req putRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	share, err := decodeShare(req.Share)
	if err != nil {
		return err
	}
	defer share.Wipe()
	ctx := c.Request().Context()
	if err := h.record(c, audit.ActionStore, owner, method, nil); err != nil {
		return err
	}
	start := time.Now()
	replaced, err := h.svc.Put(ctx, string(owner), method, share.Reveal())
	h.observe("store", start, err)
	if err != nil {
		return err
	}
	info, err := h.svc.Info(ctx, string(owner), method)
	if err != nil {
		return err
	}
	if replaced {
		return c.JSON(http.StatusOK, info)
	}
	return c.JSON(http.StatusCreated, info)
}

// Get is GET /v1/admin/users/:userId/custodian-share.
func (h *Handler) Get(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	start := time.Now()
	share, err := h.svc.Get(c.Request().Context(), string(owner), method)
	h.observe("release", start, err)
	if err != nil {
		return err
	}
	defer share.Wipe()
	if err := h.record(c, audit.ActionRelease, owner, method, nil); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, shareResponse{Method: method, Share: base64.StdEncoding.EncodeToString(share.Reveal())})
}

// Delete is DELETE /v1/admin/users/:userId/custodian-share.
func (h *Handler) Delete(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	// Not found is answered without an audit line: nothing would change.
	if _, err := h.svc.Info(ctx, string(owner), method); err != nil {
		return err
	}
	if err := h.record(c, audit.ActionDelete, owner, method, nil); err != nil {
		return err
	}
	if err := h.svc.Delete(ctx, string(owner), method); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// List is GET /v1/admin/users/:userId/custodian-shares.
func (h *Handler) List(c echo.Context) error {
	userID := c.Param("userId")
	if err := enclave.ValidUserID(userID); err != nil {
		return err
	}
	return h.listOf(c, enclave.UserOwner(userID))
}

// OwnerList is GET /v1/admin/owners/:owner/custodian-shares.
func (h *Handler) OwnerList(c echo.Context) error {
	owner, err := httpx.OwnerParam(c)
	if err != nil {
		return err
	}
	return h.listOf(c, owner)
}

func (h *Handler) listOf(c echo.Context, owner enclave.Owner) error {
	infos, err := h.describe(c.Request().Context(), owner)
	if err != nil {
		return err
	}
	if infos == nil {
		infos = []custodian.ShareInfo{}
	}
	return c.JSON(http.StatusOK, map[string]any{"shares": infos})
}

// Versions is GET …/custodian-share/versions.
func (h *Handler) Versions(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	return h.versionsOf(c, owner, method)
}

// OwnerVersions is GET /v1/admin/owners/:owner/custodian-shares/:method/versions.
func (h *Handler) OwnerVersions(c echo.Context) error {
	owner, method, err := ownerTarget(c)
	if err != nil {
		return err
	}
	return h.versionsOf(c, owner, method)
}

func (h *Handler) versionsOf(c echo.Context, owner enclave.Owner, method string) error {
	vs, err := h.svc.ListVersions(c.Request().Context(), string(owner), method)
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []custodian.VersionInfo{}
	}
	return c.JSON(http.StatusOK, map[string]any{"versions": vs})
}

// Restore is POST …/custodian-share/versions/:versionId/restore.
func (h *Handler) Restore(c echo.Context) error {
	owner, method, err := target(c)
	if err != nil {
		return err
	}
	return h.restoreOf(c, owner, method)
}

// OwnerRestore is POST /v1/admin/owners/:owner/custodian-shares/:method/versions/:versionId/restore.
func (h *Handler) OwnerRestore(c echo.Context) error {
	owner, method, err := ownerTarget(c)
	if err != nil {
		return err
	}
	return h.restoreOf(c, owner, method)
}

// restoreOf checks the version id's form, audits (fail closed) and
// restores.
func (h *Handler) restoreOf(c echo.Context, owner enclave.Owner, method string) error {
	id := c.Param("versionId")
	if err := enclave.CheckVersionID(id); err != nil {
		return err // before the audit line: nothing was restored
	}
	if err := h.record(c, ActionRestore, owner, method, map[string]string{"version": id}); err != nil {
		return err
	}
	if err := h.svc.RestoreVersion(c.Request().Context(), string(owner), method, id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// --- rewrap -------------------------------------------------------------

type jobStarted struct {
	JobID string `json:"jobId"`
}

// StartRewrap is POST /v1/admin/custodian/rewrap.
func (h *Handler) StartRewrap(c echo.Context) error {
	if err := h.record(c, ActionRewrap, "", "", nil); err != nil {
		return err
	}
	id, err := h.svc.StartRewrap(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/admin/custodian/rewrap/"+id)
	return c.JSON(http.StatusAccepted, jobStarted{JobID: id})
}

// jobView is a job's progress without its internal cursor.
func jobView(j custodian.JobStatus) custodian.JobStatus {
	j.Cursor = nil
	return j
}

// Job is GET /v1/admin/custodian/rewrap/:jobId.
func (h *Handler) Job(c echo.Context) error {
	j, err := h.svc.JobStatus(c.Request().Context(), c.Param("jobId"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, jobView(j))
}

// ListJobs is GET /v1/admin/custodian/rewrap.
func (h *Handler) ListJobs(c echo.Context) error {
	js, err := h.svc.Jobs(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]custodian.JobStatus, 0, len(js))
	for _, j := range js {
		out = append(out, jobView(j))
	}
	return c.JSON(http.StatusOK, map[string]any{"jobs": out})
}

// --- users --------------------------------------------------------------

// Name is the key of this package's part of GET /v1/admin/users/:userId.
func (h *Handler) Name() string { return "custodianShares" }

// describe lists owner's shares without opening them (no Vault call).
// Without a Service only the methods are known.
func (h *Handler) describe(ctx context.Context, owner enclave.Owner) ([]custodian.ShareInfo, error) {
	ms, err := h.records.Methods(ctx, string(owner))
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	out := make([]custodian.ShareInfo, 0, len(ms))
	for _, m := range ms {
		if h.svc == nil {
			out = append(out, custodian.ShareInfo{Method: m})
			continue
		}
		info, err := h.svc.Info(ctx, string(owner), m)
		if errors.Is(err, apierr.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// DescribeUser lists the user's custodian shares without the shares (nil
// when there are none). It makes no Vault call.
func (h *Handler) DescribeUser(ctx context.Context, userID string) (any, error) {
	infos, err := h.describe(ctx, enclave.UserOwner(userID))
	if err != nil || len(infos) == 0 {
		return nil, err
	}
	return infos, nil
}

// DescribeOwner lists the custodian shares of an owner of any kind
// without the shares (nil when there are none). It makes no Vault call.
func (h *Handler) DescribeOwner(ctx context.Context, owner enclave.Owner) (any, error) {
	infos, err := h.describe(ctx, owner)
	if err != nil || len(infos) == 0 {
		return nil, err
	}
	return infos, nil
}

// DeleteUser removes every custodian share of the user, prior versions
// included. It needs no Vault (custodian.Records).
func (h *Handler) DeleteUser(ctx context.Context, userID string) error {
	_, err := h.records.DeleteOwner(ctx, string(enclave.UserOwner(userID)))
	return err
}
