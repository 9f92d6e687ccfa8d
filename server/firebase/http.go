package firebase

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
)

// Method is the backup method of keys stored through a Firebase ID token
// (the native routes and Portal's TBS routes share it).
const Method = "FIREBASE"

var (
	// ErrNotConfigured answers every Firebase route when no project is
	// configured.
	ErrNotConfigured = apierr.New(http.StatusServiceUnavailable, "firebase_not_configured", "Firebase Auth is not configured on this appliance (firebase.project_ids)")
	// ErrBlocked refuses a user on the operator's block list.
	ErrBlocked      = apierr.New(http.StatusForbidden, "user_blocked", "this user is blocked by the operator")
	errTokenMissing = apierr.New(http.StatusUnauthorized, "token_missing", "send the Firebase ID token as Authorization: Bearer <token>")
	errRecipient    = apierr.New(http.StatusBadRequest, "invalid_recipient_key", "recipientPublicKey must be base64 or base64url")
)

// TokenVerifier verifies Firebase ID tokens ([Verifier]).
type TokenVerifier interface {
	Verify(ctx context.Context, rawToken string) (*Identity, error)
}

// HTTPOptions are the dependencies of the native Firebase key routes.
type HTTPOptions struct {
	Keys *keys.Service // required
	// Verifier checks ID tokens; nil: every route answers 503
	// firebase_not_configured.
	Verifier TokenVerifier
	// Blocked reports whether the operator blocked an owner (an error
	// refuses the request: on a cluster the list is read from the shared
	// store each time); nil: nobody is.
	Blocked func(ctx context.Context, owner string) (bool, error)
	// OverwriteMaxAuthAge, when > 0, is the sign-in age rule
	// (firebase.overwrite_max_auth_age, keys.SignIn).
	OverwriteMaxAuthAge time.Duration
	// Events finds an owner's audit lines for GET /v1/me/events; nil: it
	// answers 503 events_unavailable.
	Events *audit.OwnerIndex
}

// HTTP serves the native Firebase key routes (PUT, GET, POST …/release,
// DELETE /v1/firebase/key) over the keys service: each handler verifies
// the token, parses, calls one keys method and renders. The server's
// routes table mounts them.
type HTTP struct {
	keys    *keys.Service
	v       TokenVerifier
	blocked func(ctx context.Context, owner string) (bool, error)
	maxAge  time.Duration
	events  *audit.OwnerIndex
}

// NewHTTP validates o and returns the handlers.
func NewHTTP(o HTTPOptions) (*HTTP, error) {
	if o.Keys == nil {
		return nil, errors.New("firebase: HTTPOptions.Keys is required")
	}
	if o.Blocked == nil {
		o.Blocked = func(context.Context, string) (bool, error) { return false, nil }
	}
	return &HTTP{keys: o.Keys, v: o.Verifier, blocked: o.Blocked, maxAge: o.OverwriteMaxAuthAge, events: o.Events}, nil
}

// Verify checks the request's Firebase ID token (from header, or from
// Authorization: Bearer when header is empty) and the operator's block
// list, auditing (sampled) a refusal, and records the owner as the actor.
func (h *HTTP) Verify(c echo.Context, header string) (*Identity, error) {
	if h.v == nil {
		return nil, ErrNotConfigured
	}
	var raw string
	if header != "" {
		v := c.Request().Header.Get(header)
		if tok, ok := httpx.Bearer(v); ok {
			raw = tok
		} else {
			raw = strings.TrimSpace(v)
		}
	} else {
		raw, _ = httpx.Bearer(c.Request().Header.Get(echo.HeaderAuthorization))
	}
	if raw == "" {
		return nil, errTokenMissing
	}
	ctx := c.Request().Context()
	id, err := h.v.Verify(ctx, raw)
	if err != nil {
		if e, ok := apierr.As(err); ok && e.Status == http.StatusUnauthorized {
			h.keys.Refuse(ctx, httpx.KeysRequest(c), "", Method, e.Code)
		}
		return nil, err
	}
	blocked, err := h.blocked(ctx, id.Owner())
	if err != nil {
		return nil, err
	}
	if blocked {
		h.keys.Refuse(ctx, httpx.KeysRequest(c), enclave.Owner(id.Owner()), Method, "user_blocked")
		return nil, ErrBlocked
	}
	httpx.SetActor(c, id.Owner())
	return id, nil
}

// SignIn is the sign-in age rule for id's token.
func (h *HTTP) SignIn(id *Identity) *keys.SignIn {
	return &keys.SignIn{At: id.AuthTime, MaxAge: h.maxAge}
}

// keyRequest is PUT /v1/firebase/key's body: "key", or the key sealed to
// the appliance key (keys.RouteFirebase in the info).
type keyRequest struct {
	httpx.StoreKeyInput
}

// Put is PUT /v1/firebase/key: 201 stored, 200 replaced (the old value
// kept as a prior version). The key comes in the clear or sealed to the
// appliance key.
func (h *HTTP) Put(c echo.Context) error {
	id, err := h.Verify(c, "")
	if err != nil {
		return err
	}
	var body keyRequest
	if err := httpx.Bind(c, &body, 0); err != nil {
		return err
	}
	owner := enclave.Owner(id.Owner())
	key, err := body.Open(h.keys, keys.RouteFirebase, owner, Method)
	if err != nil {
		return err
	}
	defer key.Wipe()
	req := httpx.KeysRequest(c)
	req.SignIn = h.SignIn(id)
	replaced, err := h.keys.Store(c.Request().Context(), req, owner, Method, key.Reveal(), enclave.PutOptions{})
	if err != nil {
		return err
	}
	if replaced {
		return c.NoContent(http.StatusOK)
	}
	return c.NoContent(http.StatusCreated)
}

type releaseRequest struct {
	RecipientPublicKey string `json:"recipientPublicKey"`
}

// KeyResponse is a released key: in the clear (over TLS) or sealed to the
// client's HPKE key.
type KeyResponse struct {
	Key       string `json:"key,omitempty"`
	SealedKey string `json:"sealedKey,omitempty"`
	Enc       string `json:"enc,omitempty"`
	Suite     string `json:"suite,omitempty"`
}

// HPKEInfo is the HPKE info string a Firebase release is sealed with.
func HPKEInfo(route string, owner enclave.Owner) []byte {
	return []byte("keywarden release v1|" + route + "|" + string(owner))
}

// Get is GET /v1/firebase/key (recipient key in the query) and POST
// /v1/firebase/key/release (in the body): the key in the clear, or sealed
// to the recipient key.
func (h *HTTP) Get(c echo.Context) error {
	id, err := h.Verify(c, "")
	if err != nil {
		return err
	}
	recipient := c.QueryParam("recipientPublicKey")
	if c.Request().Method == http.MethodPost {
		var body releaseRequest
		if err := httpx.Bind(c, &body, 0); err != nil {
			return err
		}
		recipient = body.RecipientPublicKey
	}
	var rpk []byte
	if recipient != "" {
		var ok bool
		if rpk, ok = httpx.DecodeBase64(recipient); !ok {
			return errRecipient
		}
		if err := enclave.ValidRecipientKey(rpk); err != nil {
			return err
		}
	}
	owner := enclave.Owner(id.Owner())
	key, _, err := h.keys.Release(c.Request().Context(), httpx.KeysRequest(c), owner, Method, enclave.Access{}, nil)
	if err != nil {
		return err
	}
	defer key.Wipe()
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	if rpk != nil {
		enc, ct, suite, err := enclave.SealToRecipient(rpk, key.Reveal(), HPKEInfo("firebase", owner))
		if err != nil {
			return err
		}
		return writeKeyResponse(c, &KeyResponse{SealedKey: base64.StdEncoding.EncodeToString(ct), Enc: base64.StdEncoding.EncodeToString(enc), Suite: suite})
	}
	return writeKeyResponse(c, &KeyResponse{Key: base64.StdEncoding.EncodeToString(key.Reveal())})
}

// writeKeyResponse answers 200 with r: the bytes c.JSON writes (the JSON
// of encoding/json and a newline, Content-Type application/json), built
// without reflection; the buffer holding the key is wiped once written.
// Members are base64 and suite names, which JSON never escapes; anything
// else goes through c.JSON.
func writeKeyResponse(c echo.Context, r *KeyResponse) error {
	b, ok := appendKeyResponse(make([]byte, 0, 64+len(r.Key)+len(r.SealedKey)+len(r.Enc)+len(r.Suite)), r)
	if !ok {
		return c.JSON(http.StatusOK, r)
	}
	defer clear(b)
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, b)
}

// appendKeyResponse appends json.Marshal(r) and a newline; ok is false
// when a member has a byte that JSON would escape.
func appendKeyResponse(dst []byte, r *KeyResponse) ([]byte, bool) {
	dst = append(dst, '{')
	first := true
	for _, m := range [...]struct{ name, v string }{{"key", r.Key}, {"sealedKey", r.SealedKey}, {"enc", r.Enc}, {"suite", r.Suite}} {
		if m.v == "" {
			continue
		}
		for i := 0; i < len(m.v); i++ {
			if c := m.v[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return nil, false
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(append(append(append(append(dst, '"'), m.name...), `":"`...), m.v...), '"')
	}
	return append(dst, "}\n"...), true
}

// Delete is DELETE /v1/firebase/key: 204; the value is kept as a prior
// version, and a token from an old sign-in is refused (keys.SignIn).
func (h *HTTP) Delete(c echo.Context) error {
	id, err := h.Verify(c, "")
	if err != nil {
		return err
	}
	req := httpx.KeysRequest(c)
	req.SignIn = h.SignIn(id)
	if err := h.keys.Delete(c.Request().Context(), req, enclave.Owner(id.Owner()), Method, enclave.Access{}); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
