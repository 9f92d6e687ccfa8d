// Package store keeps Keywarden's records: [DB], the façade every package
// uses, over a [Backend] (bbolt today, [Bolt]; a cluster backend next).
//
// # Layers
//
//	callers (enclave, custodian, server/…)   *store.DB, *store.Tx, Bucket, MetaKey, Key/Prefix, ErrNotFound
//	store.DB (this package)                  schema and migrations, group commit, change ledger, backup
//	store.Backend                            View / Update / Snapshot / Close; Get, Put, Delete, ForEach
//	└── store.Bolt                           one bbolt file (bolt.go); conformance: store/storetest
//
// The schema (the buckets, the meta keys, the migrations) lives in this
// package, above the backend, and is written against [BackendTx]: a
// backend only maps a bucket to its own namespace (bbolt: a nested bucket
// under the root bucket "keywarden"; a flat key space such as etcd: a key
// prefix, e.g. <prefix>/<bucket>/<key>) and keeps one schema version. See
// [Backend] for the contract a backend must keep and the guarantees a
// cluster backend must give.
//
// # Schema
//
// Keys are composite: [Key] joins identifiers with 0x00 (identifiers are
// validated before they get here and contain no 0x00), [Prefix] adds the
// separator for a scan below them. owner is an enclave.Owner
// ("user:<id>", "firebase:<project>//<uid>", "portal:<clientId>", …),
// method a backup method ("PASSKEY", "firebase", "PASSWORD", …), a
// version id is the replacement time in Unix nanoseconds as 20 digits.
// "sealed" means an enclave record (AES-256-GCM under a per-record subkey
// of the root key, bound to kind, owner and method). Values are opaque to
// this package; callers seal what must be secret.
//
//	schema version                              uint64, big endian (bbolt: key "schema" of the root bucket)
//	meta/                                       the appliance's own bookkeeping (MetaKey; not seen by the ledger)
//	│   sealed_root                → root key sealed by the TPM (enclave.SealedRoot JSON); never on store.backend embedded (per node: cluster.State)
//	│   rollback                   → rollback record: generation, NV index, TPM name, record-digest commitment (JSON, MACed)
//	│   rollback_node 0x00 node    → one node's rollback record in a cluster: name, TPM name, NV index, counter target, own generation, digest share, generations seen of the others (JSON, MACed)
//	│   rollback_range 0x00 pos    → one range of the record digest: HMAC element of its start, record count and XOR digest, and the count (binary: 32 + 8 bytes)
//	│   recovery                   → recovery record: root id, split, threshold, age-encrypted shares (JSON)
//	│   attest_ak                  → TPM attestation key blob (attest.AKBlob JSON); never on store.backend embedded (per node: cluster.State)
//	│   vault_client_key           → TPM Vault client key blob (attest.ClientKeyBlob)
//	│   attest_signing_key         → TPM appliance signing key blob (attest.SigningKeyBlob)
//	│   audit_head                 → audit chain head (audit.Checkpoint JSON, MACed)
//	│   audit_head@<node>          → store.backend embedded: node <node>'s audit chain head instead (MetaKey.ForNode)
//	│   last_backup                → time of the last online backup (RFC 3339)
//	│   heartbeat                  → readiness write (RFC 3339)
//	│   custodian_priors_sealed    → "1": older custodian priors sealed again
//	│   clientshares_priors_sealed → "1": older client-share priors sealed again
//	keys/                                       client encryption keys (v1)
//	│   owner 0x00 method          → key record, binary (earlier builds: JSON; decisions/54): format, times, client id, claim deadline, sealed key (kind "key")
//	key_versions/                               prior values kept after an overwrite or delete (v1)
//	│   owner 0x00 method 0x00 version id → key record (binary or JSON, as above), sealed again as kind "key_prior"
//	users/                                      reserved (v1; nothing writes it today)
//	credentials/                                passkey credentials, nothing secret (v2)
//	│   "c" 0x00 base64url(credential id)           → credential JSON (public key, owner, RP ID, sign count, flags, …)
//	│   "o" 0x00 owner 0x00 base64url(credential id) → RP ID (each owner's index)
//	custodian/                                  custodian shares wrapped by Vault Transit (v2)
//	│   owner 0x00 method          → record JSON: Transit ciphertext, Transit key version, times
//	│   owner 0x00 method 0x00 "versions" 0x00 version id → prior record, its ciphertext sealed as "custodian_prior"
//	client_shares/                              client-encrypted shares per backup method (v2)
//	│   owner 0x00 method          → record JSON: stored flag, times, sealed cipherText (kind "client_share")
//	│   owner 0x00 method 0x00 "versions" 0x00 version id → prior record, sealed as "client_share_prior"
//	jobs/                                       background jobs with their progress (v2)
//	│   "custodian_rewrap" 0x00 job id → job JSON
//	blocked/                                    Firebase subjects blocked by an operator (v2)
//	│   owner                      → time of the block (RFC 3339)
//	pin/                                        PIN release with a guess limit, every value sealed (v3, server/pin)
//	    "r" 0x00 owner             → registration: OPRF key, unlock tag, guess limit and count (kind "pin_registration")
//	    "p" 0x00 owner 0x00 id     → pending registration: its OPRF key, expiry (kind "pin_pending")
//	    "v" 0x00 owner 0x00 id     → open recovery: registration id, recipient key, expiry (kind "pin_recovery")
//	cluster_joins/                              attested cluster joins, shared by every member (v4; package cluster/join)
//	    "n" 0x00 hex(nonce)        → nonce JSON: expiry (single use: deleted when a request spends it)
//	    "r" 0x00 request id        → request JSON: EK and AK public, quote, name, peer URLs, state,
//	                                 SHA-256 of the poll secret, and once approved the answer
//	                                 (credential to the joiner's EK and AK, root key under AES-GCM: ciphertext only)
//
// A migration (schema.go) moves the schema one version up and runs at
// open; it is written against [BackendTx] (CreateBucket, and data changes
// through Get/Put/Delete/ForEach), so every backend runs the same ones. A
// store from a newer build is refused. Never edit a shipped migration;
// append one, and draw its buckets and keys here.
//
// # Durability
//
// [DB.Update] returns only after its transaction committed durably (bbolt:
// fsynced). Concurrent updates are group-committed: one writer goroutine
// runs every update that arrived while the previous commit was in
// progress in a single [Backend.Update], so N concurrent writers cost one
// fsync, not N (as bbolt's Batch, without its fixed delay). A function
// passed to Update may therefore run more than once and must be
// idempotent. [DB.View] never writes and never fsyncs.
package store
