package firebase

import (
	"net/http"

	"github.com/keywarden/keywarden/internal/apierr"
)

// The refusals. Every token problem is a 401, because the Portal SDK
// refreshes the Firebase token and retries only on 401; the Code says which
// check failed and is stable (use it as a metrics label). Verify returns
// copies with a specific Message; match them with errors.Is.
var (
	ErrTokenMissing       = unauthorized("token_missing", "no Firebase ID token was presented")
	ErrTokenMalformed     = unauthorized("token_malformed", "the Firebase ID token is malformed")
	ErrTokenTooLarge      = unauthorized("token_too_large", "the Firebase ID token is too large")
	ErrTokenAlg           = unauthorized("token_alg", "the Firebase ID token is not signed with RS256")
	ErrTokenKidUnknown    = unauthorized("token_kid_unknown", "the Firebase ID token's key id (kid) does not name a current Google certificate")
	ErrTokenSignature     = unauthorized("token_signature", "the Firebase ID token's signature is invalid")
	ErrTokenExpired       = unauthorized("token_expired", "the Firebase ID token has expired; refresh it")
	ErrTokenNotYetValid   = unauthorized("token_not_yet_valid", "the Firebase ID token is not valid yet (nbf)")
	ErrTokenIssuedFuture  = unauthorized("token_issued_in_future", "the Firebase ID token was issued in the future (iat); check the clocks")
	ErrTokenTooOld        = unauthorized("token_too_old", "the Firebase ID token was issued too long ago; refresh it")
	ErrWrongAudience      = unauthorized("wrong_audience", "the Firebase ID token is for another audience")
	ErrWrongIssuer        = unauthorized("wrong_issuer", "the Firebase ID token has the wrong issuer")
	ErrWrongTenant        = unauthorized("wrong_tenant", "the Firebase ID token's tenant is not allowed")
	ErrSubjectInvalid     = unauthorized("subject_invalid", "the Firebase ID token's subject (sub) is invalid")
	ErrAuthTimeInvalid    = unauthorized("auth_time_invalid", "the Firebase ID token's auth_time is missing or in the future")
	ErrAuthTooOld         = unauthorized("auth_too_old", "a more recent sign-in is required")
	ErrProviderNotAllowed = unauthorized("provider_not_allowed", "this sign-in provider is not allowed")
	ErrEmailNotVerified   = unauthorized("email_not_verified", "a verified email address is required")

	// ErrKeysUnavailable means Google's certificates are not at hand: never
	// fetched, or the last good set is older than Options.MaxStale. It is a
	// 503 with Retry-After, not a judgement on the token.
	ErrKeysUnavailable = apierr.New(http.StatusServiceUnavailable, "firebase_keys_unavailable",
		"Google's token-signing certificates are unavailable; retry later")
)

func unauthorized(code, msg string) *apierr.Error {
	return apierr.New(http.StatusUnauthorized, code, msg)
}
