// Package passkey registers WebAuthn passkeys and releases a user's key
// after an assertion, with github.com/go-webauthn/webauthn.
//
// [Service] holds the ceremonies and the rules; [Handler] is the thin
// native HTTP API over it (issue 3); the Portal adapter (issue 9) calls the
// same Service methods with its own [Subject] and relying party.
//
// # Flows
//
// Registration: the customer's backend vouches for a user with a session
// token → [Service.BeginRegistration] returns creation options →
// [Service.FinishRegistration] verifies the attestation, stores the
// credential and seals the key in custody (owner, [Method]). When a key is
// already stored, begin needs AssertionCeremonyID: the id of an
// authentication of the same user finished within the ceremony lifetime
// ([Authentication.ProofID]). A session token alone never binds a new
// passkey to an existing key (decisions/05); without the assertion the
// answer is 409 key_exists.
//
// One exception: a key the admin import left unclaimed (its record carries
// a claim deadline, keys.import_claim_window) is claimed by the first
// passkey registered for its owner with a session token before that
// deadline, while the owner has no active passkey. Begin answers
// ClaimsImportedKey; finish must carry no key (409 imported_key_unclaimed
// otherwise: the imported key is never replaced), stores the credential,
// clears the mark in the same transaction and is audited
// ([ActionImportClaimed]). Afterwards, and past the deadline (409
// import_claim_expired), the rule above holds again.
//
// Release: [Service.BeginAuthentication] (a user id, or none for a
// discoverable credential; optionally an HPKE recipient key) →
// [Service.FinishAuthentication] verifies the assertion and returns the key,
// in the clear or sealed to the recipient key bound to the ceremony
// (challenge = SHA-256(nonce ‖ recipientPublicKey), decisions/08; the key is
// sealed with info [ReleaseInfo]).
//
// # Checks on an assertion, in order
//
//  1. The ceremony exists, is an authentication, is unexpired; it is
//     removed whatever the outcome (single use). Per-address failure limit.
//  2. The credential is found by its id (never assumed to be one listed in
//     allowCredentials: iOS lets users pick any passkey), belongs to the
//     ceremony's RP and user (or, discoverable, to an owner of the
//     ceremony's kind), and is not revoked.
//  3. The user handle, when present and not empty, is the user id as raw
//     bytes in base64url or as the plain string; it is removed before
//     go-webauthn sees the response (decisions/06).
//  4. Per-user failure limit (only signature failures on that user's own
//     credentials spend it, decisions/07).
//  5. clientDataJSON: type, challenge, origin (web origins and
//     android:apk-key-hash:… built from fingerprints; a refused origin is
//     logged at WARN with the origin received).
//  6. authenticatorData: RP ID hash, UP, UV when required, BS without BE;
//     BE may go from false to true (synced passkeys: the new value is
//     stored), never back.
//  7. go-webauthn verifies it all again, and the signature.
//  8. The sign counter: 0 with a stored 0 means no counter; otherwise it must
//     grow, or the assertion is refused and audited (counter_regressed).
//     The credential is written only when the counter or the backup flags
//     changed, so a release of a synced passkey costs no fsync.
//  9. The release is audited durably (fail closed) before the key is
//     answered. The key comes from [enclave.Custody.Lookup]: no TPM command.
//
// # Storage
//
// In store.BucketCredentials (nothing there is secret):
//
//	"c" 0x00 base64url(credential id)              → credential JSON (public key, owner, user id, RP ID,
//	                                                  sign count, BE/BS, UV, AAGUID, attestation format, PRF, revoked)
//	"o" 0x00 owner 0x00 base64url(credential id)   → RP ID (each owner's index)
//
// On a single node the records and owners' lists a release reads are kept
// decoded in memory (credcache.go), dropped after every credential write,
// absence included; on a cluster they are read from the store each time.
//
// Ceremonies live in memory only (one active node, decisions/23), bounded
// globally and per client address, each for Options.CeremonyTTL. A user
// without passkeys gets decoy allowCredentials derived by HMAC from the
// user id under a root-key subkey, stable across calls, so begin does not
// reveal who has passkeys (decisions/07).
package passkey
