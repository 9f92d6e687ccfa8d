// Package attest lets a Keywarden appliance prove, with its TPM, what it
// runs and which public key it holds, and lets anyone check that proof.
//
// It has two halves that share only data types. The prover (ak.go,
// quote.go, ek.go, enroll_tpm.go) talks to the TPM through go-tpm's
// [github.com/google/go-tpm/tpm2/transport.TPM]. The verifier (verify.go, policy.go, enroll.go) is a pure
// function of the evidence and its options: no TPM, no file, no network, so
// an operator's CI job, a client app or `keywarden attest verify` can run it
// anywhere. A test parses the verifier's files and fails if they use the
// prover.
//
// # Attestation key
//
// [CreateAK] makes a restricted ECDSA P-256/SHA-256 signing key in the
// owner (storage) hierarchy, under the storage root key made from the TCG's
// standard ECC P-256 SRK template ([AKParent]). The [AKBlob] (public area
// and SRK-encrypted private area, neither secret) is kept in the store's
// meta bucket at init; [LoadAK] loads it at start. The key's TPM Name
// ([AKBlob.Name]) is its identity: operators pin it in
// [VerifyOptions.AKName]. A restricted key signs only structures the TPM
// itself made, so a signature by it over a TPMS_ATTEST is the TPM's word.
//
// # Quote
//
// [Quote] signs the SHA-256 PCR bank's selected PCRs with the AK over the
// qualifying data [ExtraData] = SHA-256("keywarden-quote-v1" ‖ nonce ‖
// SHA-256(bound key)) (decisions/10): the verifier's fresh nonce and the
// public key the appliance wants bound to this proof, its HPKE release key
// or its TLS key (decisions/11). The [Evidence] carries the signed quote,
// the signature, the AK's public area, the PCR values, the bound key, the
// EK certificates from NV ([ReadEKCertificates]) and the event log when
// readable. Its JSON form is the body of GET /v1/attestation.
//
// # Verification
//
// [Verify] runs every check listed in its documentation and returns [Facts]
// only when all pass; a refusal is a [*VerifyError] with a named [Reason]
// (errors.Is against [ErrNonceMismatch], [ErrPCRNotAllowed], …). The
// operator's expectation is a [Policy] of allowed PCR values ([ParsePolicy];
// `keywarden attest policy` prints the current values through [ReadPCRs]
// and [PolicyFromPCRs]). A policy without PCRs is refused (decisions/11).
//
// What the PCRs prove depends on what the boot measured. A measured
// profile: with a unified kernel image (UKI) booted by systemd-stub, PCR 11
// holds the kernel, initrd and command line, and the Keywarden binary is
// in the image; with IMA, PCR 10 holds the hashes of executed files,
// including the Keywarden binary. Without such a profile the build's
// self-reported version and binary digest are informational only. PCR 7
// (Secure Boot policy) and the firmware PCRs 0–6 change with firmware
// updates: admit both old and new values in the policy before updating.
//
// # Endorsement and enrollment
//
// An EK certificate shows that a TPM maker vouches for the TPM
// ([VerifyOptions.EKRoots]); by itself it says nothing about the AK. To tie
// the two, the verifier runs enrollment once: [MakeEnrollChallenge]
// encrypts a secret to the certified EK for the AK's Name, the appliance
// answers with [ActivateCredential], [CheckEnrollAnswer] compares, and the
// verifier pins the AK's Name from then on.
//
// # Vault client key
//
// [CreateClientKey] makes an unrestricted ECDSA P-256 signing key under the
// SRK, fixed to the TPM; [LoadClientKey] gives a [ClientKey], a
// crypto.Signer over TPM2_Sign used as the private key of the appliance's
// TLS client certificate for Vault (decisions/50). [MakeClientKeyEvidence]
// writes a certificate request signed by it, TPM2_Certify of it by the AK
// and a quote binding it; [VerifyClientKey], pure like [Verify], is what a
// CA runs before issuing the certificate.
package attest
