package server

import (
	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/apierr"
)

// The headers that choose GET /v1/me/events's proof: passkey.ProofHeader
// and portal.FirebaseTokenHeader (spelled out: those packages' tests
// import this one).
const (
	passkeyProofHeader  = "X-Passkey-Proof"
	portalFirebaseToken = "X-Firebase-Token"
)

// eventsOwner is a capability that authenticates GET /v1/me/events with
// its own proof (passkey.Handler: a passkey proof; portal.Adapter: Portal
// credentials with a Firebase ID token) and returns the owner.
type eventsOwner interface {
	EventsOwner(c echo.Context) (string, error)
}

var errEventsProofOff = apierr.ErrUnauthorized.WithMessage("this kind of proof is not accepted here: its capability is off")

// meEvents is GET /v1/me/events: the caller's own audit events, with the
// same proofs as a release. The proof is chosen by the headers:
//   - X-Passkey-Proof: the assertionCeremonyId of a finished passkey
//     authentication (single use);
//   - X-Firebase-Token: the Portal TBS path (Authorization carries the
//     Portal client's credential, as on GET /v1/backup/encrypt-key);
//   - otherwise Authorization: Bearer <Firebase ID token>.
//
// The owner comes only from the verified proof.
func (s *Server) meEvents(c echo.Context) error {
	if s.fb == nil {
		return sealedHandler(c)
	}
	h := c.Request().Header
	var via any
	switch {
	case h.Get(passkeyProofHeader) != "":
		via = s.opts.Passkey
	case h.Get(portalFirebaseToken) != "":
		via = s.opts.Portal
	default:
		return s.fb.Events(c)
	}
	eo, ok := via.(eventsOwner)
	if !ok {
		return errEventsProofOff
	}
	// A passkey proof is single use: a request that would be refused
	// anyway (a bad limit, the index off) must not spend it.
	if err := s.fb.CheckEventsQuery(c); err != nil {
		return err
	}
	owner, err := eo.EventsOwner(c)
	if err != nil {
		return err
	}
	return s.fb.EventsOf(c, owner)
}
