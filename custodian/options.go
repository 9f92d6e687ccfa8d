package custodian

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/keywarden/keywarden/internal/netcheck"
	"github.com/keywarden/keywarden/internal/secret"
)

// AuthMethod says how the client logs in to Vault.
type AuthMethod string

// Auth methods.
const (
	// AuthToken uses [Options.Token] as given. It is renewed while Vault
	// allows; once it expires or is revoked nothing can replace it, and
	// calls fail with [ErrVaultForbidden] until an operator configures a new one.
	AuthToken AuthMethod = "token"
	// AuthAppRole logs in with [AppRoleAuth] and logs in again when the
	// token cannot be renewed any more, or Vault refuses it.
	AuthAppRole AuthMethod = "approle"
	// AuthCert logs in with the TLS client certificate of [CertAuth]; the
	// same re-login rules as AppRole apply.
	AuthCert AuthMethod = "cert"
	// AuthTPMCert logs in with the TLS client certificate of [TPMCertAuth],
	// whose private key is a [crypto.Signer] that never leaves the TPM:
	// the configuration then holds no Vault secret at all, and a copy of
	// it (with the store) on another machine cannot log in. The same
	// re-login rules as AppRole apply.
	AuthTPMCert AuthMethod = "tpm-cert"
)

// AppRoleAuth is an AppRole login.
type AppRoleAuth struct {
	RoleID   string
	SecretID secret.String
	Mount    string // auth mount path; "" means "approle"
}

// CertAuth is a TLS certificate login. The same certificate is presented
// on every connection to Vault.
type CertAuth struct {
	CertFile string // PEM client certificate
	KeyFile  string // PEM private key
	Role     string // optional: the cert role to log in as ("" lets Vault pick)
	Mount    string // auth mount path; "" means "cert"
}

// TPMCertAuth is a TLS certificate login with a TPM-resident key.
type TPMCertAuth struct {
	CertFile string        // PEM client certificate (with its chain), issued to Key
	Key      crypto.Signer // the TPM client key (an ECDSA P-256 signer)
	Role     string        // optional: the cert role to log in as ("" lets Vault pick)
	Mount    string        // auth mount path; "" means "cert"
}

// Options configure a [Client]. Zero values mean the documented default;
// [Options.Validate] checks them and never changes them.
type Options struct {
	// Addr is Vault's address, e.g. https://vault.internal:8200. Required;
	// plain http only to a loopback address.
	Addr string
	// CACert is a PEM file of CAs that verify Vault's TLS certificate
	// ("" means the system roots). No option disables verification: a
	// man in the middle would see every share.
	CACert string
	// Namespace is the Vault Enterprise namespace ("" means none).
	Namespace string

	// Auth picks the login; "" means AuthToken.
	Auth    AuthMethod
	Token   secret.String // for AuthToken
	AppRole AppRoleAuth   // for AuthAppRole
	Cert    CertAuth      // for AuthCert
	TPMCert TPMCertAuth   // for AuthTPMCert

	// TransitMount is the Transit engine's mount path; "" means "transit".
	TransitMount string
	// KeyName is the Transit key; "" means "keywarden-custodian". The key
	// must be derived (derived=true): each share is bound to its owner by
	// the derivation context, so a ciphertext copied to another owner's
	// record does not open. The client creates it so when it is missing and
	// refuses an existing key that is not derived.
	KeyName string

	// Timeout bounds each HTTP call to Vault; 0 means 5 s. A hung Vault
	// therefore costs at most Timeout per attempt.
	Timeout time.Duration
	// MaxRetries is how many times a retryable failure (network error,
	// 5xx, sealed, 429) is retried with exponential backoff and jitter,
	// within the caller's context; 0 means 2, a negative value means none.
	MaxRetries int
	// MaxConcurrent caps Vault calls in flight, so a slow Vault cannot pile
	// up goroutines and connections; 0 means 32. A call that cannot get a
	// slot within its context (or Timeout) fails with [ErrVaultUnavailable].
	MaxConcurrent int
	// BatchSize caps the items sent to Vault in one batch_input; 0 means 128.
	BatchSize int

	// Logger receives state changes (login, renewal failures); nil means
	// slog.Default(). No secret is ever logged.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultTransitMount  = "transit"
	DefaultKeyName       = "keywarden-custodian"
	DefaultTimeout       = 5 * time.Second
	DefaultMaxRetries    = 2
	DefaultMaxConcurrent = 32
	DefaultBatchSize     = 128
)

var pathSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]*$`)

// Validate reports what is wrong with o, naming the field.
func (o Options) Validate() error {
	var errs []error
	if o.Addr == "" {
		errs = append(errs, errors.New("addr: required"))
	} else if err := netcheck.ServiceURL(o.Addr); err != nil {
		// The token and every share cross this connection: plain http
		// only to a Vault on this host.
		errs = append(errs, fmt.Errorf("addr: %w", err))
	}
	switch o.Auth {
	case "", AuthToken:
		if o.Token.IsZero() {
			errs = append(errs, errors.New("token: required for token auth"))
		}
	case AuthAppRole:
		if o.AppRole.RoleID == "" {
			errs = append(errs, errors.New("approle.role_id: required for approle auth"))
		}
		if o.AppRole.SecretID.IsZero() {
			errs = append(errs, errors.New("approle.secret_id: required for approle auth"))
		}
		if o.AppRole.Mount != "" && !pathSegment.MatchString(o.AppRole.Mount) {
			errs = append(errs, fmt.Errorf("approle.mount: %q is not a mount path", o.AppRole.Mount))
		}
	case AuthCert:
		if o.Cert.CertFile == "" || o.Cert.KeyFile == "" {
			errs = append(errs, errors.New("cert: cert_file and key_file are required for cert auth"))
		}
		if o.Cert.Mount != "" && !pathSegment.MatchString(o.Cert.Mount) {
			errs = append(errs, fmt.Errorf("cert.mount: %q is not a mount path", o.Cert.Mount))
		}
	case AuthTPMCert:
		if o.TPMCert.CertFile == "" {
			errs = append(errs, errors.New("tls_cert_file: required for tpm-cert auth"))
		}
		if o.TPMCert.Mount != "" && !pathSegment.MatchString(o.TPMCert.Mount) {
			errs = append(errs, fmt.Errorf("cert.mount: %q is not a mount path", o.TPMCert.Mount))
		}
		// The point of tpm-cert is that nothing copyable logs in.
		if !o.Token.IsZero() || !o.AppRole.SecretID.IsZero() || o.Cert.KeyFile != "" {
			errs = append(errs, errors.New("token: tpm-cert auth takes no token, secret_id or key_file (the TPM key is the only credential)"))
		}
	default:
		errs = append(errs, fmt.Errorf("auth: %q is not token, approle, cert or tpm-cert", o.Auth))
	}
	if o.TransitMount != "" && !pathSegment.MatchString(o.TransitMount) {
		errs = append(errs, fmt.Errorf("transit_mount: %q is not a mount path", o.TransitMount))
	}
	if o.KeyName != "" && !keyName.MatchString(o.KeyName) {
		errs = append(errs, fmt.Errorf("key_name: %q is not a Transit key name", o.KeyName))
	}
	if o.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if o.MaxRetries > 10 {
		errs = append(errs, errors.New("max_retries: at most 10"))
	}
	if o.MaxConcurrent < 0 {
		errs = append(errs, errors.New("max_concurrent: must not be negative"))
	}
	if o.BatchSize < 0 || o.BatchSize > 10000 {
		errs = append(errs, errors.New("batch_size: between 0 and 10000"))
	}
	return errors.Join(errs...)
}

var keyName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// withDefaults returns o with every zero value replaced by its default.
func (o Options) withDefaults() Options {
	if o.Auth == "" {
		o.Auth = AuthToken
	}
	if o.AppRole.Mount == "" {
		o.AppRole.Mount = "approle"
	}
	if o.Cert.Mount == "" {
		o.Cert.Mount = "cert"
	}
	if o.TPMCert.Mount == "" {
		o.TPMCert.Mount = "cert"
	}
	if o.TransitMount == "" {
		o.TransitMount = DefaultTransitMount
	}
	if o.KeyName == "" {
		o.KeyName = DefaultKeyName
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}
