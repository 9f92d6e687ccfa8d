package enclave

// Labels of the root key's subkeys ([Root.Subkey]; the tree is drawn in
// the package doc). A label is part of the key's derivation: changing one
// changes the key and breaks everything made under it (tokens, MACs, the
// audit chain, the rollback record), which the frozen vectors in
// testdata/vectors.json catch. Add a label here, never inline.
const (
	// SubkeySessionToken: HMAC key of user session tokens.
	SubkeySessionToken = "session-token"
	// SubkeyAuditAnchor: HMAC key anchoring the audit chain and MACing its
	// head recorded in the store (store.MetaAuditHead).
	SubkeyAuditAnchor = "audit-anchor"
	// SubkeyRollback: MAC key of the rollback record (store.MetaRollback).
	SubkeyRollback = "rollback"
	// SubkeyRollbackLedger: PRF key of the record digest's elements.
	SubkeyRollbackLedger = "rollback-ledger"
	// SubkeyRollbackNVAuth: authorization value of the TPM NV counter.
	SubkeyRollbackNVAuth = "rollback-nv-auth"
	// SubkeyRecoveryID: key of the root id that names recovery shares and
	// backups (RootID).
	SubkeyRecoveryID = "recovery-id"
	// SubkeyPasskeyDecoy: HMAC key of the decoy credential ids a passkey
	// begin shows for a user without passkeys.
	SubkeyPasskeyDecoy = "passkey decoy credential ids"
	// SubkeyClusterCA: seed of the Ed25519 key of the cluster CA that
	// signs the embedded etcd members' peer and client certificates
	// (package cluster): every holder of the root key derives the same CA,
	// and nobody else can make a certificate the members accept.
	SubkeyClusterCA = "cluster-ca"
	// SubkeyEphemeralState: AES-256-GCM key sealing the ephemeral state a
	// cluster shares through its store (open passkey ceremonies, step-up
	// proofs: they name users and credentials).
	SubkeyEphemeralState = "ephemeral state"
	// SubkeyPortalSession: HMAC key binding a Portal sessionId to its
	// client and ceremony kind (every node of a cluster checks it).
	SubkeyPortalSession = "portal session id"
)

// subkeyLabels is every label above (the frozen-vector test checks each).
var subkeyLabels = []string{
	SubkeySessionToken, SubkeyAuditAnchor, SubkeyRollback, SubkeyRollbackLedger,
	SubkeyRollbackNVAuth, SubkeyRecoveryID, SubkeyPasskeyDecoy, SubkeyClusterCA, SubkeyEphemeralState, SubkeyPortalSession,
}
