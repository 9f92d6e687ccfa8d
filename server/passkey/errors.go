package passkey

import (
	"net/http"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
)

// Errors a client sees. Each has a stable code; none ever carries a key.
// Verification failures are 401 so that a client can tell "this assertion
// does not prove anything" from "this request is malformed" (400).
var (
	// Requests.
	ErrInvalidCredential = apierr.New(http.StatusBadRequest, "invalid_credential", "the credential is not a well-formed WebAuthn response (JSON, base64url, CBOR)")
	ErrInvalidUserID     = enclave.ErrInvalidUserID
	ErrInvalidKey        = apierr.New(http.StatusBadRequest, "invalid_key", "the key must be base64 of 1 to 1024 bytes")
	ErrKeyRequired       = apierr.New(http.StatusBadRequest, "key_required", "no key is stored for this user yet: registration/finish must carry the key")
	ErrUnknownRP         = apierr.New(http.StatusBadRequest, "unknown_relying_party", "the relying party is not configured on this appliance")
	ErrRecipientMismatch = apierr.New(http.StatusBadRequest, "recipient_mismatch", "recipientPublicKey differs from the one given at begin; the key is sealed only to the key bound to the ceremony")

	// Ceremonies.
	ErrCeremonyUnknown = apierr.New(http.StatusBadRequest, "ceremony_unknown", "the ceremony does not exist, was already used, or is of another kind; begin a new one")
	ErrCeremonyExpired = apierr.New(http.StatusBadRequest, "ceremony_expired", "the ceremony expired; begin a new one")
	ErrCeremonyRP      = apierr.New(http.StatusBadRequest, "ceremony_rp_mismatch", "the ceremony was begun for another relying party")
	ErrTooManyAddress  = apierr.New(http.StatusTooManyRequests, "too_many_ceremonies", "too many ceremonies are open from this address; finish or let them expire")
	ErrCeremoniesFull  = apierr.New(http.StatusServiceUnavailable, "ceremony_capacity", "the appliance holds as many open ceremonies as it may; retry shortly")
	// ErrProofInvalid: GET /v1/me/events with an X-Passkey-Proof that
	// names no fresh authentication (missing, expired, already used).
	ErrProofInvalid     = apierr.New(http.StatusUnauthorized, "passkey_proof_invalid", "X-Passkey-Proof does not name a fresh passkey authentication (the assertionCeremonyId of authentication/finish, single use, valid for the ceremony lifetime): authenticate with a passkey again")
	ErrAssertionInvalid = apierr.New(http.StatusForbidden, "assertion_invalid", "assertionCeremonyId does not name a fresh authentication of this user; authenticate with an existing passkey first")

	// Verification (401).
	ErrOriginMismatch    = apierr.New(http.StatusUnauthorized, "origin_mismatch", "the origin in clientDataJSON is not allowed for this relying party")
	ErrRPIDMismatch      = apierr.New(http.StatusUnauthorized, "rp_id_mismatch", "the RP ID hash in authenticatorData is not this relying party's")
	ErrChallengeMismatch = apierr.New(http.StatusUnauthorized, "challenge_mismatch", "the challenge in clientDataJSON is not this ceremony's")
	ErrClientDataType    = apierr.New(http.StatusUnauthorized, "client_data_type_mismatch", "clientDataJSON.type is not the one of this ceremony")
	ErrUserPresence      = apierr.New(http.StatusUnauthorized, "user_presence_missing", "the authenticator did not report user presence (UP)")
	ErrUserVerification  = apierr.New(http.StatusUnauthorized, "user_verification_missing", "user verification (UV) is required and the authenticator did not report it")
	// ErrCredentialUnknown is the one answer to an assertion whose
	// signature does not verify, whatever its credential id names (unknown,
	// a decoy, the user's, another user's, revoked): anything more precise
	// would tell real credential ids, and so real users, from decoys
	// (decisions/07). ErrSignature is the same error.
	ErrCredentialUnknown  = apierr.New(http.StatusUnauthorized, "credential_unknown", "the assertion is not from a passkey registered for this user with this relying party: the credential is unknown or its signature does not verify")
	ErrCredentialRevoked  = apierr.New(http.StatusUnauthorized, "credential_revoked", "the credential was revoked")
	ErrCredentialNotUsers = apierr.New(http.StatusUnauthorized, "credential_not_allowed", "the credential does not belong to the user of this ceremony")
	ErrUserHandle         = apierr.New(http.StatusUnauthorized, "user_handle_mismatch", "the user handle does not name the credential's user")
	ErrBackupFlags        = apierr.New(http.StatusUnauthorized, "backup_flags_invalid", "the backup flags are inconsistent (backup state without eligibility, or eligibility withdrawn)")
	ErrSignature          = ErrCredentialUnknown
	ErrCounterRegressed   = apierr.New(http.StatusUnauthorized, "counter_regressed", "the signature counter did not increase: the authenticator may be cloned")
	ErrVerification       = apierr.New(http.StatusUnauthorized, "assertion_invalid", "the WebAuthn response does not verify")
	ErrAttestation        = apierr.New(http.StatusBadRequest, "attestation_invalid", "the registration response does not verify")

	// State.
	ErrCredentialExists = apierr.New(http.StatusConflict, "credential_exists", "this credential is already registered")
	ErrTooManyPasskeys  = apierr.New(http.StatusConflict, "too_many_passkeys", "the user has as many passkeys as allowed; revoke one first")
	ErrPasskeyNotFound  = apierr.New(http.StatusNotFound, "passkey_not_found", "the user has no such passkey")
	ErrResetDisabled    = apierr.New(http.StatusForbidden, "passkey_reset_disabled", "passkey reset is disabled on this appliance (see decisions/05)")
	// ErrClaimWithKey refuses a registration that claims an imported key
	// and brings a key of its own: the imported key is what the user's
	// backups were encrypted with, and a registration never replaces it.
	ErrClaimWithKey = apierr.New(http.StatusConflict, "imported_key_unclaimed", "an imported key is waiting to be claimed for this user: finish the registration without a key to claim it (the imported key is kept; a registration never replaces a stored key)")
	// ErrClaimExpired refuses a registration over an imported key whose
	// claim window has ended: it needs an assertion as any stored key, and
	// with no passkey yet only the operator can help (import it again, or
	// reset).
	ErrClaimExpired = apierr.New(http.StatusConflict, "import_claim_expired", "the imported key's claim window has ended: no passkey can be added to it without an assertion; ask the operator to import it again or to reset")
	ErrKeyExists    = apierr.ErrKeyExists.WithMessage("a key is already stored for this user: add a passkey with a fresh assertion from an existing passkey (assertionCeremonyId), never with a session token alone")
)
