package portal

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/netcheck"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/server/passkey"
)

// Defaults for the zero values of [Options].
const (
	DefaultAPIURL               = "https://api.portalhq.io"
	DefaultIdentityTTL          = 5 * time.Minute
	DefaultFailureTTL           = 30 * time.Second
	DefaultStaleIfError         = time.Hour
	DefaultMaxIdentities        = 10000
	DefaultMaxConcurrentLookups = 8
	DefaultLookupTimeout        = 3 * time.Second
	DefaultMissBurst            = 20
	DefaultMissInterval         = 3 * time.Second
	DefaultMaxTrackedAddresses  = 10000
	DefaultWebhookTimeout       = 8 * time.Second
	DefaultDisplayName          = "Wallet backup"

	// MaxKeyBytes bounds the SDK's encryption key (kept as text, byte for
	// byte; decisions/02). Today it is a 64-character hex string.
	MaxKeyBytes = 1024
	// MaxCredentialBytes bounds a Portal client credential (API key or
	// client session token) before any look-up.
	MaxCredentialBytes = 4096
	// MaxClientIDBytes bounds a client id (from Portal's answer or a
	// webhook body).
	MaxClientIDBytes = 128
	// MaxBackupMethodBytes bounds a webhook's backupMethod.
	MaxBackupMethodBytes = 128
	// MaxWebhookTimeout keeps webhook answers inside Portal's 10 s wait.
	MaxWebhookTimeout = 9 * time.Second
)

// Route body limits (the server's global limits.max_body_bytes applies
// first; these are tighter where the route carries little).
const (
	maxSmallBody   = 16 << 10                            // TBS and begin-* bodies
	maxFinishBody  = 4*passkey.MaxCredentialJSON + 8<<10 // a credential as an escaped JSON string, and a key
	maxWebhookBody = 256 << 10                           // a share (custodian caps it at 64 KiB)
)

// ErrInvalidOptions is wrapped by every error of [Options.Validate].
var ErrInvalidOptions = errors.New("portal: invalid options")

// Options configure the [Adapter]. Zero values take the documented
// defaults; [Options.Validate] checks and never changes them.
type Options struct {
	// APIURL is Portal's API base URL: a client credential is resolved by
	// GET <APIURL>/api/v3/clients/me. "" means DefaultAPIURL. Tests and
	// air-gapped sites point it elsewhere. https, or http to loopback.
	APIURL string

	// CustodianID is the Portal custodian (the customer's organisation)
	// whose clients are accepted. Required. Guards against clients of
	// another Portal customer using this appliance: their credential is
	// valid at Portal, but they get 403.
	CustodianID string

	// WebhookSecrets are compared, in constant time, with the
	// X-Webhook-Secret header of Portal's custodian webhooks. Two may be
	// active while a secret is rotated. Empty: the webhook routes answer
	// 503 webhook_not_configured (never accepting an unauthenticated call).
	WebhookSecrets []secret.String

	// WebhookAllowedIPs, when not empty, are the addresses or CIDRs Portal's
	// webhooks may come from (the client address as the server's
	// trusted_proxies setting determines it). Others get 403 before the
	// secret is looked at.
	WebhookAllowedIPs []string

	// IdentityTTL is how long a resolved client credential is trusted
	// without asking Portal again; 0 means DefaultIdentityTTL (5 min).
	// Bounds how long a credential revoked at Portal keeps working here.
	IdentityTTL time.Duration
	// FailureTTL is how long a credential Portal refused (401/403) or a
	// client of another custodian is remembered as refused; 0 means
	// DefaultFailureTTL (30 s). Guards Portal against a flood of one bad
	// credential. Only those answers are cached as failures (decisions/22).
	FailureTTL time.Duration
	// StaleIfError is how long past IdentityTTL a resolved credential is
	// still honoured while Portal's API is unreachable or failing (5xx,
	// 429, timeout); 0 means DefaultStaleIfError (1 h), negative disables.
	// Keeps releases working through a Portal outage; credentials never
	// seen before get 503 with Retry-After meanwhile.
	StaleIfError time.Duration
	// MaxIdentities bounds the cache (least recently used entries are
	// dropped first); 0 means DefaultMaxIdentities.
	MaxIdentities int
	// MaxConcurrentLookups caps calls to Portal's API in flight, across all
	// clients; 0 means DefaultMaxConcurrentLookups. A look-up that cannot
	// start within half of LookupTimeout is a 503.
	MaxConcurrentLookups int
	// LookupTimeout bounds one call to Portal's API (a caller waits at
	// most 1.5 times as long: half for a slot, then the call); 0 means
	// DefaultLookupTimeout (3 s).
	LookupTimeout time.Duration
	// MissBurst and MissInterval limit, per client address, look-ups of
	// credentials not in the cache: MissBurst at once, then one per
	// MissInterval (429 with Retry-After beyond). Guards Portal's API (and
	// this appliance's standing with it) against a client cycling through
	// made-up credentials. Zero values mean DefaultMissBurst and
	// DefaultMissInterval; a negative burst disables the limit.
	MissBurst    int
	MissInterval time.Duration
	// MaxTrackedAddresses bounds the per-address miss limiter's memory;
	// 0 means DefaultMaxTrackedAddresses.
	MaxTrackedAddresses int

	// AllowClientMismatch lets a Portal client other than the one that
	// first stored a Firebase user's key read and replace it
	// (portal.client_mismatch: allow). Off by default: another client gets
	// 403 client_mismatch, so one Portal client (one app) cannot read the
	// keys another stored for the same Firebase user.
	AllowClientMismatch bool

	// OverwriteMaxAuthAge, when > 0, refuses to replace a stored Firebase
	// key unless the token's auth_time is at most this old (409
	// key_exists), as on the native route (decisions/03).
	OverwriteMaxAuthAge time.Duration

	// DisplayName is the user display name in passkey creation options
	// (shown by the authenticator); "" means DefaultDisplayName.
	DisplayName string

	// WebhookTimeout bounds a webhook's work (Vault, store, audit) so the
	// answer comes well inside Portal's 10 s; 0 means
	// DefaultWebhookTimeout (8 s), at most MaxWebhookTimeout.
	WebhookTimeout time.Duration

	// HTTPClient calls Portal's API; nil means a client of this package
	// (LookupTimeout, no redirects followed, so a credential is never
	// sent to another host). A given client's redirects are refused too.
	HTTPClient *http.Client
}

// Deps are the services the adapter translates onto. Nil services turn
// their routes into 503.
type Deps struct {
	// Passkey is the passkey service (/passkeys/*). Portal users are
	// Subject{Owner: "portal:<clientId>"} on one of its relying parties.
	Passkey *passkey.Service
	// Shares keeps custodian backup shares (custodian.Service).
	Shares ShareStore
	// Logger; nil means slog.Default(). Bodies, keys, shares and
	// credentials are never logged.
	Logger *slog.Logger
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
	// Keys is the keys service the TBS routes store and release through.
	// Required.
	Keys *keys.Service
	// Firebase verifies the TBS routes' Firebase ID tokens and the block
	// list (the native Firebase handler). Required.
	Firebase *firebase.HTTP
	// Audit is the audit log (webhooks, refusals, the identity flush).
	// Required.
	Audit keys.Auditor
	// Custody, when set, gets the client isolation rule turned on unless
	// portal.client_mismatch is allow.
	Custody *enclave.Custody
}

// Validate checks o without changing it. Each error names the field.
func (o Options) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
	}
	if o.APIURL != "" {
		u, err := url.Parse(o.APIURL)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return bad("apiURL", "%q is not an http(s) base URL", o.APIURL)
		}
		switch u.Scheme {
		case "https":
		case "http":
			if !isLoopbackHost(u.Hostname()) {
				return bad("apiURL", "%q: plain http is allowed only to a loopback address (the credential would travel in the clear)", o.APIURL)
			}
		default:
			return bad("apiURL", "%q: the scheme must be https", o.APIURL)
		}
	}
	if strings.TrimSpace(o.CustodianID) == "" {
		return bad("custodianID", "required: the Portal custodian whose clients this appliance serves")
	}
	if o.CustodianID != strings.TrimSpace(o.CustodianID) || len(o.CustodianID) > 256 {
		return bad("custodianID", "must be at most 256 characters without surrounding white space")
	}
	for i, s := range o.WebhookSecrets {
		if len(s.Reveal()) < 16 {
			return bad(fmt.Sprintf("webhookSecrets[%d]", i), "shorter than 16 characters")
		}
	}
	for i, p := range o.WebhookAllowedIPs {
		if _, err := parseNet(p); err != nil {
			return bad(fmt.Sprintf("webhookAllowedIPs[%d]", i), "%q is not an IP address or CIDR", p)
		}
	}
	for f, d := range map[string]time.Duration{"identityTTL": o.IdentityTTL, "failureTTL": o.FailureTTL,
		"lookupTimeout": o.LookupTimeout, "missInterval": o.MissInterval, "webhookTimeout": o.WebhookTimeout, "overwriteMaxAuthAge": o.OverwriteMaxAuthAge} {
		if d < 0 {
			return bad(f, "must not be negative")
		}
	}
	if o.IdentityTTL > 24*time.Hour {
		return bad("identityTTL", "at most 24h (a credential revoked at Portal keeps working this long)")
	}
	if o.WebhookTimeout > MaxWebhookTimeout {
		return bad("webhookTimeout", "at most %s: Portal waits 10 s", MaxWebhookTimeout)
	}
	for f, n := range map[string]int{"maxIdentities": o.MaxIdentities, "maxConcurrentLookups": o.MaxConcurrentLookups, "maxTrackedAddresses": o.MaxTrackedAddresses} {
		if n < 0 {
			return bad(f, "must not be negative")
		}
	}
	if len(o.DisplayName) > 64 {
		return bad("displayName", "longer than 64 characters")
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.APIURL == "" {
		o.APIURL = DefaultAPIURL
	}
	o.APIURL = strings.TrimRight(o.APIURL, "/")
	if o.IdentityTTL == 0 {
		o.IdentityTTL = DefaultIdentityTTL
	}
	if o.FailureTTL == 0 {
		o.FailureTTL = DefaultFailureTTL
	}
	switch {
	case o.StaleIfError == 0:
		o.StaleIfError = DefaultStaleIfError
	case o.StaleIfError < 0:
		o.StaleIfError = 0
	}
	if o.MaxIdentities == 0 {
		o.MaxIdentities = DefaultMaxIdentities
	}
	if o.MaxConcurrentLookups == 0 {
		o.MaxConcurrentLookups = DefaultMaxConcurrentLookups
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = DefaultLookupTimeout
	}
	if o.MissBurst == 0 {
		o.MissBurst = DefaultMissBurst
	}
	if o.MissInterval == 0 {
		o.MissInterval = DefaultMissInterval
	}
	if o.MaxTrackedAddresses == 0 {
		o.MaxTrackedAddresses = DefaultMaxTrackedAddresses
	}
	if o.WebhookTimeout == 0 {
		o.WebhookTimeout = DefaultWebhookTimeout
	}
	if o.DisplayName == "" {
		o.DisplayName = DefaultDisplayName
	}
	return o
}

func isLoopbackHost(h string) bool { return netcheck.LoopbackHost(h) }

// parseNet reads an address or a CIDR as a network.
func parseNet(s string) (*net.IPNet, error) {
	s = strings.TrimSpace(s)
	if ip := net.ParseIP(s); ip != nil {
		bits := 128
		if ip4 := ip.To4(); ip4 != nil {
			ip, bits = ip4, 32
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
	}
	_, n, err := net.ParseCIDR(s)
	return n, err
}
