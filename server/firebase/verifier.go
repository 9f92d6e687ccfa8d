package firebase

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"

	"github.com/keywarden/keywarden/internal/apierr"
)

// issuerPrefix + project id is the iss of a Firebase ID token.
const issuerPrefix = "https://securetoken.google.com/"

// maxSubjectLen is Firebase's limit on a uid, in characters.
const maxSubjectLen = 128

// Identity is what a verified token proves.
type Identity struct {
	ProjectID      string    // the token's aud, one of Options.ProjectIDs
	Tenant         string    // firebase.tenant, "" without one
	Subject        string    // sub: the Firebase uid
	IssuedAt       time.Time // iat: when this token was minted (last refresh)
	AuthTime       time.Time // auth_time: the original sign-in
	Expiry         time.Time // exp
	SignInProvider string    // firebase.sign_in_provider, "" if absent
	EmailVerified  bool      // email_verified
}

// Owner is the owner string of the user's records:
// "firebase:<project>/<tenant>/<sub>" (decisions/01). Project and tenant
// cannot contain "/" (configuration refuses it, and a token's values must
// equal configured ones), so the owner is unambiguous.
func (i *Identity) Owner() string {
	return "firebase:" + i.ProjectID + "/" + i.Tenant + "/" + i.Subject
}

// Verifier verifies Firebase ID tokens. It is safe for concurrent use.
//
// Certificates are refreshed lazily: a Verify that finds the set past its
// max-age starts a background fetch and goes on with the stale set (up to
// MaxStale); a Verify that finds no usable set, or an unknown kid, waits for
// a fetch. Fetches are at most one per RefetchInterval and shared by
// concurrent callers. [Verifier.Close] stops a fetch in progress.
type Verifier struct {
	opts      Options
	projects  map[string]struct{}
	tenants   map[string]struct{}
	providers map[string]struct{}
	src       source

	keys   atomic.Pointer[keySet]
	skew   atomic.Pointer[clockSkew] // of the last fetch with a Date header
	tokens tokenCache
	flight singleflight.Group
	stats  stats

	mu          sync.Mutex // guards lastAttempt, lastErr
	lastAttempt time.Time
	lastErr     error

	bgCtx     context.Context
	bgCancel  context.CancelFunc
	bgRunning atomic.Bool
	closeMu   sync.RWMutex // guards closed against wg.Add
	closed    bool
	wg        sync.WaitGroup
}

// New validates opts and makes a Verifier, loading the certificates once
// under ctx. With CertsFile, a load failure is an error. With a URL it is
// not: the verifier starts degraded (see [Verifier.KeySetStatus]) and Verify
// answers 503 [ErrKeysUnavailable] until a fetch succeeds, so that an
// outage at Google does not stop the appliance from starting.
func New(ctx context.Context, opts Options) (*Verifier, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	v := &Verifier{
		opts:      o,
		projects:  set(o.ProjectIDs),
		tenants:   set(o.Tenants),
		providers: set(o.AllowedProviders),
	}
	if o.CertsFile != "" {
		v.src = fileSource{path: o.CertsFile}
	} else {
		v.src = urlSource{url: o.CertsURL, client: o.HTTPClient}
	}
	v.bgCtx, v.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	err := v.refresh(ctx)
	if err != nil && o.CertsFile != "" {
		v.Close()
		return nil, err
	}
	if err != nil && ctx.Err() != nil {
		v.Close()
		return nil, fmt.Errorf("firebase: loading certificates: %w", ctx.Err())
	}
	return v, nil
}

// Close stops a certificate fetch in progress and waits for it. Verify
// keeps working with the certificates held but fetches no more.
func (v *Verifier) Close() {
	v.closeMu.Lock()
	v.closed = true
	v.closeMu.Unlock()
	v.bgCancel()
	v.wg.Wait()
}

func (v *Verifier) now() time.Time { return v.opts.Clock() }

// Verify checks rawToken (the bare token, without "Bearer ") and returns
// the identity it proves. Every refusal is an *apierr.Error: 401 with one of
// the codes of this package's Err… values, or 503 [ErrKeysUnavailable].
// Messages never contain the token.
//
// The checks, in order (the first failure decides the code):
//
//  1. Structure, before anything is trusted: present (token_missing), at most
//     [MaxTokenSize] bytes (token_too_large), only base64url characters and
//     three segments (token_malformed), a header of at most [MaxHeaderSize]
//     (token_too_large), header and claims strict base64url encoding a JSON
//     object with unique member names, valid UTF-8, bounded nesting
//     (token_malformed).
//  2. Header: alg exactly "RS256" (token_alg: refuses none, HS256 keyed with
//     the public key, ES256, PS256, …), no crit (token_malformed), a kid
//     (token_kid_unknown); a signature segment (token_signature).
//  3. Claims that make a token unusable whoever signed it: aud one of the
//     configured projects (wrong_audience), iss
//     "https://securetoken.google.com/<aud>" (wrong_issuer), sub a non-empty
//     string of at most 128 characters without control characters
//     (subject_invalid), exp after now − leeway (token_expired), iat before
//     now + leeway (token_issued_in_future), nbf if present before now +
//     leeway (token_not_yet_valid), auth_time present, before now + leeway
//     and not after iat + leeway (auth_time_invalid). Time claims are integer
//     seconds; any claim of the wrong JSON type is token_malformed.
//     These run before the key lookup so that foreign, expired or garbled
//     tokens never cause a certificate fetch and a Google OAuth ID token
//     gets a helpful message instead of token_kid_unknown. None of them can
//     make a token acceptable on its own.
//  4. Key: the kid names a certificate of the current set (refetched at most
//     once per RefetchInterval when unknown) whose validity window, widened
//     by [CertValidityGrace], contains now (token_kid_unknown); no usable set
//     at all is 503 firebase_keys_unavailable.
//  5. Signature: RSASSA-PKCS1-v1_5 with SHA-256 over header.claims with
//     that key, by golang-jwt's RS256 method (token_signature).
//  6. Policy, only for authentic tokens: firebase.tenant allowed
//     (wrong_tenant), MaxIssuedAge (token_too_old), sign-in provider
//     (provider_not_allowed), email_verified (email_not_verified), MaxAuthAge
//     (auth_too_old).
//
// Revocation and disabled accounts cannot be known offline: a token stays
// valid until exp.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (*Identity, error) {
	digest := tokenDigest(rawToken)
	if id, ok := v.answerFromCache(ctx, digest); ok {
		return id, nil
	}
	tok, aerr := parseToken(rawToken)
	if aerr != nil {
		return nil, aerr
	}
	now := v.now()
	id, ext, aerr := v.checkClaims(tok.claims, now)
	if aerr != nil {
		return nil, aerr
	}
	key, aerr := v.key(ctx, tok.kid)
	if aerr != nil {
		return nil, aerr
	}
	if err := jwt.SigningMethodRS256.Verify(tok.signingInput, tok.signature, key); err != nil {
		return nil, ErrTokenSignature.Wrap(err)
	}
	if aerr := v.checkPolicy(id, ext, now); aerr != nil {
		return nil, aerr
	}
	nbf, hasNbf, _ := tok.claims.unix("nbf")
	v.tokens.store(digest, tokenEntry{key: key, kid: tok.kid, id: *id, ext: ext, nbf: nbf, hasNbf: hasNbf})
	return id, nil
}

// verifiedBefore answers from the cache of tokens that passed every check
// (see tokenCache): the same token bytes, still signed by the very key
// object of the current key set, re-checked against the clock and the
// policies. Anything else takes the full path, which names the failure.
func (v *Verifier) verifiedBefore(ctx context.Context, raw string) (*Identity, bool) {
	return v.answerFromCache(ctx, tokenDigest(raw))
}

// answerFromCache is verifiedBefore for the token of digest d.
func (v *Verifier) answerFromCache(ctx context.Context, d [32]byte) (*Identity, bool) {
	e, ok := v.tokens.lookup(d)
	if !ok {
		return nil, false
	}
	now := v.now()
	leeway := v.opts.Leeway
	if !now.Before(e.id.Expiry.Add(leeway)) || e.id.IssuedAt.After(now.Add(leeway)) ||
		e.id.AuthTime.After(now.Add(leeway)) || (e.hasNbf && time.Unix(e.nbf, 0).After(now.Add(leeway))) {
		return nil, false
	}
	if ks := v.keys.Load(); ks == nil || !ks.usable(now, v.opts.MaxStale) {
		return nil, false
	}
	key, aerr := v.key(ctx, e.kid)
	if aerr != nil || key != e.key {
		return nil, false
	}
	id := e.id
	if aerr := v.checkPolicy(&id, e.ext, now); aerr != nil {
		return nil, false
	}
	return &id, true
}

// claimExtras are claims read before the signature but judged after it.
type claimExtras struct {
	hasTenant        bool
	hasEmailVerified bool
}

func malformedClaim(name string) *apierr.Error {
	return ErrTokenMalformed.WithMessage("the Firebase ID token's %s claim has the wrong type", name)
}

// checkClaims makes the checks of step 3 of Verify and reads the identity.
func (v *Verifier) checkClaims(c jsonObject, now time.Time) (*Identity, claimExtras, *apierr.Error) {
	var ext claimExtras
	aud, audOK, err := c.str("aud")
	if err != nil {
		return nil, ext, ErrWrongAudience.WithMessage("the token's audience (aud) is not a single string; a Firebase ID token's aud is its project id")
	}
	iss, _, issErr := c.str("iss")
	if _, ok := v.projects[aud]; !ok || !audOK {
		return nil, ext, ErrWrongAudience.WithMessage("the token's audience (aud) is %s and its issuer (iss) %s; aud is not a Firebase project this server accepts%s",
			quote(aud), quote(iss), tokenTypeHint(aud, iss))
	}
	if issErr != nil || iss != issuerPrefix+aud {
		return nil, ext, ErrWrongIssuer.WithMessage("the token's issuer (iss) is %s; a Firebase ID token for %s has %s%s",
			quote(iss), quote(aud), quote(issuerPrefix+aud), tokenTypeHint(aud, iss))
	}

	sub, ok, err := c.str("sub")
	switch {
	case err != nil:
		return nil, ext, ErrSubjectInvalid.WithMessage("the token's subject (sub) is not a string")
	case !ok || sub == "":
		return nil, ext, ErrSubjectInvalid.WithMessage("the token has no subject (sub)")
	case utf8.RuneCountInString(sub) > maxSubjectLen:
		return nil, ext, ErrSubjectInvalid.WithMessage("the token's subject (sub) is longer than %d characters", maxSubjectLen)
	case strings.IndexFunc(sub, func(r rune) bool { return unicode.IsControl(r) || r == utf8.RuneError }) >= 0:
		// U+FFFD also stands for a lone surrogate escape (\ud800): two
		// different subs must never become one owner.
		return nil, ext, ErrSubjectInvalid.WithMessage("the token's subject (sub) contains a control or replacement character")
	}

	exp, ok, err := c.unix("exp")
	if err != nil {
		return nil, ext, malformedClaim("exp")
	}
	if !ok {
		return nil, ext, ErrTokenMalformed.WithMessage("the Firebase ID token has no exp claim")
	}
	leeway := v.opts.Leeway
	if expT := time.Unix(exp, 0); !now.Before(expT.Add(leeway)) {
		return nil, ext, ErrTokenExpired.WithMessage("the Firebase ID token expired at %s (server time %s); refresh it",
			expT.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	iat, ok, err := c.unix("iat")
	if err != nil {
		return nil, ext, malformedClaim("iat")
	}
	if !ok {
		return nil, ext, ErrTokenMalformed.WithMessage("the Firebase ID token has no iat claim")
	}
	if iatT := time.Unix(iat, 0); iatT.After(now.Add(leeway)) {
		return nil, ext, ErrTokenIssuedFuture.WithMessage("the Firebase ID token was issued at %s, after the server's time %s; check the clocks",
			iatT.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	nbf, ok, err := c.unix("nbf")
	if err != nil {
		return nil, ext, malformedClaim("nbf")
	}
	if nbfT := time.Unix(nbf, 0); ok && nbfT.After(now.Add(leeway)) {
		return nil, ext, ErrTokenNotYetValid.WithMessage("the Firebase ID token is not valid before %s (server time %s)",
			nbfT.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	authTime, ok, err := c.unix("auth_time")
	switch {
	case err != nil:
		return nil, ext, malformedClaim("auth_time")
	case !ok:
		return nil, ext, ErrAuthTimeInvalid.WithMessage("the Firebase ID token has no auth_time claim")
	case time.Unix(authTime, 0).After(now.Add(leeway)):
		return nil, ext, ErrAuthTimeInvalid.WithMessage("the Firebase ID token's auth_time is in the future (server time %s)", now.UTC().Format(time.RFC3339))
	case authTime > iat+int64(leeway/time.Second):
		return nil, ext, ErrAuthTimeInvalid.WithMessage("the Firebase ID token's auth_time is after its iat")
	}

	id := &Identity{
		ProjectID: aud,
		Subject:   sub,
		IssuedAt:  time.Unix(iat, 0),
		AuthTime:  time.Unix(authTime, 0),
		Expiry:    time.Unix(exp, 0),
	}
	id.EmailVerified, ext.hasEmailVerified, err = c.boolean("email_verified")
	if err != nil {
		return nil, ext, malformedClaim("email_verified")
	}
	fb, ok, err := c.object("firebase")
	if err != nil {
		return nil, ext, malformedClaim("firebase")
	}
	if ok {
		if id.SignInProvider, _, err = fb.str("sign_in_provider"); err != nil {
			return nil, ext, malformedClaim("firebase.sign_in_provider")
		}
		if id.Tenant, ext.hasTenant, err = fb.str("tenant"); err != nil {
			return nil, ext, malformedClaim("firebase.tenant")
		}
	}
	return id, ext, nil
}

// tokenTypeHint guesses what was sent instead of a Firebase ID token.
func tokenTypeHint(aud, iss string) string {
	switch {
	case iss == "accounts.google.com" || iss == "https://accounts.google.com" ||
		strings.HasSuffix(aud, ".apps.googleusercontent.com"):
		return " (is this a Google OAuth ID token rather than a Firebase ID token?)"
	case strings.HasPrefix(aud, "https://identitytoolkit.googleapis.com/"):
		return " (is this a Firebase custom token rather than an ID token?)"
	case strings.HasPrefix(iss, issuerPrefix):
		return " (is this a token from another Firebase project?)"
	}
	return " (is this a Firebase ID token?)"
}

// key finds the public key for kid (step 4 of Verify).
func (v *Verifier) key(ctx context.Context, kid string) (*rsa.PublicKey, *apierr.Error) {
	now := v.now()
	s := v.keys.Load()
	if s == nil || !s.usable(now, v.opts.MaxStale) {
		err := v.refresh(ctx)
		if s = v.keys.Load(); s == nil || !s.usable(v.now(), v.opts.MaxStale) {
			return nil, v.unavailable(err)
		}
	} else if s.stale(now) {
		v.refreshInBackground()
	}
	if k, ok := s.keys[kid]; ok && k.validAt(v.now()) {
		return k.pub, nil
	}
	// Unknown kid: Google may have rotated. One shared, rate-limited refetch.
	v.stats.unknownKid.Add(1)
	if err := v.refresh(ctx); err == nil {
		s = v.keys.Load()
		if !s.usable(v.now(), v.opts.MaxStale) {
			return nil, v.unavailable(nil)
		}
	}
	if k, ok := s.keys[kid]; ok && k.validAt(v.now()) {
		return k.pub, nil
	}
	return nil, ErrTokenKidUnknown.WithMessage("the Firebase ID token's key id (kid) %s does not name a current Google certificate", quote(kid))
}

// unavailable is the 503 for a missing key set, asking the client to come
// back when the next fetch is allowed.
func (v *Verifier) unavailable(cause error) *apierr.Error {
	v.mu.Lock()
	last, lastErr := v.lastAttempt, v.lastErr
	v.mu.Unlock()
	retry := v.opts.RefetchInterval - v.now().Sub(last)
	if retry < time.Second || retry > v.opts.RefetchInterval {
		retry = time.Second
	}
	if cause == nil || errors.Is(cause, errRefetchTooSoon) {
		cause = lastErr
	}
	e := ErrKeysUnavailable.WithRetry(retry)
	if cause != nil {
		e = e.Wrap(cause)
	}
	return e
}

// checkPolicy is step 6 of Verify.
func (v *Verifier) checkPolicy(id *Identity, ext claimExtras, now time.Time) *apierr.Error {
	if _, ok := v.tenants[id.Tenant]; !ok || (ext.hasTenant && id.Tenant == "") {
		if !ext.hasTenant {
			return ErrWrongTenant.WithMessage("the Firebase ID token has no tenant; this server accepts only tenant tokens")
		}
		return ErrWrongTenant.WithMessage("the Firebase ID token's tenant %s is not allowed", quote(id.Tenant))
	}
	if max := v.opts.MaxIssuedAge; max > 0 && now.Sub(id.IssuedAt) > max+v.opts.Leeway {
		return ErrTokenTooOld.WithMessage("the Firebase ID token was issued more than %v ago; refresh it", max)
	}
	if len(v.providers) > 0 {
		if _, ok := v.providers[id.SignInProvider]; !ok {
			return ErrProviderNotAllowed.WithMessage("sign-in provider %s is not allowed", quote(id.SignInProvider))
		}
	}
	if v.opts.RequireEmailVerified && (!ext.hasEmailVerified || !id.EmailVerified) {
		return ErrEmailNotVerified
	}
	if aerr := v.checkAuthAge(id, v.opts.MaxAuthAge, now); aerr != nil {
		return aerr
	}
	return nil
}

// CheckAuthAge refuses (401 auth_too_old) an identity whose sign-in
// (auth_time) is older than maxAge, with the verifier's leeway; maxAge <= 0
// accepts any. Use it for per-route step-up rules, such as an overwrite that
// requires a recent sign-in (decisions/03).
func (v *Verifier) CheckAuthAge(id *Identity, maxAge time.Duration) error {
	if aerr := v.checkAuthAge(id, maxAge, v.now()); aerr != nil {
		return aerr
	}
	return nil
}

func (v *Verifier) checkAuthAge(id *Identity, maxAge time.Duration, now time.Time) *apierr.Error {
	if maxAge > 0 && now.Sub(id.AuthTime) > maxAge+v.opts.Leeway {
		return ErrAuthTooOld.WithMessage("the last sign-in was more than %v ago; sign in again", maxAge)
	}
	return nil
}
