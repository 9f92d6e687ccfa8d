package passkey

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
)

// Defaults for the zero values of [Options].
const (
	DefaultCeremonyTTL             = 5 * time.Minute
	DefaultMaxCeremonies           = 10000
	DefaultMaxCeremoniesPerAddress = 16
	DefaultMaxCredentialsPerUser   = 16
	DefaultUserFailureBurst        = 5
	DefaultUserFailureInterval     = 30 * time.Second
	DefaultAddressFailureBurst     = 20
	DefaultAddressFailureInterval  = 5 * time.Second
	DefaultMaxTrackedLimits        = 100000
)

// ErrInvalidOptions is wrapped by every error of [Options.Validate].
var ErrInvalidOptions = errors.New("passkey: invalid options")

// Options configure the passkey [Service]. Zero values take the documented
// defaults; [Options.Validate] checks and never changes them.
type Options struct {
	// RelyingParties are the WebAuthn relying parties this appliance
	// serves; at least one. The first is the default: the native API uses
	// it, and the Portal adapter names one by its ID.
	RelyingParties []RelyingParty

	// UserVerification is "required" (the zero value), "preferred" or
	// "discouraged". Guards against a stolen unlocked device or a
	// security key without a PIN releasing a key: keep it required.
	UserVerification string

	// ResidentKey is "required" (the zero value, passkeys: needed for
	// discoverable login), "preferred" or "discouraged".
	ResidentKey string

	// CeremonyTTL is how long a begun ceremony may be finished, and how
	// long a finished authentication may authorize adding a passkey.
	// Zero means DefaultCeremonyTTL (5 minutes).
	CeremonyTTL time.Duration

	// MaxCeremonies bounds the ceremonies held in memory (a flood of
	// begin calls cannot exhaust memory); zero means DefaultMaxCeremonies.
	// MaxCeremoniesPerAddress bounds those begun from one client address
	// (one client cannot take them all; IPv6 addresses count by /64, see
	// ratelimit.AddrKey); zero means DefaultMaxCeremoniesPerAddress. One
	// address never gets more than half of MaxCeremonies, and one network
	// (IPv6 /48, IPv4 /24) never more than an eighth of it (or one
	// address's share, when that is larger).
	MaxCeremonies           int
	MaxCeremoniesPerAddress int

	// MaxCredentialsPerUser bounds the passkeys of one user; zero means
	// DefaultMaxCredentialsPerUser.
	MaxCredentialsPerUser int

	// Failed assertions are rate-limited with token buckets (decisions/07):
	// per client address (IPv6 by /64), every failed finish counts; per
	// user, only failures attributable to a holder of the user's passkey
	// count: a sign counter going backwards on a valid signature (a cloned
	// authenticator). A bad signature, origin, RP ID hash or challenge can
	// come from anyone who read the credential ids begin lists, so it
	// spends only the address's budget and the (single-use) ceremony: a
	// stranger cannot lock a user out. A bucket holds Burst failures and
	// regains one per Interval. Zero values mean the Default… constants; a
	// negative burst disables that limit.
	UserFailureBurst       int
	UserFailureInterval    time.Duration
	AddressFailureBurst    int
	AddressFailureInterval time.Duration

	// MaxTrackedLimits bounds the number of users and addresses the rate
	// limiters remember; zero means DefaultMaxTrackedLimits.
	MaxTrackedLimits int

	// AllowReset enables POST /v1/admin/users/{userId}/passkeys/reset
	// (decisions/05). Off by default: the admin key must not be able to
	// take over a user's key. When on, a reset revokes every passkey of
	// the user AND destroys the stored key, audited; it never re-binds the
	// old key to a new passkey.
	AllowReset bool
}

// RelyingParty is one WebAuthn relying party.
type RelyingParty struct {
	// ID is the RP ID: a registrable domain such as "example.com" or
	// "localhost" (no scheme, no port).
	ID string
	// Name is shown by authenticators; empty means ID.
	Name string
	// Origins are the web origins allowed to use the RP, such as
	// "https://app.example.com" (scheme, host, optional port; no path).
	// Their host must be ID or a subdomain of it; http is allowed only
	// for localhost. An Android origin may also be given directly as
	// "android:apk-key-hash:<base64url SHA-256>" (AndroidApps is the
	// friendlier form, and also feeds assetlinks.json).
	Origins []string
	// AndroidApps are Android apps allowed to use the RP; each of their
	// signing-certificate fingerprints becomes an allowed origin
	// "android:apk-key-hash:<base64url SHA-256>", and the apps are listed
	// in /.well-known/assetlinks.json.
	AndroidApps []AndroidApp
	// AppleAppIDs are "<team id>.<bundle id>" of iOS apps, listed in
	// /.well-known/apple-app-site-association (webcredentials).
	AppleAppIDs []string
}

// AndroidApp is an Android app and its signing certificates.
type AndroidApp struct {
	// Package is the application id, such as "com.example.wallet".
	Package string
	// Fingerprints are SHA-256 fingerprints of the app's signing
	// certificates (debug, upload, Play App Signing: list them all), as
	// colon-separated hex ("AB:CD:…", as keytool prints them), plain hex,
	// or base64url.
	Fingerprints []string
}

// ParseFingerprint reads a SHA-256 certificate fingerprint written as
// colon-hex, plain hex, or base64 / base64url (padded or not).
func ParseFingerprint(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if h := strings.ReplaceAll(s, ":", ""); len(h) == 64 {
		if b, err := hex.DecodeString(h); err == nil {
			return b, nil
		}
	}
	if !strings.Contains(s, ":") {
		for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
			if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
				return b, nil
			}
		}
	}
	return nil, fmt.Errorf("%q is not a SHA-256 fingerprint (32 bytes as colon-hex, hex or base64url)", s)
}

// AndroidOrigin is the WebAuthn origin an Android app signed with the
// certificate of this SHA-256 fingerprint presents.
func AndroidOrigin(fingerprint []byte) string {
	return "android:apk-key-hash:" + base64.RawURLEncoding.EncodeToString(fingerprint)
}

// colonHex formats a fingerprint as assetlinks.json expects it.
func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02X", c)
	}
	return strings.Join(parts, ":")
}

// Validate checks o without changing it. Each error names the field.
func (o Options) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
	}
	if len(o.RelyingParties) == 0 {
		return bad("relyingParties", "at least one relying party is required")
	}
	seen := map[string]bool{}
	for i, rp := range o.RelyingParties {
		f := fmt.Sprintf("relyingParties[%d]", i)
		if err := validRPID(rp.ID); err != nil {
			return bad(f+".id", "%v", err)
		}
		if seen[rp.ID] {
			return bad(f+".id", "%q is listed twice", rp.ID)
		}
		seen[rp.ID] = true
		if len(rp.Name) > 128 {
			return bad(f+".name", "longer than 128 characters")
		}
		if len(rp.Origins) == 0 && len(rp.AndroidApps) == 0 {
			return bad(f+".origins", "at least one web origin or Android app is required")
		}
		for j, origin := range rp.Origins {
			if err := validOrigin(origin, rp.ID); err != nil {
				return bad(fmt.Sprintf("%s.origins[%d]", f, j), "%v", err)
			}
		}
		for j, app := range rp.AndroidApps {
			af := fmt.Sprintf("%s.androidApps[%d]", f, j)
			if !validPackage(app.Package) {
				return bad(af+".package", "%q is not an Android application id", app.Package)
			}
			if len(app.Fingerprints) == 0 {
				return bad(af+".fingerprints", "at least one SHA-256 signing-certificate fingerprint is required")
			}
			for k, fp := range app.Fingerprints {
				if _, err := ParseFingerprint(fp); err != nil {
					return bad(fmt.Sprintf("%s.fingerprints[%d]", af, k), "%v", err)
				}
			}
		}
		for j, id := range rp.AppleAppIDs {
			if t, b, ok := strings.Cut(id, "."); !ok || len(t) != 10 || b == "" || strings.ContainsAny(id, " /\"") {
				return bad(fmt.Sprintf("%s.appleAppIds[%d]", f, j), "%q is not <10-character team id>.<bundle id>", id)
			}
		}
	}
	switch o.UserVerification {
	case "", "required", "preferred", "discouraged":
	default:
		return bad("userVerification", "%q is not required, preferred or discouraged", o.UserVerification)
	}
	switch o.ResidentKey {
	case "", "required", "preferred", "discouraged":
	default:
		return bad("residentKey", "%q is not required, preferred or discouraged", o.ResidentKey)
	}
	if o.CeremonyTTL < 0 || (o.CeremonyTTL > 0 && (o.CeremonyTTL < 10*time.Second || o.CeremonyTTL > time.Hour)) {
		return bad("ceremonyTTL", "must be 0 (default %s) or between 10s and 1h", DefaultCeremonyTTL)
	}
	for f, n := range map[string]int{"maxCeremonies": o.MaxCeremonies, "maxCeremoniesPerAddress": o.MaxCeremoniesPerAddress,
		"maxCredentialsPerUser": o.MaxCredentialsPerUser, "maxTrackedLimits": o.MaxTrackedLimits} {
		if n < 0 {
			return bad(f, "must not be negative")
		}
	}
	if o.MaxCeremonies > 0 && o.MaxCeremoniesPerAddress > o.MaxCeremonies {
		return bad("maxCeremoniesPerAddress", "larger than maxCeremonies")
	}
	if o.UserFailureInterval < 0 || o.AddressFailureInterval < 0 {
		return bad("failureInterval", "must not be negative")
	}
	return nil
}

func validRPID(id string) error {
	if id == "" {
		return errors.New("required")
	}
	if id != strings.ToLower(id) || strings.ContainsAny(id, ":/ ") || strings.HasSuffix(id, ".") {
		return fmt.Errorf("%q must be a lower-case domain without scheme, port or path", id)
	}
	if net.ParseIP(id) != nil {
		return fmt.Errorf("%q is an IP address; WebAuthn needs a domain", id)
	}
	return protocol.ValidateRPID(id)
}

func validOrigin(origin, rpID string) error {
	if h, ok := strings.CutPrefix(origin, "android:apk-key-hash:"); ok {
		if b, err := base64.RawURLEncoding.DecodeString(h); err != nil || len(b) != 32 {
			return fmt.Errorf("%q: the hash must be the base64url (unpadded) SHA-256 of the signing certificate", origin)
		}
		return nil
	}
	if strings.HasPrefix(origin, "android:") {
		return fmt.Errorf("%q: the only Android origin form is android:apk-key-hash:<base64url SHA-256>", origin)
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin (scheme://host[:port])", origin)
	}
	host := u.Hostname()
	switch u.Scheme {
	case "https":
	case "http":
		if host != "localhost" && !strings.HasSuffix(host, ".localhost") {
			return fmt.Errorf("%q: plain http is allowed only for localhost", origin)
		}
	default:
		return fmt.Errorf("%q: the scheme must be https", origin)
	}
	if host != rpID && !strings.HasSuffix(host, "."+rpID) {
		return fmt.Errorf("%q is not on the RP ID %q or a subdomain of it", origin, rpID)
	}
	return nil
}

func validPackage(p string) bool {
	if p == "" || len(p) > 255 || !strings.Contains(p, ".") {
		return false
	}
	for _, seg := range strings.Split(p, ".") {
		if seg == "" {
			return false
		}
		for i, r := range seg {
			if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || (i > 0 && r >= '0' && r <= '9')) {
				return false
			}
		}
	}
	return true
}

// withDefaults fills the zero values.
func (o Options) withDefaults() Options {
	if o.UserVerification == "" {
		o.UserVerification = "required"
	}
	if o.ResidentKey == "" {
		o.ResidentKey = "required"
	}
	if o.CeremonyTTL == 0 {
		o.CeremonyTTL = DefaultCeremonyTTL
	}
	if o.MaxCeremonies == 0 {
		o.MaxCeremonies = DefaultMaxCeremonies
	}
	if o.MaxCeremoniesPerAddress == 0 {
		o.MaxCeremoniesPerAddress = DefaultMaxCeremoniesPerAddress
	}
	if o.MaxCredentialsPerUser == 0 {
		o.MaxCredentialsPerUser = DefaultMaxCredentialsPerUser
	}
	if o.UserFailureBurst == 0 {
		o.UserFailureBurst = DefaultUserFailureBurst
	}
	if o.UserFailureInterval == 0 {
		o.UserFailureInterval = DefaultUserFailureInterval
	}
	if o.AddressFailureBurst == 0 {
		o.AddressFailureBurst = DefaultAddressFailureBurst
	}
	if o.AddressFailureInterval == 0 {
		o.AddressFailureInterval = DefaultAddressFailureInterval
	}
	if o.MaxTrackedLimits == 0 {
		o.MaxTrackedLimits = DefaultMaxTrackedLimits
	}
	return o
}

// origins lists the RP's allowed origins: its web origins and one
// android:apk-key-hash origin per fingerprint. Call after Validate.
func (rp RelyingParty) origins() []string {
	var out []string
	for _, o := range rp.Origins {
		out = append(out, strings.TrimSuffix(o, "/"))
	}
	for _, app := range rp.AndroidApps {
		for _, f := range app.Fingerprints {
			fp, _ := ParseFingerprint(f)
			out = append(out, AndroidOrigin(fp))
		}
	}
	return out
}
