package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
)

// maxImportItems bounds one bulk import request.
const maxImportItems = 500

// importRequest is an admin bulk import of keys the customer can export
// (moving from another backup host, decisions/26). Each item names its
// owner either as a user id (passkey users) or as a full owner
// ("firebase:<project>/<tenant>/<uid>", "portal:<clientId>"), and its key
// as base64 bytes (key) or as the SDK's text (keyText, kept byte for byte).
type importRequest struct {
	Overwrite bool         `json:"overwrite"`
	Items     []importItem `json:"items"`
}

type importItem struct {
	UserID string `json:"userId"`
	Owner  string `json:"owner"`
	Method string `json:"method"`
	// Key (base64) or, instead, sealedKey/enc/suite sealed to the
	// appliance key with keys.RouteImport in the info.
	httpx.StoreKeyInput
	KeyText  *string `json:"keyText"`
	ClientID string  `json:"clientId"`
}

type importResult struct {
	Index    int    `json:"index"`
	Status   int    `json:"status"`
	Code     string `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
	Replaced bool   `json:"replaced,omitempty"`
	// ClaimDeadline is set for a PASSKEY key left unclaimed: until then the
	// first passkey registered for its owner with a session token claims it.
	ClaimDeadline *time.Time `json:"claimDeadline,omitempty"`
}

// methodPasskey is the custody method of passkey users' keys
// (passkey.Method).
const methodPasskey = "PASSKEY"

var errImportItems = apierr.New(http.StatusBadRequest, "invalid_import", "send 1 to 500 items")

// importKeys stores each item like a store through its own route would:
// audited first (fail closed), sealed under the root key; an existing key
// is kept unless overwrite (then it becomes a prior version). Items are
// independent: each gets its own result.
func (s *Server) importKeys(c echo.Context) error {
	var req importRequest
	if err := httpx.Bind(c, &req, 0); err != nil {
		return err
	}
	if len(req.Items) == 0 || len(req.Items) > maxImportItems {
		return errImportItems
	}
	results := make([]importResult, len(req.Items))
	// The items run side by side, up to importWorkers at a time, so that
	// their audit lines and store writes share the group commits (one
	// fsync for many items) instead of each waiting for durable commits of
	// its own: a bulk import of millions of keys is otherwise bound by
	// fsync latency, not work. Items naming the same owner and method run
	// one after another in the request's order, so the outcome is the
	// sequential one (the first stores, a later one is key_exists or,
	// with overwrite, replaces it and the last one's key is kept).
	groups := make(map[string][]int, len(req.Items))
	var order []string
	for i, it := range req.Items {
		k := importTarget(it)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	next := make(chan []int)
	var wg sync.WaitGroup
	for range min(importWorkers, len(order)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idx := range next {
				for _, i := range idx {
					results[i] = s.importGuarded(c, i, req.Items[i], req.Overwrite)
				}
			}
		}()
	}
	for _, k := range order {
		next <- groups[k]
	}
	close(next)
	wg.Wait()
	return c.JSON(http.StatusOK, map[string]any{"results": results})
}

// importWorkers bounds the items of one import request in flight at once.
const importWorkers = 32

// importTarget names the record an item writes, for keeping items of the
// same owner and method in order: the owner as importOne resolves it (a
// userId is the owner "user:<id>"), then the method. Invalid items get a
// name too; importOne refuses them.
func importTarget(it importItem) string {
	owner := it.Owner
	if it.UserID != "" && it.Owner == "" {
		owner = string(enclave.UserOwner(it.UserID))
	}
	return owner + "\x00" + it.Method
}

// importGuarded is importOne on a worker goroutine, outside the handler's
// own panic guard: a panic fails that item with 500 internal (logged by
// type only: its value may hold an item's key) instead of the process.
func (s *Server) importGuarded(c echo.Context, i int, it importItem, overwrite bool) (res importResult) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in an import item", "index", i, "request_id", RequestID(c), "type", fmt.Sprintf("%T", r))
			e := apierr.ErrInternal
			res = importResult{Index: i, Status: e.Status, Code: e.Code, Message: e.Message}
		}
	}()
	if importItemHook != nil {
		importItemHook(i)
	}
	return s.importOne(c, i, it, overwrite)
}

// importItemHook, when set (tests only), runs before each import item.
var importItemHook func(i int)

func (s *Server) importOne(c echo.Context, i int, it importItem, overwrite bool) importResult {
	fail := func(err error) importResult {
		e := s.toAPIError(err)
		return importResult{Index: i, Status: e.Status, Code: e.Code, Message: e.Message}
	}
	var owner enclave.Owner
	switch {
	case it.UserID != "" && it.Owner == "":
		if err := ValidUserID(it.UserID); err != nil {
			return fail(err)
		}
		owner = enclave.UserOwner(it.UserID)
	case it.Owner != "" && it.UserID == "":
		owner = enclave.Owner(it.Owner)
		if err := owner.Validate(); err != nil || !(strings.HasPrefix(it.Owner, "user:") || strings.HasPrefix(it.Owner, "firebase:") || strings.HasPrefix(it.Owner, "portal:")) {
			return fail(apierr.ErrBadRequest.WithMessage("owner must be user:<id>, firebase:<project>/<tenant>/<uid> or portal:<clientId>"))
		}
	default:
		return fail(apierr.ErrBadRequest.WithMessage("give exactly one of userId and owner"))
	}
	opts := enclave.PutOptions{NoOverwrite: !overwrite, ClientID: it.ClientID}
	if it.Method == methodPasskey && s.cfg.Keys.ImportClaimWindow > 0 {
		// Nothing can reach an imported passkey key: registration over a
		// stored key needs an assertion, which needs a passkey. The first
		// passkey registered for the owner with a session token before
		// this deadline claims it (enclave.PutOptions.ClaimDeadline says
		// when the mark is set).
		opts.ClaimDeadline = s.now().Add(s.cfg.Keys.ImportClaimWindow)
	}
	var key []byte
	switch {
	case it.Given() && it.KeyText == nil:
		k, err := it.Open(s.keys, keys.RouteImport, owner, it.Method)
		if err != nil {
			return fail(err)
		}
		key, opts.Format = k.Reveal(), enclave.FormatBytes
	case it.KeyText != nil && !it.Given():
		key, opts.Format = []byte(*it.KeyText), enclave.FormatText
	default:
		return fail(apierr.New(http.StatusBadRequest, "invalid_key", "give exactly one of key (base64), sealedKey and keyText"))
	}
	defer clear(key)
	req := httpx.KeysRequest(c)
	req.Action = "admin_import"
	replaced, err := s.keys.Store(c.Request().Context(), req, owner, it.Method, key, opts)
	if errors.Is(err, apierr.ErrKeyExists) {
		return fail(apierr.ErrKeyExists.WithMessage("a key is already stored; set overwrite to replace it (the stored one is then kept as a prior version)"))
	}
	if err != nil {
		return fail(err)
	}
	status := http.StatusCreated
	if replaced {
		status = http.StatusOK
	}
	res := importResult{Index: i, Status: status, Replaced: replaced}
	if !opts.ClaimDeadline.IsZero() {
		// Only for the answer: whether the mark was set was decided in the
		// write transaction.
		if info, err := s.opts.Custody.Info(c.Request().Context(), owner, it.Method); err == nil {
			res.ClaimDeadline = info.ClaimDeadline
		}
	}
	return res
}
