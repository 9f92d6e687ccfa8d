// Package custodianapi is the admin HTTP API of custodian backup shares
// (issue 5): shares wrapped by Vault Transit through custodian.Service.
//
// # Routes (admin API key)
//
//	PUT    /v1/admin/users/:userId/custodian-share?method=…   {"share":"<base64>"} → 201, or 200 on replace
//	GET    /v1/admin/users/:userId/custodian-share?method=…   → {"method","share":"<base64>"}
//	DELETE /v1/admin/users/:userId/custodian-share?method=…   → 204
//	GET    /v1/admin/users/:userId/custodian-shares           → {"shares":[{"method","keyVersion",…}]} (no share)
//	GET    /v1/admin/users/:userId/custodian-share/versions?method=…                    → {"versions":[…]}
//	POST   /v1/admin/users/:userId/custodian-share/versions/:versionId/restore?method=… → 204
//	GET    /v1/admin/owners/:owner/custodian-shares                                      → {"shares":[…]} (no share)
//	GET    /v1/admin/owners/:owner/custodian-shares/:method/versions                     → {"versions":[…]}
//	POST   /v1/admin/owners/:owner/custodian-shares/:method/versions/:versionId/restore  → 204
//	POST   /v1/admin/custodian-shares/batch-put  {"items":[{"userId","method"?,"share"}]}  → {"results":[…]}
//	POST   /v1/admin/custodian-shares/batch-get  {"items":[{"userId","method"?}]}          → {"results":[…]}
//	POST   /v1/admin/custodian/rewrap            → 202 {"jobId"}
//	GET    /v1/admin/custodian/rewrap            → {"jobs":[…]}
//	GET    /v1/admin/custodian/rewrap/:jobId     → the job's progress
//
// Shares are keyed by (owner, method) with owner enclave.UserOwner(userId)
// and method "default" when none is given (decisions/04). The /owners/
// routes take an owner of any kind (user:, firebase:, portal:; Portal's
// webhooks keep shares under portal:<clientId>), URL-escaped in one path
// segment, and the method in the path (httpx.OwnerParam). A share is 1 to
// custodian.MaxShareSize bytes, sent as standard base64 (the server's body
// limit applies too).
//
// A batch answers 200 with one result per item, in order: {"userId",
// "method","status"} (201 stored, 200 replaced) or {"userId","method",
// "share"} for a read, or {"userId","method","error":{"code","message"}}
// for an item that failed alone. A failure of the whole call (Vault
// unavailable, the audit log) fails the request and stores nothing.
//
// # Errors
//
// The custodian package's errors pass through unchanged: 503
// vault_unavailable with Retry-After (Vault unreachable, sealed, slow),
// 502 vault_forbidden (policy or token), 409 ciphertext_version_retired
// naming the version, 502 ciphertext_rejected. A Vault failure stores
// nothing. When the appliance has no Vault configured every route answers
// 503 custodian_not_configured ([ErrNotConfigured]); when Vault refused the
// configuration at start the routes answer that refusal.
//
// # Audit
//
// Every store, release, deletion, restore and rewrap start is an audit line
// with the field kind=custodian_share, durable before the action (a store
// or delete) or before the answer (a release); a batch writes one line per
// item. No line holds a share.
package custodianapi
