package firebase

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netcheck"
)

// GoogleCertsURL is where Google publishes the certificates that sign
// Firebase ID tokens.
const GoogleCertsURL = "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"

// Defaults and limits of [Options].
const (
	DefaultLeeway          = time.Minute
	MaxLeeway              = 5 * time.Minute
	DefaultRefetchInterval = 30 * time.Second
	DefaultMaxStale        = 24 * time.Hour
	MaxMaxStale            = 7 * 24 * time.Hour
	DefaultFetchTimeout    = 10 * time.Second
)

// Options configure a [Verifier]. The zero value of each field is documented;
// ProjectIDs is the only required one. [Options.Validate] checks them without
// changing them; [New] trims and applies the defaults.
type Options struct {
	// ProjectIDs are the Firebase projects whose tokens are accepted: a
	// token's aud must be one of them. Required. Entries are trimmed of
	// surrounding white space (a secret mounted from a file often ends in a
	// newline). Guards against tokens minted for someone else's project.
	ProjectIDs []string

	// Tenants are the allowed values of the firebase.tenant claim (Identity
	// Platform multi-tenancy). The entry "" allows tokens without a tenant.
	// Empty (nil) means only tokens without a tenant. The tenant is part of
	// the owner (see [Identity.Owner]), so the same uid in two tenants is two
	// users. Entries are trimmed.
	Tenants []string

	// CertsURL is where the certificates are fetched; "" means
	// [GoogleCertsURL]. Must be https, or http to a loopback address (tests,
	// a local mirror). Mutually exclusive with CertsFile.
	CertsURL string

	// CertsFile, when set, loads the certificates from this file (the same
	// JSON as Google's endpoint) instead of fetching: for air-gapped sites.
	// The file is read at New (an error there is fatal) and read again on an
	// unknown kid, at most once per RefetchInterval; the operator must
	// replace it before Google's keys roll over (about every two weeks).
	CertsFile string

	// Leeway is the clock skew tolerated on exp, iat, nbf and auth_time.
	// 0 means [DefaultLeeway] (1 minute); at most [MaxLeeway].
	Leeway time.Duration

	// MaxAuthAge, when > 0, refuses tokens whose auth_time (the original
	// sign-in, not the last refresh) is older: a step-up that forces the
	// user to sign in again. 0 turns it off. Per-call checks can use
	// [Verifier.CheckAuthAge] instead.
	MaxAuthAge time.Duration

	// MaxIssuedAge, when > 0, refuses tokens whose iat is older: the cheap
	// freshness check (the client just refreshes its token). 0 turns it off.
	MaxIssuedAge time.Duration

	// AllowedProviders, when not empty, are the only accepted values of
	// firebase.sign_in_provider (e.g. "password", "google.com"). Empty means
	// any, including "anonymous" and "custom".
	AllowedProviders []string

	// RequireEmailVerified refuses tokens whose email_verified is not true.
	RequireEmailVerified bool

	// RefetchInterval is the least time between two fetches of the
	// certificates, whatever the reason (unknown kid, expiry, a failed
	// fetch): a flood of tokens with made-up kids cannot cause a fetch
	// storm. 0 means [DefaultRefetchInterval] (30 s); at least 1 s.
	RefetchInterval time.Duration

	// MaxStale is how long past its Cache-Control max-age the last good key
	// set stays in use while the endpoint fails (unknown kids are still
	// refused); after that Verify answers 503 [ErrKeysUnavailable].
	// 0 means [DefaultMaxStale] (24 h); at most [MaxMaxStale].
	MaxStale time.Duration

	// HTTPClient fetches the certificates; nil means a client with a
	// [DefaultFetchTimeout] timeout.
	HTTPClient *http.Client

	// Clock tells the time; nil means time.Now.
	Clock func() time.Time
}

// Validate reports the first problem with o. It does not change o.
func (o *Options) Validate() error {
	if len(o.ProjectIDs) == 0 {
		return errors.New("firebase: at least one project id is required")
	}
	if err := checkNames("project id", o.ProjectIDs, false); err != nil {
		return err
	}
	if err := checkNames("tenant", o.Tenants, true); err != nil {
		return err
	}
	if err := checkNames("sign-in provider", o.AllowedProviders, false); err != nil {
		return err
	}
	if o.CertsURL != "" && o.CertsFile != "" {
		return errors.New("firebase: set either certs_url or certs_file, not both")
	}
	if o.CertsURL != "" {
		if err := checkCertsURL(o.CertsURL); err != nil {
			return err
		}
	}
	if o.CertsFile != "" && strings.TrimSpace(o.CertsFile) != o.CertsFile {
		return fmt.Errorf("firebase: certs_file %q has surrounding white space", o.CertsFile)
	}
	switch {
	case o.Leeway < 0 || o.Leeway > MaxLeeway:
		return fmt.Errorf("firebase: leeway %v is outside 0..%v", o.Leeway, MaxLeeway)
	case o.MaxAuthAge < 0:
		return fmt.Errorf("firebase: max auth age %v is negative", o.MaxAuthAge)
	case o.MaxIssuedAge < 0:
		return fmt.Errorf("firebase: max issued age %v is negative", o.MaxIssuedAge)
	case o.RefetchInterval != 0 && (o.RefetchInterval < time.Second || o.RefetchInterval > time.Hour):
		return fmt.Errorf("firebase: refetch interval %v is outside 1s..1h", o.RefetchInterval)
	case o.MaxStale < 0 || o.MaxStale > MaxMaxStale:
		return fmt.Errorf("firebase: max stale %v is outside 0..%v", o.MaxStale, MaxMaxStale)
	}
	return nil
}

// checkNames checks a configured list: trimmed entries non-empty (unless
// allowEmpty), no duplicates, and no character that could blur an owner
// string ("firebase:<project>/<tenant>/<sub>") or a store key.
func checkNames(what string, names []string, allowEmpty bool) error {
	seen := make(map[string]bool, len(names))
	for _, raw := range names {
		n := strings.TrimSpace(raw)
		if n == "" && !allowEmpty {
			return fmt.Errorf("firebase: empty %s", what)
		}
		if len(n) > 128 {
			return fmt.Errorf("firebase: %s %.20q… is longer than 128 bytes", what, n)
		}
		for _, r := range n {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
				r == '-' || r == '_' || r == '.' || r == ':'
			if !ok {
				return fmt.Errorf("firebase: %s %q contains %q", what, n, r)
			}
		}
		if seen[n] {
			return fmt.Errorf("firebase: %s %q is listed twice", what, n)
		}
		seen[n] = true
	}
	return nil
}

func checkCertsURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("firebase: certs_url: %w", err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !netcheck.LoopbackHost(u.Hostname()) {
			return fmt.Errorf("firebase: certs_url %q: plain http is allowed only to a loopback address", raw)
		}
	default:
		return fmt.Errorf("firebase: certs_url %q: scheme must be https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("firebase: certs_url %q has no host", raw)
	}
	return nil
}

// withDefaults returns a trimmed copy of o with the documented defaults.
func (o Options) withDefaults() Options {
	o.ProjectIDs = trimAll(o.ProjectIDs)
	o.Tenants = trimAll(o.Tenants)
	if len(o.Tenants) == 0 {
		o.Tenants = []string{""}
	}
	o.AllowedProviders = trimAll(o.AllowedProviders)
	if o.CertsURL == "" && o.CertsFile == "" {
		o.CertsURL = GoogleCertsURL
	}
	if o.Leeway == 0 {
		o.Leeway = DefaultLeeway
	}
	if o.RefetchInterval == 0 {
		o.RefetchInterval = DefaultRefetchInterval
	}
	if o.MaxStale == 0 {
		o.MaxStale = DefaultMaxStale
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: DefaultFetchTimeout}
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return o
}

func trimAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

func set(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}
