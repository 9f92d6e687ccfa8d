// Package custodian keeps custodian backup shares wrapped by HashiCorp
// Vault's Transit engine: Vault holds the key, Keywarden stores only
// ciphertexts (issue 5, decisions/03 and decisions/04).
//
// [Client] talks to Vault through github.com/hashicorp/vault/api; [Service]
// stores the ciphertexts in the bbolt store and runs the rewrap job.
//
// # Binding a share to its owner
//
// The Transit key is derived (derived=true): every encrypt, decrypt and
// rewrap carries the owner id as its context, and Transit derives a
// per-owner key from it. A ciphertext therefore opens only for the owner it
// was made for; copied into another owner's record it fails with
// [ErrCiphertextRejected]. The client creates the key derived when it is
// missing and refuses an existing key that is not ([ErrKeyNotDerived]),
// checking with a probe when the policy cannot read the key.
//
// # A login with no secret to copy
//
// [AuthTPMCert] logs in with Vault's cert auth method using a TLS client
// certificate whose private key is a [crypto.Signer] that never leaves the
// TPM (attest.ClientKey). The options then hold no token, secret id or key
// file ([Options.Validate] refuses them), and a certificate not issued to
// the signer's key is refused at [New] ([ErrClientKeyMismatch]), so a copy
// of the configuration on another machine cannot log in (decisions/50).
//
// # Errors
//
//   - Vault unreachable, sealed, answering 5xx or 429, too slow, or too many
//     calls already waiting: 503 vault_unavailable with Retry-After
//     ([ErrVaultUnavailable]).
//   - Vault answers 403: 502 vault_forbidden ([ErrVaultForbidden]). With
//     AppRole, certificate or tpm-cert auth the client first logs in again once (a
//     revoked or expired token is replaced transparently); with token auth a
//     revoked or expired token stays vault_forbidden until an operator
//     configures a new one, and [Client.Health] says so.
//   - A ciphertext whose key version is below the key's
//     min_decryption_version: 409 ciphertext_version_retired naming the
//     version ([ErrVersionRetired]).
//   - A ciphertext that does not open (other owner, damaged): 502
//     ciphertext_rejected. Anything else from Vault: 502 vault_error.
//
// No message holds a share, a token or a secret id; the Vault answer is the
// internal Cause, for the log.
//
// # Timeouts, retries, concurrency
//
// Each HTTP call to Vault is bounded by [Options.Timeout]; retryable
// failures are retried [Options.MaxRetries] times with exponential backoff
// and jitter, within the caller's context; at most [Options.MaxConcurrent]
// calls are in flight and a caller waits for a slot no longer than its
// context and Timeout. A slow Vault therefore costs bounded time, goroutines
// and connections.
//
// # Readiness
//
// [Client.Health] never blocks more than 1.5 s and never fails the node: a
// Vault problem is "degraded" in /readyz while passkey and Firebase
// releases go on, and the custodian routes answer 503 themselves
// (decisions/20).
//
// # Vault policy
//
// The token (or the AppRole / cert role's policies) needs, for key name K
// on mount M:
//
//	path "M/encrypt/K" { capabilities = ["update"] }
//	path "M/decrypt/K" { capabilities = ["update"] }
//	path "M/rewrap/K"  { capabilities = ["update"] }
//	path "M/keys/K"    { capabilities = ["read"] }
//
// and the default policy (token lookup-self and renew-self, used at login
// and by Health). Reading M/keys/K is optional: without it the derivation
// check is a probe and the rewrap job rewraps every record instead of
// skipping those already at the latest version. Add "create" and "update"
// on M/keys/K only to let Keywarden create the key. Rotation and
// min_decryption_version stay with the Vault operator.
package custodian
