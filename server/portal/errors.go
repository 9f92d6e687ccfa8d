package portal

import (
	"fmt"
	"net/http"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/keys"
)

// Errors a client sees. Each has a stable code; none carries a key, a share
// or a credential. Every problem with who the caller is (Firebase token or
// Portal credential) is 401, so the SDK refreshes its token and retries
// once; a caller who is known but not allowed gets 403.
var (
	// ErrCredentialMissing: no Authorization: Bearer header.
	ErrCredentialMissing = apierr.New(http.StatusUnauthorized, "portal_credential_missing",
		"send the Portal client API key or client session token as Authorization: Bearer <credential>")
	// ErrCredentialInvalid: the credential cannot be a Portal credential
	// (empty, too long, or characters a token never has). Checked before
	// any look-up.
	ErrCredentialInvalid = apierr.New(http.StatusUnauthorized, "portal_credential_invalid",
		"the Portal client credential is malformed")
	// ErrCredentialUnknown: Portal does not know the credential (it
	// answered 401, 403 or 404).
	ErrCredentialUnknown = apierr.New(http.StatusUnauthorized, "portal_credential_unknown",
		"Portal does not accept this client credential")
	// ErrOtherCustodian: the client belongs to another Portal custodian than
	// the one this appliance serves.
	ErrOtherCustodian = apierr.New(http.StatusForbidden, "portal_custodian_mismatch",
		"this Portal client belongs to another custodian than the one this appliance serves")
	// ErrClientMismatch: the Firebase user's key was stored by another
	// Portal client (portal.client_mismatch: refuse).
	ErrClientMismatch = apierr.New(http.StatusForbidden, "client_mismatch",
		"this user's key was stored by another Portal client")
	// ErrPortalUnavailable: Portal's API did not answer usefully (down,
	// 5xx, 429, timeout, or too many look-ups in flight) and the
	// credential is not in the cache. 503 with Retry-After.
	ErrPortalUnavailable = apierr.New(http.StatusServiceUnavailable, "portal_unavailable",
		"Portal's API could not confirm the client credential; retry shortly").WithRetry(5 * time.Second)
	// ErrPortalBadAnswer: Portal answered 200 with something that is not a
	// client of the expected shape.
	ErrPortalBadAnswer = apierr.New(http.StatusBadGateway, "portal_bad_answer",
		"Portal's API answered with an unexpected client description")
	// ErrLookupLimited: too many unknown credentials from this address.
	ErrLookupLimited = apierr.ErrRateLimited.WithMessage("too many look-ups of unknown credentials from this address; retry later")

	// ErrInvalidKey: encryptionKey is missing, empty, not UTF-8 or longer
	// than MaxKeyBytes.
	ErrInvalidKey = apierr.New(http.StatusBadRequest, "invalid_key",
		fmt.Sprintf("encryptionKey must be a string of 1 to %d bytes", MaxKeyBytes))
	// ErrKeyFormat: the stored key was stored as bytes (the native API),
	// not as the SDK's text; it is never converted (decisions/02).
	ErrKeyFormat = apierr.New(http.StatusConflict, "key_format_mismatch",
		"the stored key was stored through the native API as bytes, not by Portal's SDK; it is not converted")
	// ErrRecentSignIn: replacing the key needs a recent sign-in.
	ErrRecentSignIn = keys.ErrRecentSignIn

	// ErrRelyingParty: relyingParty is missing or not a configured RP ID.
	ErrRelyingParty = apierr.New(http.StatusBadRequest, "unknown_relying_party",
		"relyingParty must be the RP ID configured on this appliance (passkey.rp_id)")
	// ErrSessionInvalid: the sessionId was not issued by this appliance to
	// this client for this kind of ceremony.
	ErrSessionInvalid = apierr.New(http.StatusBadRequest, "session_invalid",
		"the sessionId is unknown, was used already, expired, or was begun by another client; begin again")
	// ErrCredentialRequired: attestation or assertion is missing.
	ErrCredentialRequired = apierr.New(http.StatusBadRequest, "invalid_credential",
		"attestation (finish-registration) or assertion (finish-login) must be the credential as a JSON string")
	// ErrPasskeysOff: no passkey service is configured.
	ErrPasskeysOff = apierr.New(http.StatusServiceUnavailable, "passkeys_not_configured",
		"passkeys are not configured on this appliance (passkey.rp_id)")

	// ErrWebhookOff: no webhook secret or no share store is configured.
	ErrWebhookOff = apierr.New(http.StatusServiceUnavailable, "webhook_not_configured",
		"Portal's custodian webhooks are not configured on this appliance (portal.webhook_secrets and vault)")
	// ErrWebhookSecret: X-Webhook-Secret is missing or matches no
	// configured secret.
	ErrWebhookSecret = apierr.New(http.StatusUnauthorized, "webhook_secret",
		"X-Webhook-Secret is missing or wrong")
	// ErrWebhookSource: the caller's address is not in
	// portal.webhook_allowed_ips.
	ErrWebhookSource = apierr.New(http.StatusForbidden, "webhook_source_refused",
		"this address may not call the webhooks (portal.webhook_allowed_ips)")
	// ErrClientID: clientId is missing or malformed.
	ErrClientID = apierr.New(http.StatusBadRequest, "invalid_client_id",
		fmt.Sprintf("clientId is required: 1 to %d printable ASCII characters", MaxClientIDBytes))
	// ErrBackupMethod: backupMethod is missing or malformed.
	ErrBackupMethod = apierr.New(http.StatusBadRequest, "invalid_backup_method",
		fmt.Sprintf("backupMethod is required: 1 to %d bytes of UTF-8 without NUL", MaxBackupMethodBytes))
	// ErrShare: share is missing or empty.
	ErrShare = apierr.New(http.StatusBadRequest, "invalid_share",
		"share is required: the custodian backup share as a string")
)
