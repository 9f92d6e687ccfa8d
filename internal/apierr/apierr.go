// Package apierr is the error type that becomes an HTTP answer. Services
// return an *Error (or wrap one) with a public message and a stable code for
// the client and an internal cause for the log; the server's one central
// error handler turns it into {"error":{"code","message"}} with Status.
//
// Messages are public: never put a secret, a token or a key in one.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error is an error with an HTTP status, a stable code and a public message.
type Error struct {
	Status     int           // HTTP status
	Code       string        // stable, snake_case, for programs
	Message    string        // public, for people; never a secret
	RetryAfter time.Duration // sets Retry-After when > 0
	Cause      error         // internal; logged, never sent
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// Is matches another *Error by Code, so errors.Is(err, apierr.ErrNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// New makes an *Error.
func New(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// Wrap returns a copy of e with cause attached.
func (e *Error) Wrap(cause error) *Error {
	c := *e
	c.Cause = cause
	return &c
}

// WithMessage returns a copy of e with another public message.
func (e *Error) WithMessage(format string, args ...any) *Error {
	c := *e
	c.Message = fmt.Sprintf(format, args...)
	return &c
}

// WithRetry returns a copy of e that asks the client to retry after d.
func (e *Error) WithRetry(d time.Duration) *Error {
	c := *e
	c.RetryAfter = d
	return &c
}

// As finds the *Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// Common errors. Packages define their own beside these with New.
var (
	ErrBadRequest   = New(http.StatusBadRequest, "bad_request", "the request is malformed")
	ErrInvalidJSON  = New(http.StatusBadRequest, "invalid_json", "the body is not valid JSON for this route")
	ErrUnauthorized = New(http.StatusUnauthorized, "unauthorized", "missing or invalid credentials")
	ErrForbidden    = New(http.StatusForbidden, "forbidden", "the caller is not allowed to do this")
	ErrNotFound     = New(http.StatusNotFound, "not_found", "not found")
	ErrConflict     = New(http.StatusConflict, "conflict", "conflicts with the current state")
	ErrKeyExists    = New(http.StatusConflict, "key_exists", "a key is already stored and this route may not replace it")
	ErrTooLarge     = New(http.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than this route accepts")
	ErrRateLimited  = New(http.StatusTooManyRequests, "rate_limited", "too many requests; retry later")
	ErrUnavailable  = New(http.StatusServiceUnavailable, "unavailable", "the service is temporarily unavailable; retry later")
	ErrInternal     = New(http.StatusInternalServerError, "internal", "internal error")
	ErrSealed       = New(http.StatusServiceUnavailable, "sealed", "the root key is sealed; the appliance serves nothing until it unseals")
	ErrAuditFailed  = New(http.StatusServiceUnavailable, "audit_unavailable", "the audit log cannot be written; the action was refused")
	// ErrStoreUnavailable: the store cannot be read or written now (an
	// etcd cluster without a quorum): the request was refused rather than
	// answered from state this node cannot prove current.
	ErrStoreUnavailable = New(http.StatusServiceUnavailable, "store_unavailable", "the store cannot be read or written now; retry later")
)
