// Package pin releases a client key behind a PIN with a guess limit the
// appliance enforces (issue 16), without ever seeing the PIN: an OPRF
// (RFC 9497, mode 0x00, suite ristretto255-SHA512, cloudflare/circl).
//
// The app blinds the PIN, the appliance evaluates the blinded element
// with a per-registration OPRF key (32 random bytes, sealed under the root
// key), the app finalizes and derives an unlock key and an unlock tag
// (32 bytes). Registration stores the tag, the guess limit (1–255) and the
// owner's key (method "PIN", through the keys service: audit, metrics,
// prior versions, HPKE sealing on release).
//
// A PIN is a second factor only (decisions/29): every call authenticates
// the owner first (a Firebase ID token, or a session token minted by the
// admin API), and the registration, its recoveries and the key are the
// owner's: another owner's ids are simply not found.
//
// # A guess is counted before any answer
//
// POST /v1/pin/recoveries counts one guess in the registration record and
// writes a single-use recovery in the same store transaction, marked with
// enclave.Rollback.NewGeneration, so the commit takes a store generation
// of its own; then [Counter.Sync] waits until the TPM's NV counter has
// reached that generation (concurrent guesses share one increment); only
// then is the OPRF evaluation computed and sent. A crash anywhere before
// the answer leaves the guess counted; a copy of the store from before the
// guess, put back, is older than the NV counter and refused at start
// (enclave.ErrRolledBack). The unlock with the right tag resets the count
// and releases the key; a wrong tag answers guessesRemaining; when none
// are left the registration becomes a "locked" tombstone and the key is
// purged with its prior versions in the same transaction, so no admin
// restore brings it back and no later call is given guesses again.
//
// # Store layout (bucket "pin", values sealed under the root key)
//
//	"r" 0x00 owner                     → the registration (kind "pin_registration")
//	"p" 0x00 owner 0x00 registrationId → a pending registration (kind "pin_pending"), one per owner
//	"v" 0x00 owner 0x00 recoveryId     → a recovery (kind "pin_recovery"), single use
//
// Pending registrations and recoveries expire (pin.pending_ttl,
// pin.recovery_ttl, 5 minutes); expired ones are removed when the owner
// next begins a registration or a recovery. In a cluster (decisions/27)
// these records live in the store's etcd backend like every other record.
package pin
