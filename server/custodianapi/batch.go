package custodianapi

import (
	"encoding/base64"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/errgroup"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/httpx"
)

// auditParallel bounds the audit lines written at once for a batch (the
// log group-commits concurrent lines into one fsync).
const auditParallel = 32

type batchItem struct {
	UserID string `json:"userId"`
	Method string `json:"method,omitempty"`
	Share  string `json:"share,omitempty"`
}

type batchRequest struct {
	Items []batchItem `json:"items"`
}

type itemError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// itemResult is one item's outcome: Status for a store, Share for a read,
// or Error.
type itemResult struct {
	UserID string     `json:"userId"`
	Method string     `json:"method"`
	Status int        `json:"status,omitempty"`
	Share  string     `json:"share,omitempty"`
	Error  *itemError `json:"error,omitempty"`
}

func failItem(err error) *itemError {
	e, ok := apierr.As(err)
	if !ok {
		e = apierr.ErrInternal
	}
	return &itemError{Code: e.Code, Message: e.Message}
}

// checked is a batch item that passed validation.
type checked struct {
	index  int
	owner  enclave.Owner
	method string
	share  secret.Bytes // batch-put only
}

// check validates a batch: the request as a whole (count), then each item
// on its own. Invalid items get their error in results and are left out.
// withShare says whether items carry a share (batch-put).
func (r batchRequest) check(maxItems int, withShare bool) ([]itemResult, []checked, error) {
	if len(r.Items) == 0 {
		return nil, nil, ErrNoItems
	}
	if len(r.Items) > maxItems {
		return nil, nil, ErrTooManyItems.WithMessage("at most %d items per batch", maxItems)
	}
	results := make([]itemResult, len(r.Items))
	ok := make([]checked, 0, len(r.Items))
	for i, it := range r.Items {
		method := methodOf(it.Method)
		results[i] = itemResult{UserID: it.UserID, Method: method}
		if err := enclave.ValidUserID(it.UserID); err != nil {
			results[i].Error = failItem(err)
			continue
		}
		if err := validMethod(method); err != nil {
			results[i].Error = failItem(err)
			continue
		}
		c := checked{index: i, owner: enclave.UserOwner(it.UserID), method: method}
		if withShare {
			share, err := decodeShare(it.Share)
			if err != nil {
				results[i].Error = failItem(err)
				continue
			}
			c.share = share
		}
		ok = append(ok, c)
	}
	return results, ok, nil
}

// recordAll writes one audit line per item, concurrently, and returns the
// first failure.
func (h *Handler) recordAll(c echo.Context, action string, items []checked) error {
	ctx := c.Request().Context()
	var g errgroup.Group
	g.SetLimit(auditParallel)
	for _, it := range items {
		ev := h.event(c, action, it.owner, it.method, map[string]string{"batch": "true"})
		g.Go(func() error { return h.audit.Record(ctx, ev) })
	}
	return g.Wait()
}

type batchResponse struct {
	Results []itemResult `json:"results"`
}

// BatchPut is POST /v1/admin/custodian-shares/batch-put.
func (h *Handler) BatchPut(c echo.Context) error {
	var req batchRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	results, items, err := req.check(h.maxBatch, true)
	if err != nil {
		return err
	}
	defer func() {
		for _, it := range items {
			it.share.Wipe()
		}
	}()
	if len(items) > 0 {
		// Fail closed: every line is durable before anything is stored.
		if err := h.recordAll(c, audit.ActionStore, items); err != nil {
			return err
		}
		put := make([]custodian.PutItem, len(items))
		for i, it := range items {
			put[i] = custodian.PutItem{Owner: string(it.owner), Method: it.method, Share: it.share.Reveal()}
		}
		start := time.Now()
		res, err := h.svc.PutBatch(c.Request().Context(), put)
		h.observe("batch_store", start, err)
		if err != nil {
			return err
		}
		for i, r := range res {
			out := &results[items[i].index]
			switch {
			case r.Err != nil:
				out.Error = failItem(r.Err)
			case r.Replaced:
				out.Status = http.StatusOK
			default:
				out.Status = http.StatusCreated
			}
		}
	}
	return c.JSON(http.StatusOK, batchResponse{Results: results})
}

// BatchGet is POST /v1/admin/custodian-shares/batch-get.
func (h *Handler) BatchGet(c echo.Context) error {
	var req batchRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	results, items, err := req.check(h.maxBatch, false)
	if err != nil {
		return err
	}
	if len(items) > 0 {
		refs := make([]custodian.Ref, len(items))
		for i, it := range items {
			refs[i] = custodian.Ref{Owner: string(it.owner), Method: it.method}
		}
		start := time.Now()
		res, err := h.svc.GetBatch(c.Request().Context(), refs)
		h.observe("batch_release", start, err)
		if err != nil {
			return err
		}
		defer func() {
			for _, r := range res {
				r.Share.Wipe()
			}
		}()
		var released []checked
		for i, r := range res {
			if r.Err != nil {
				results[items[i].index].Error = failItem(r.Err)
				continue
			}
			released = append(released, items[i])
		}
		// Fail closed: no share leaves before its line is durable.
		if err := h.recordAll(c, audit.ActionRelease, released); err != nil {
			return err
		}
		for i, r := range res {
			if r.Err == nil {
				results[items[i].index].Share = base64.StdEncoding.EncodeToString(r.Share.Reveal())
			}
		}
	}
	return c.JSON(http.StatusOK, batchResponse{Results: results})
}
