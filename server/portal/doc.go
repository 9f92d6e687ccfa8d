// Package portal is a drop-in for Portal's hosted backup host: it speaks
// the wire protocol of Portal's MPC wallet SDKs (PortalSwift, React
// Native, Android) for FirebaseStorage (tbsHost) and PasskeyStorage
// (webAuthnHost), and Portal's custodian backup webhooks (issue 9).
//
// It is a thin adapter: no key store, no verifier, no record of its own.
// Firebase keys go through the server's shared StoreKey / ReleaseKey
// (audit fail-closed, metrics, no TPM command) keyed exactly as the native
// Firebase API keys them; passkeys go through [passkey.Service]; shares
// through the custodian service (Vault Transit). Its only state is a cache
// of resolved client credentials and the root subkey that binds a
// sessionId to the client that began it.
//
// # Routes
//
// Every SDK request carries Authorization: Bearer <Portal client API key
// or client session token>, Content-Type and Accept application/json, and
// X-Portal-Trace-Id (the server takes it as the request's correlation id).
//
//	PUT  /v1/backup/encrypt-key         X-Firebase-Token; {"encryptionKey"} → 201 (200 on a replace)
//	GET  /v1/backup/encrypt-key         X-Firebase-Token → {"encryptionKey"}; 404 when none
//	GET  /passkeys/status               → {"status": "not registered" | "registered" | "registered with credential"}
//	POST /passkeys/begin-registration   {"relyingParty"} → {"options":{"publicKey":{…}},"sessionId"}
//	POST /passkeys/finish-registration  {"attestation","sessionId","encryptionKey","relyingParty"} → 200
//	POST /passkeys/begin-login          {"relyingParty"} → {"options":{"publicKey":{…}},"sessionId"}
//	POST /passkeys/finish-login/read    {"assertion","sessionId","relyingParty"} → {"encryptionKey"}
//	POST /passkeys/finish-login/write   {"encryptionKey","assertion","sessionId","relyingParty"} → 200
//	POST /webhook/backup                X-Webhook-Secret; {"clientId","backupMethod","share"} → 204
//	POST /webhook/backup/fetch          X-Webhook-Secret; {"clientId"} → {"backupShares":[…]}
//	DELETE /v1/admin/portal/identities  (admin listener) empties the identity cache
//
// Answers carry every member the SDK decodes, with its type.
//
// # Who the caller is
//
// The client credential is resolved to a Portal client id by
// GET <api_url>/api/v3/clients/me with the same bearer ([Resolver]); only
// clients whose custodian.id is the configured custodian are accepted
// (others: 403 portal_custodian_mismatch). Before any look-up the
// credential's shape is checked and, on the TBS routes, the Firebase token
// verified (decisions/22). Every Firebase-token failure and every unknown
// credential is 401 (the SDK refreshes its token and retries once on 401);
// a known caller who is not allowed gets 403.
//
// # Whose records
//
//   - TBS keys belong to the Firebase user: owner
//     "firebase:<project>/<tenant>/<sub>", method "FIREBASE", exactly as
//     the native /v1/firebase/key, so both routes see one key. The key is
//     the SDK's string, stored as text (enclave.FormatText) and returned
//     byte for byte; nothing converts it (decisions/02). The Portal client
//     that first stored it is recorded; another client gets 403
//     client_mismatch unless [Options.AllowClientMismatch].
//   - Passkeys and their key belong to the Portal client: owner
//     "portal:<clientId>", method "PASSKEY"; the WebAuthn user handle is
//     the client id as a plain string. Once a key is stored,
//     finish-registration never replaces it (409 key_exists);
//     finish-login/write replaces it with an assertion. A key the admin
//     import left unclaimed cannot be claimed through the SDK (its
//     finish-registration always brings a new key): begin-registration
//     answers 409 imported_key_unclaimed.
//   - Custodian shares belong to "portal:<clientId>" under the webhook's
//     backupMethod as given (decisions/04), wrapped by Vault Transit.
//
// Every replace keeps the previous value as a prior version (decisions/03).
//
// # Sessions
//
// A sessionId is <ceremony id>.<tag>, the tag an HMAC of the ceremony id,
// its kind and the client's owner under the "portal session id" root
// subkey (the same on every node of a cluster). A sessionId begun by
// another client, or for the other kind of ceremony, is refused (400
// session_invalid) before the ceremony is touched; a used or expired one is
// refused by the passkey service (400 ceremony_unknown), on every node: the
// ceremony is taken once in the whole cluster.
//
// # Webhooks
//
// X-Webhook-Secret is compared with every configured secret (two may be
// active during a rotation) in constant time; an optional allow-list of
// source addresses is checked first. The work is bounded by
// [Options.WebhookTimeout] (8 s by default: Portal waits 10 s), and a
// share is committed durably before the answer, because Portal fetches
// right after a backup to confirm it. Bodies are never logged.
package portal
