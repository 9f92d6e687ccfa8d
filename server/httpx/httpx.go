// Package httpx holds the request helpers every HTTP handler of the
// appliance uses, so that one rule holds on every route: JSON bodies
// ([Bind]), bearer credentials ([Bearer]), client keys ([DecodeKey]),
// other base64 values ([DecodeBase64]) and path parameters ([PathParam]).
//
// It depends on echo and apierr only; errors are *apierr.Error values for
// the server's central error handler.
package httpx

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/keys"
)

// Validator is a request body that checks itself after decoding.
type Validator interface{ Validate() error }

// ForeignShape marks a request type whose wire shape a third party
// defines (Portal's SDK, Portal's backend): [Bind] ignores members it does
// not know instead of refusing them, since a newer version of the other
// side may add some. Every other body follows the strict rule.
type ForeignShape interface{ ForeignShape() }

// Optional marks a request type whose every member is optional: [Bind]
// takes an empty body as {} (a client may call the route without a body).
type Optional interface{ Optional() }

// ErrUnsupportedMediaType refuses a body that is not declared as JSON.
var ErrUnsupportedMediaType = apierr.New(http.StatusUnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json")

// Bind decodes the request body into v under the one rule set of every
// JSON route of the appliance:
//
//   - Content-Type is absent or application/json (else 415
//     unsupported_media_type);
//   - the body is at most limit bytes (413 beyond); limit <= 0 leaves only
//     the listener's limits.max_body_bytes, which holds on every route;
//   - an empty body (or only white space) is refused (400 invalid_json),
//     unless the type implements [Optional] (every member is optional):
//     then it stands for {};
//   - the body is exactly one JSON value: trailing data is refused;
//   - members the route does not know are refused (400 invalid_json naming
//     the member): a misspelt recipientPublicKey or sealedKey must never be
//     silently dropped, which would release or store a key another way
//     than the client meant. The one exception is a type that implements
//     [ForeignShape]: a body whose shape a third party defines (Portal's
//     SDK and backend) has members a newer version added ignored;
//   - error messages name the field or offset, never a value.
//
// When v implements [Validator], Validate runs after decoding.
func Bind(c echo.Context, v any, limit int64) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return ErrUnsupportedMediaType
	}
	r := io.Reader(c.Request().Body)
	if limit > 0 {
		r = io.LimitReader(r, limit+1)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return he
		}
		return apierr.ErrBadRequest.Wrap(err)
	}
	if limit > 0 && int64(len(body)) > limit {
		return apierr.ErrTooLarge.WithMessage("the request body is larger than this route accepts (%d bytes)", limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if _, ok := v.(Optional); !ok {
			return apierr.ErrInvalidJSON.WithMessage("the body is empty; send a JSON object")
		}
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, foreign := v.(ForeignShape); !foreign {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apierr.ErrInvalidJSON.WithMessage("the body holds more than one JSON value")
	}
	if val, ok := v.(Validator); ok {
		return val.Validate()
	}
	return nil
}

// jsonError describes a decoding error without echoing values.
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return apierr.ErrInvalidJSON.WithMessage("malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return apierr.ErrInvalidJSON.WithMessage("the body must be a JSON object")
		}
		return apierr.ErrInvalidJSON.WithMessage("field %q must be %s", te.Field, te.Type.String())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apierr.ErrInvalidJSON.WithMessage("the JSON body ends early")
	}
	if s := err.Error(); strings.HasPrefix(s, "json: unknown field ") {
		return apierr.ErrInvalidJSON.WithMessage("unknown field %s", strings.TrimPrefix(s, "json: unknown field "))
	}
	return apierr.ErrInvalidJSON.WithMessage("the body is not valid JSON for this route")
}

// Bearer is the credential of an "Authorization: Bearer <token>" header
// value h (scheme case-insensitive, surrounding space trimmed); ok is
// false when h is not one or the token is empty.
func Bearer(h string) (token string, ok bool) {
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// ErrInvalidKey refuses a client key that is not base64 of 1 to 1024 bytes.
var ErrInvalidKey = apierr.New(http.StatusBadRequest, "invalid_key", "key must be standard base64 (padded or not) of 1 to 1024 bytes")

// DecodeKey is the one rule for a client key sent as "key" on every store
// route (native Firebase, passkey registration, admin import): standard
// base64, padded or not, of enclave.MinKeyBytes to enclave.MaxKeyBytes
// bytes. Anything else is [ErrInvalidKey]; the value is never echoed.
func DecodeKey(s string) (secret.Bytes, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil || len(b) < enclave.MinKeyBytes || len(b) > enclave.MaxKeyBytes {
		clear(b)
		return secret.Bytes{}, ErrInvalidKey
	}
	return secret.NewBytes(b), nil
}

// DecodeBase64 decodes a public binary value (a recipient public key, an
// HPKE enc): standard or URL alphabet, padded or not.
func DecodeBase64(s string) ([]byte, bool) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b, true
	}
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, true
	}
	return nil, false
}

// PathParam is the path parameter name as the client meant it. Echo routes
// on the raw (escaped) path when the request has one that differs from
// the decoded path (a %2F does), and then hands parameters over still
// escaped; otherwise they are already decoded. Unescaping in the second
// case as well would decode a '%' of the value a second time.
func PathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}

// Context keys of the request's correlation id and actor (set by the
// server's middleware and by whichever step authenticated the caller).
const (
	ctxRequestID = "request_id"
	ctxActor     = "actor"
)

// SetRequestID records the request's correlation id.
func SetRequestID(c echo.Context, id string) { c.Set(ctxRequestID, id) }

// RequestID returns the request's correlation id.
func RequestID(c echo.Context) string {
	if id, ok := c.Get(ctxRequestID).(string); ok {
		return id
	}
	// The server's front wrapper keeps it in the request's context.
	return audit.RequestIDFrom(c.Request().Context())
}

// SetActor records who the authenticated caller is, for audit lines
// ("admin:<key id>", "firebase:<…>", "portal:<clientId>").
func SetActor(c echo.Context, actor string) { c.Set(ctxActor, actor) }

// Actor returns the caller SetActor recorded, or "".
func Actor(c echo.Context) string {
	a, _ := c.Get(ctxActor).(string)
	return a
}

// KeysRequest is the keys service's view of this request: actor, request
// id and client address, as its audit lines record them.
func KeysRequest(c echo.Context) keys.Request {
	return keys.Request{Actor: Actor(c), RequestID: RequestID(c), Remote: c.RealIP()}
}

// StoreKeyInput is the key of a store request: "key" (standard base64) or,
// instead, {"sealedKey","enc","suite"} sealed to the appliance key
// (keys.SealedKey). Embed it in a request body.
type StoreKeyInput struct {
	Key       *string `json:"key"`
	SealedKey *string `json:"sealedKey"`
	Enc       string  `json:"enc"`
	Suite     string  `json:"suite"`
}

// ErrKeyAndSealedKey refuses a store request that carries both forms of
// the key, or neither.
var ErrKeyAndSealedKey = apierr.New(http.StatusBadRequest, "invalid_key", "give exactly one of key and sealedKey (with enc and suite)")

// Given reports whether the request carries a key in either form.
func (in StoreKeyInput) Given() bool { return in.Key != nil || in.SealedKey != nil }

// Sealed is the sealed form, or nil when the key came in the clear. It
// refuses both forms at once.
func (in StoreKeyInput) Sealed() (*keys.SealedKey, error) {
	switch {
	case in.Key != nil && in.SealedKey != nil:
		return nil, ErrKeyAndSealedKey
	case in.SealedKey != nil:
		return &keys.SealedKey{SealedKey: *in.SealedKey, Enc: in.Enc, Suite: in.Suite}, nil
	case in.Enc != "" || in.Suite != "":
		return nil, ErrKeyAndSealedKey
	}
	return nil, nil
}

// Open is the key to store: decoded (DecodeKey) or opened by ks with the
// info of (route, owner, method).
func (in StoreKeyInput) Open(ks *keys.Service, route string, owner enclave.Owner, method string) (secret.Bytes, error) {
	sk, err := in.Sealed()
	if err != nil {
		return secret.Bytes{}, err
	}
	if sk != nil {
		return ks.OpenSealed(*sk, route, owner, method)
	}
	if in.Key == nil {
		return secret.Bytes{}, ErrKeyAndSealedKey
	}
	return DecodeKey(*in.Key)
}

// ErrInvalidOwner refuses an owner path segment that is not a valid owner
// of a known kind, or not URL-escaped correctly.
var ErrInvalidOwner = apierr.New(http.StatusBadRequest, "invalid_owner",
	"name the owner as user:<userId>, firebase:<project>/<tenant>/<uid> (tenant empty when none) or portal:<clientId>, URL-escaped in one path segment (/ as %2F)")

// OwnerKinds are the prefixes of the owners Keywarden keeps records for:
// users vouched for by the customer's backend (and passkey users),
// Firebase users, Portal clients.
var OwnerKinds = []string{"user:", "firebase:", "portal:"}

// OwnerParam is the :owner path parameter: any owner of a known kind,
// URL-escaped in one segment (firebase owners hold '/'), or
// [ErrInvalidOwner].
func OwnerParam(c echo.Context) (enclave.Owner, error) {
	raw, err := PathParam(c, "owner")
	if err != nil {
		return "", ErrInvalidOwner
	}
	o := enclave.Owner(raw)
	if o.Validate() != nil {
		return "", ErrInvalidOwner
	}
	for _, k := range OwnerKinds {
		if strings.HasPrefix(raw, k) && len(raw) > len(k) {
			return o, nil
		}
	}
	return "", ErrInvalidOwner
}
