package custodian

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/internal/apierr"
)

// Errors returned by this package. Callers branch with errors.Is; every
// one is an *apierr.Error whose message never holds a share or a token.
// The Vault answer, when there is one, is the internal Cause.
var (
	// ErrVaultUnavailable: Vault is unreachable, sealed, overloaded, or did
	// not answer in time, or too many calls are already waiting for it.
	// 503 with Retry-After; nothing was stored.
	ErrVaultUnavailable = apierr.New(http.StatusServiceUnavailable, "vault_unavailable",
		"Vault is unreachable, sealed or too slow; retry later")
	// ErrVaultForbidden: Vault answered 403. Either the policy lacks the
	// capability, or the token was revoked or expired and cannot be
	// replaced (token auth). 502: the operator must act.
	ErrVaultForbidden = apierr.New(http.StatusBadGateway, "vault_forbidden",
		"Vault refused Keywarden's credentials or policy for this operation")
	// ErrVersionRetired: the ciphertext was made under a Transit key version
	// below the key's min_decryption_version. The message names the
	// version. 409: the data and the key's policy disagree.
	ErrVersionRetired = apierr.New(http.StatusConflict, "ciphertext_version_retired",
		"the share is wrapped under a Transit key version that the key no longer decrypts")
	// ErrCiphertextRejected: Vault could not open the ciphertext: it was
	// bound to another owner (derivation context) or is corrupt.
	ErrCiphertextRejected = apierr.New(http.StatusBadGateway, "ciphertext_rejected",
		"Vault could not open the stored share (bound to another owner, or damaged)")
	// ErrVaultError: any other refusal from Vault.
	ErrVaultError = apierr.New(http.StatusBadGateway, "vault_error",
		"Vault answered with an error")
	// ErrInvalidShare: a share that is empty or larger than [MaxShareSize].
	ErrInvalidShare = apierr.New(http.StatusBadRequest, "invalid_share",
		fmt.Sprintf("a share must be 1 to %d bytes", MaxShareSize))
	// ErrInvalidOwner: an empty owner or method, or one holding a NUL byte
	// or longer than 512 bytes.
	ErrInvalidOwner = apierr.New(http.StatusBadRequest, "invalid_owner",
		"the user id and method must be 1 to 512 bytes without NUL")
	// ErrClientKeyMismatch: with tpm-cert auth, the configured client
	// certificate was not issued to this TPM's client key (the store and
	// configuration were copied to another machine, or the certificate of
	// another node was installed). 502: the operator must issue a
	// certificate for this TPM's key.
	ErrClientKeyMismatch = apierr.New(http.StatusBadGateway, "vault_client_key_mismatch",
		"the Vault client certificate was not issued to this TPM's client key")
	// ErrKeyNotDerived: the configured Transit key exists but is not
	// derived, so it would ignore the owner binding. The client refuses it.
	ErrKeyNotDerived = apierr.New(http.StatusBadGateway, "vault_key_not_derived",
		"the configured Transit key is not derived (derived=true), so it cannot bind shares to users")
)

// MaxShareSize is the largest share Wrap accepts.
const MaxShareSize = 64 << 10

// Retry-After values.
const (
	retryAfterUnavailable = 5 * time.Second
	retryAfterSealed      = 30 * time.Second
)

var tooOldVersion = regexp.MustCompile(`^vault:v(\d+):`)

// classify turns a failure of one Vault call into the package's errors.
// retryable says whether another attempt could succeed.
func classify(err error) (e *apierr.Error, retryable bool) {
	if err == nil {
		return nil, false
	}
	if ae, ok := apierr.As(err); ok {
		return ae, false
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return classifyResponse(re)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return ErrVaultUnavailable.WithMessage("Vault did not answer in time; retry later").
			WithRetry(retryAfterUnavailable).Wrap(err), true
	case errors.Is(err, context.Canceled):
		return ErrVaultUnavailable.WithMessage("the Vault call was cancelled").
			WithRetry(retryAfterUnavailable).Wrap(err), false
	}
	if isTLSVerifyError(err) {
		// A configuration error, not an outage: retrying cannot help.
		return ErrVaultError.WithMessage("Vault's TLS certificate is not trusted (check ca_cert and the address)").Wrap(err), false
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) || isConnError(err) {
		return ErrVaultUnavailable.WithMessage("Vault is unreachable; retry later").
			WithRetry(retryAfterUnavailable).Wrap(err), true
	}
	return ErrVaultError.Wrap(err), false
}

func classifyResponse(re *api.ResponseError) (*apierr.Error, bool) {
	msg := strings.ToLower(strings.Join(re.Errors, "; "))
	switch {
	case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(msg, "sealed"):
		return ErrVaultUnavailable.WithMessage("Vault is sealed; retry later").
			WithRetry(retryAfterSealed).Wrap(re), true
	case re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500:
		return ErrVaultUnavailable.WithRetry(retryAfterUnavailable).Wrap(re), true
	case re.StatusCode == http.StatusPreconditionFailed: // performance standby not caught up
		return ErrVaultUnavailable.WithRetry(time.Second).Wrap(re), true
	case re.StatusCode == http.StatusForbidden:
		return ErrVaultForbidden.Wrap(re), false
	}
	if e := itemError(strings.Join(re.Errors, "; "), ""); e != nil {
		return e.Wrap(re), false
	}
	return ErrVaultError.Wrap(re), false
}

// itemError classifies the error text Transit gives for one batch item (or
// a single operation). ciphertext, when known, names the version. It
// returns nil for text it does not recognize.
func itemError(text, ciphertext string) *apierr.Error {
	lower := strings.ToLower(text)
	switch {
	case strings.Contains(lower, "disallowed by policy (too old)"):
		if v, err := CiphertextVersion(ciphertext); err == nil {
			return ErrVersionRetired.WithMessage(
				"the share is wrapped under Transit key version %d, below the key's min_decryption_version; "+
					"lower min_decryption_version, run the custodian rewrap job, then raise it again", v)
		}
		return ErrVersionRetired
	case strings.Contains(lower, "message authentication failed"),
		strings.Contains(lower, "invalid ciphertext"),
		strings.Contains(lower, "invalid input"):
		return ErrCiphertextRejected
	case strings.Contains(lower, "permission denied"):
		return ErrVaultForbidden
	case text != "":
		return ErrVaultError
	}
	return nil
}

// CiphertextVersion returns the Transit key version of a ciphertext
// ("vault:v<N>:…").
func CiphertextVersion(ciphertext string) (int, error) {
	m := tooOldVersion.FindStringSubmatch(ciphertext)
	if m == nil {
		return 0, errors.New("custodian: not a Transit ciphertext")
	}
	v, err := strconv.Atoi(m[1])
	if err != nil || v < 1 {
		return 0, errors.New("custodian: bad Transit ciphertext version")
	}
	return v, nil
}

func isConnError(err error) bool {
	s := err.Error()
	for _, m := range []string{"connection refused", "connection reset", "EOF", "no such host", "broken pipe", "server closed"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func isTLSVerifyError(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var rh tls.RecordHeaderError // plain HTTP answered an https:// address
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &rh)
}
