// Package attestapi serves the appliance's attestation over HTTP and holds
// the client side that fetches it.
//
// # Routes (public listener, unauthenticated)
//
//   - GET /v1/attestation?nonce=<hex, 16..64 bytes>[&bind=hpke|tls] →
//     the [attest.Evidence] JSON: a TPM quote over the configured PCRs
//     (SHA-256 bank) whose qualifying data is
//     [attest.ExtraData](nonce, bound key) (decisions/10), with the
//     attestation key's public area, the PCR values, the EK certificates
//     read at start, the TCG event log when readable, and the build's
//     version and binary digest (informational).
//     The bound key is the appliance's HPKE public key by default
//     (decisions/09 and decisions/11); bind=tls binds the SubjectPublicKeyInfo DER of
//     the TLS certificate the appliance itself serves, offered only when it
//     terminates TLS (bind_unavailable otherwise).
//     Quotes cost several TPM commands and the TPM is shared, so they are
//     rate-limited for the whole appliance (a token bucket, [DefaultRate]
//     per second, burst [DefaultBurst]): 429 rate_limited with Retry-After
//     beyond it. A nonce that is not 16..64 bytes of hex is 400 bad_nonce;
//     no attestation key is 503 attestation_unavailable; a sealed root key
//     503 sealed.
//   - GET /v1/appliance-key → [ApplianceKey]: the appliance's HPKE public
//     key and suite, so clients can seal keys they store to it. Trust it
//     only after evidence bound to it verified ([Client.Check] does both).
//
// Evidence is returned with Cache-Control: no-store; a quote is only
// meaningful for the nonce it answers.
//
// # Client
//
// [Client] fetches both with a fresh random nonce and runs the pure
// verifier, [attest.Verify], with the expected bound key: the HPKE key the
// appliance published, or the TLS key seen on the very connection that
// carried the evidence. `keywarden attest verify` is a thin shell over it.
package attestapi
