package enclave

import (
	"net/http"

	"github.com/keywarden/keywarden/internal/apierr"
)

// MaxUserIDLength is the longest user id: a WebAuthn user handle holds at
// most 64 bytes, and a user id is sent as one.
const MaxUserIDLength = 64

// ErrInvalidUserID refuses a user id outside [ValidUserID]'s rule.
var ErrInvalidUserID = apierr.New(http.StatusBadRequest, "invalid_user_id", "the user id must be 1 to 64 characters of A-Z a-z 0-9 . _ - @ : +")

// ValidUserID is the one rule for the user ids the customer's backend
// vouches for (owners "user:<id>"), used by the admin API, the passkey
// routes, the import and the demo page: 1 to [MaxUserIDLength] characters
// of A-Z a-z 0-9 and . _ - @ : +. The ids are ASCII-safe so that they
// round-trip as WebAuthn user handles on the web, Android and iOS (which
// returns the handle's bytes as a string), and fit in a URL path segment
// without escaping.
func ValidUserID(id string) error {
	if len(id) < 1 || len(id) > MaxUserIDLength {
		return ErrInvalidUserID
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == '@', c == ':', c == '+':
		default:
			return ErrInvalidUserID
		}
	}
	return nil
}
