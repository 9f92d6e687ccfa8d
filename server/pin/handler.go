package pin

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
)

// DefaultMaxBodyBytes bounds a request body when HandlerOptions.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 16 << 10

// sessionPrefix starts a user session token minted by the admin API
// (enclave.SessionTokens); any other bearer token is taken as a Firebase
// ID token.
const sessionPrefix = "kws1."

var (
	errTokenMissing = apierr.New(http.StatusUnauthorized, "token_missing", "send Authorization: Bearer <Firebase ID token> or Bearer <session token from the admin API>: a PIN is a second factor on top of the account")
	errRecipient    = apierr.New(http.StatusBadRequest, "invalid_recipient_key", "recipientPublicKey must be an HPKE public key in base64 or base64url")
)

// HandlerOptions are the handlers' dependencies.
type HandlerOptions struct {
	Service *Service // required
	// Firebase verifies Firebase ID tokens (with the block list); nil:
	// only session tokens are accepted.
	Firebase *firebase.HTTP
	// Sessions verifies the admin API's user session tokens; nil: only
	// Firebase tokens are accepted.
	Sessions     *enclave.SessionTokens
	MaxBodyBytes int64
}

// Handler serves the /v1/pin routes.
type Handler struct {
	svc      *Service
	fb       *firebase.HTTP
	sessions *enclave.SessionTokens
	limit    int64
}

// NewHandler validates o and returns the handlers.
func NewHandler(o HandlerOptions) (*Handler, error) {
	if o.Service == nil {
		return nil, errors.New("pin: HandlerOptions.Service is required")
	}
	if o.Firebase == nil && o.Sessions == nil {
		return nil, errors.New("pin: HandlerOptions needs Firebase or Sessions (the owner proof)")
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return &Handler{svc: o.Service, fb: o.Firebase, sessions: o.Sessions, limit: o.MaxBodyBytes}, nil
}

// owner authenticates the caller: a session token is user:<id>, any
// other bearer token a Firebase ID token (firebase:<project>/<tenant>/<uid>).
func (h *Handler) owner(c echo.Context) (enclave.Owner, error) {
	tok, ok := httpx.Bearer(c.Request().Header.Get(echo.HeaderAuthorization))
	if !ok {
		return "", errTokenMissing
	}
	if strings.HasPrefix(tok, sessionPrefix) {
		if h.sessions == nil {
			return "", enclave.ErrSessionInvalid
		}
		claims, err := h.sessions.Verify(tok)
		if err != nil {
			return "", err
		}
		if err := enclave.ValidUserID(claims.UserID); err != nil {
			return "", enclave.ErrSessionInvalid
		}
		o := enclave.UserOwner(claims.UserID)
		httpx.SetActor(c, string(o))
		return o, nil
	}
	if h.fb == nil {
		return "", firebase.ErrNotConfigured
	}
	id, err := h.fb.Verify(c, "")
	if err != nil {
		return "", err
	}
	return enclave.Owner(id.Owner()), nil
}

type beginRequest struct {
	BlindedElement string `json:"blindedElement"`
}

type beginResponse struct {
	RegistrationID   string `json:"registrationId"`
	EvaluatedElement string `json:"evaluatedElement"`
}

// Begin is POST /v1/pin/registrations → 201.
func (h *Handler) Begin(c echo.Context) error {
	owner, err := h.owner(c)
	if err != nil {
		return err
	}
	var body beginRequest
	if err := httpx.Bind(c, &body, h.limit); err != nil {
		return err
	}
	el, err := DecodeElement(body.BlindedElement)
	if err != nil {
		return err
	}
	id, ev, err := h.svc.Begin(c.Request().Context(), owner, el)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, beginResponse{RegistrationID: id, EvaluatedElement: ev})
}

type registerRequest struct {
	UnlockTag  string `json:"unlockTag"`
	GuessLimit *int   `json:"guessLimit"`
	httpx.StoreKeyInput
}

type registerResponse struct {
	Key string `json:"key,omitempty"`
}

// Register is PUT /v1/pin/registrations/{registrationId} → 201, or 200
// when it replaced the owner's registration; the body carries the key
// only when the appliance generated it.
func (h *Handler) Register(c echo.Context) error {
	owner, err := h.owner(c)
	if err != nil {
		return err
	}
	id, err := httpx.PathParam(c, "registrationId")
	if err != nil {
		return ErrRegistrationNotFound
	}
	var body registerRequest
	if err := httpx.Bind(c, &body, h.limit); err != nil {
		return err
	}
	tag, err := DecodeTag(body.UnlockTag)
	if err != nil {
		return err
	}
	r := RegisterRequest{ID: id, Tag: tag}
	if body.GuessLimit != nil {
		if *body.GuessLimit < 1 || *body.GuessLimit > MaxGuessLimit {
			return ErrGuessLimit
		}
		r.GuessLimit = *body.GuessLimit
	}
	if body.Given() {
		k, err := body.Open(h.svc.keys, keys.RoutePIN, owner, Method)
		if err != nil {
			return err
		}
		defer k.Wipe()
		r.Key = k
	}
	res, err := h.svc.Register(c.Request().Context(), httpx.KeysRequest(c), owner, r)
	if err != nil {
		return err
	}
	defer res.Generated.Wipe()
	status := http.StatusCreated
	if res.Replaced {
		status = http.StatusOK
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	if res.Generated.Len() > 0 {
		return c.JSON(status, registerResponse{Key: base64.StdEncoding.EncodeToString(res.Generated.Reveal())})
	}
	return c.JSON(status, struct{}{})
}

type recoverRequest struct {
	BlindedElement     string `json:"blindedElement"`
	RecipientPublicKey string `json:"recipientPublicKey"`
}

// Recover is POST /v1/pin/recoveries → 200 once the guess is counted
// durably and the TPM counter covers it.
func (h *Handler) Recover(c echo.Context) error {
	owner, err := h.owner(c)
	if err != nil {
		return err
	}
	var body recoverRequest
	if err := httpx.Bind(c, &body, h.limit); err != nil {
		return err
	}
	el, err := DecodeElement(body.BlindedElement)
	if err != nil {
		return err
	}
	var rpk []byte
	if body.RecipientPublicKey != "" {
		var ok bool
		if rpk, ok = httpx.DecodeBase64(body.RecipientPublicKey); !ok {
			return errRecipient
		}
		if err := enclave.ValidRecipientKey(rpk); err != nil {
			return err
		}
	}
	rec, err := h.svc.Evaluate(c.Request().Context(), httpx.KeysRequest(c), owner, el, rpk)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, rec)
}

type unlockRequest struct {
	UnlockTag string `json:"unlockTag"`
}

// incorrectBody is 403 pin_incorrect: the error and the guesses left.
type incorrectBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	GuessesRemaining int `json:"guessesRemaining"`
}

// Unlock is POST /v1/pin/recoveries/{recoveryId}/unlock → 200 with the
// key (in the clear, or sealed to the recipient bound at the recovery's
// start); 403 pin_incorrect with guessesRemaining; 410 pin_locked.
func (h *Handler) Unlock(c echo.Context) error {
	owner, err := h.owner(c)
	if err != nil {
		return err
	}
	id, err := httpx.PathParam(c, "recoveryId")
	if err != nil {
		return ErrRecoveryNotFound
	}
	var body unlockRequest
	if err := httpx.Bind(c, &body, h.limit); err != nil {
		return err
	}
	tag, err := DecodeTag(body.UnlockTag)
	if err != nil {
		return err
	}
	out, err := h.svc.Unlock(c.Request().Context(), httpx.KeysRequest(c), owner, id, tag)
	var inc *IncorrectError
	if errors.As(err, &inc) {
		var b incorrectBody
		b.Error.Code, b.Error.Message = ErrIncorrect.Code, ErrIncorrect.Message
		b.GuessesRemaining = inc.Remaining
		return c.JSON(ErrIncorrect.Status, b)
	}
	if err != nil {
		return err
	}
	defer out.Key.Wipe()
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	if out.Recipient != nil {
		enc, ct, suite, err := enclave.SealToRecipient(out.Recipient, out.Key.Reveal(), firebase.HPKEInfo("pin", owner))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, firebase.KeyResponse{SealedKey: base64.StdEncoding.EncodeToString(ct), Enc: base64.StdEncoding.EncodeToString(enc), Suite: suite})
	}
	return c.JSON(http.StatusOK, firebase.KeyResponse{Key: base64.StdEncoding.EncodeToString(out.Key.Reveal())})
}

// Status is GET /v1/pin; it counts no guess.
func (h *Handler) Status(c echo.Context) error {
	owner, err := h.owner(c)
	if err != nil {
		return err
	}
	st, err := h.svc.Status(c.Request().Context(), owner)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// Delete is DELETE /v1/pin → 204.
func (h *Handler) Delete(c echo.Context) error {
	owner, err := h.owner(c)
	if err != nil {
		return err
	}
	if err := h.svc.Delete(c.Request().Context(), httpx.KeysRequest(c), owner); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
