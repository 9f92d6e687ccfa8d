package firebase

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
)

// Limits of GET /v1/me/events.
const (
	DefaultEventsLimit = 100
	MaxEventsLimit     = 1000
)

var (
	// ErrEventsUnavailable: the appliance was started without the owner
	// index (no audit directory).
	ErrEventsUnavailable = apierr.New(http.StatusServiceUnavailable, "events_unavailable", "the event list is not available on this appliance")
	// errEventsBusy: the owner was not in the index's memory and as many
	// reads of the audit files as it allows ran for other owners; the
	// client retries shortly.
	errEventsBusy  = apierr.New(http.StatusServiceUnavailable, "events_busy", "too many event lists are being read from the audit log; retry shortly").WithRetry(time.Second)
	errEventsQuery = apierr.New(http.StatusBadRequest, "invalid_query", "limit must be 1 to 1000 and before a positive audit seq")
)

// EventsResponse is the body of GET /v1/me/events.
type EventsResponse struct {
	// Events are the caller's own events (stores, releases, refusals that
	// were sampled into the log, deletions, restores), newest first. Each
	// names its audit line by seq and SHA-256: the line, and the signed
	// anchor after it, verify in any copy of the log (`keywarden audit
	// verify`). A release's receipt was given with the release.
	Events []audit.OwnerEvent `json:"events"`
}

// Events is GET /v1/me/events: the owner of the Firebase ID token sees the
// audit events on their own records, and nobody else's (the owner comes
// from the verified token only). Query: limit (1–1000, default 100),
// before (an audit seq: the page of older events).
func (h *HTTP) Events(c echo.Context) error {
	id, err := h.Verify(c, "")
	if err != nil {
		return err
	}
	return h.EventsOf(c, id.Owner())
}

// EventsOf answers GET /v1/me/events with owner's events: owner comes from
// a proof the caller checked (a Firebase ID token, a passkey proof, Portal
// credentials), never from the request itself.
func (h *HTTP) EventsOf(c echo.Context, owner string) error {
	limit, before, err := h.eventsQuery(c)
	if err != nil {
		return err
	}
	evs, err := h.events.Events(owner, limit, before)
	if err != nil {
		return eventsError(err)
	}
	if evs == nil {
		evs = []audit.OwnerEvent{}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, EventsResponse{Events: evs})
}

// CheckEventsQuery answers what GET /v1/me/events would refuse before
// looking at a proof (the events index off, a bad limit or before), so
// a caller whose proof is single use checks it first and spends the proof
// only on a request that can be answered.
func (h *HTTP) CheckEventsQuery(c echo.Context) error {
	_, _, err := h.eventsQuery(c)
	return err
}

func (h *HTTP) eventsQuery(c echo.Context) (limit int, before uint64, err error) {
	if h.events == nil {
		return 0, 0, ErrEventsUnavailable
	}
	limit = DefaultEventsLimit
	if s := c.QueryParam("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > MaxEventsLimit {
			return 0, 0, errEventsQuery
		}
	}
	if s := c.QueryParam("before"); s != "" {
		if before, err = strconv.ParseUint(s, 10, 64); err != nil || before == 0 {
			return 0, 0, errEventsQuery
		}
	}
	return limit, before, nil
}

// eventsError is the answer to an error of the owner index: 503
// events_busy (with Retry-After) when its reads of the files are all taken,
// 503 events_unavailable otherwise.
func eventsError(err error) error {
	if errors.Is(err, audit.ErrOwnerIndexBusy) {
		return errEventsBusy.Wrap(err)
	}
	return ErrEventsUnavailable.Wrap(err)
}
