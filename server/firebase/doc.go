// Package firebase verifies Firebase ID tokens offline, against Google's
// published certificates, and says who they prove: an [Identity] whose
// [Identity.Owner] is "firebase:<project>/<tenant>/<sub>".
//
// Its HTTP handlers ([HTTP], the native key routes) sit next to the
// verifier and take their dependencies at construction: the keys service
// (server/keys), a [TokenVerifier] and the operator's block list. They take
// the bearer token, call [Verifier.Verify], then one keys method, and pass
// the *apierr.Error they may get to the central error handler.
//
// # Checks
//
// Every check is made by this package's own code and has its own stable
// error code; [Verifier.Verify] lists them in the order they run. Every
// token problem is 401 (the Portal SDK refreshes its token and retries only
// on 401; 403 would mean "valid but not allowed"). The refusal's Code is the
// label to count in metrics. Messages name what was received (aud, iss,
// alg, kid, tenant) and guess what was sent instead — a Google OAuth ID
// token, a custom token, another project's token — but never contain the
// token.
//
// The signature is checked with golang-jwt's RS256 method; nothing else of
// golang-jwt is used, because its parser is more forgiving than a verifier
// of untrusted tokens should be. This package parses the token itself:
// base64url without padding or line breaks, JSON objects with unique member
// names (compared after unescaping) looked up by exact name (encoding/json's
// struct decoding would let "AUD" stand in for "aud"), valid UTF-8, time
// claims as integers.
//
// # Certificates
//
// Google serves a JSON object {kid: PEM X.509 certificate} with a
// Cache-Control max-age of several hours. The verifier:
//
//   - loads it at [New]; refreshes it lazily once max-age (less Age, capped
//     at [MaxCertsMaxAge]) has passed, in the background, while still using
//     the old set;
//   - on an unknown kid refetches at once, but never more than one fetch
//     per Options.RefetchInterval whatever the cause, and one fetch shared
//     by all waiting callers (singleflight): a flood of made-up kids costs
//     at most one fetch per interval;
//   - when the endpoint fails, keeps the last good set up to
//     Options.MaxStale past its max-age (unknown kids are still refused),
//     then answers 503 [ErrKeysUnavailable] with Retry-After;
//   - keeps only RSA keys of 2048–8192 bits, and uses a certificate only
//     while its validity window, widened by [CertValidityGrace] on both
//     sides, contains the current time. The window is checked loosely
//     because Google's certificates are mere wrappers for keys and clocks
//     drift; it is checked at all so that a stale cache or an old CertsFile
//     cannot keep a retired key alive for weeks;
//   - with Options.CertsFile reads the same JSON from a file (air-gapped
//     sites), never expires it by age, and rereads it on an unknown kid.
//
// [Verifier.KeySetStatus] reports the set's age and state for /readyz and
// [Verifier.Stats] counts fetches for metrics.
//
// # What an offline verifier cannot know
//
// A revoked refresh token, a disabled or deleted account, a changed
// password: Google's ID tokens stay valid until exp (one hour). Block a sub
// with the appliance's own block list, or shorten the window with
// Options.MaxIssuedAge. Whoever controls the Firebase project can mint
// tokens for any of its users.
//
// There is no unsigned-token path and FIREBASE_AUTH_EMULATOR_HOST is
// ignored: emulator tokens are unsigned.
package firebase
