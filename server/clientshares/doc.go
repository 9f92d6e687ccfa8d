// Package clientshares keeps each user's encrypted client backup share,
// per backup method, for self-managed customers who want no database of
// their own (issue 5). The customer's backend writes and reads it through
// the admin API.
//
// # Routes (admin API key)
//
//	PUT    /v1/admin/users/:userId/client-shares/:method          {"cipherText","stored"?} → 201, or 200 on replace
//	GET    /v1/admin/users/:userId/client-shares/:method          → {"method","cipherText","stored","createdAt","updatedAt",…}
//	PUT    /v1/admin/users/:userId/client-shares/:method/status   {"stored":true} → the description
//	DELETE /v1/admin/users/:userId/client-shares/:method          → 204
//	GET    /v1/admin/users/:userId/client-shares                  → {"shares":[description…]} (no cipherText)
//	GET    /v1/admin/users/:userId/client-shares/:method/versions → {"versions":[…]}
//	POST   /v1/admin/users/:userId/client-shares/:method/versions/:versionId/restore → the description
//
// method is one of PASSWORD, PASSKEY, GDRIVE, ICLOUD, FIREBASE (as the
// wallet SDKs name their backup methods); anything else is 400
// invalid_method. stored says whether the app confirmed that it kept the
// backup (apps report a backup's success after the fact): a new cipherText
// starts unconfirmed unless the PUT says "stored":true, and the status route
// sets it later without touching the cipherText.
//
// # At rest
//
// The cipherText is already encrypted by the client, but it is sealed once
// more under the root key (enclave.Root.Seal, binding kind "client_share",
// the owner and the method, with the record's write version), so a copied
// disk or backup file shows nothing and a record moved to another user or
// method does not open.
//
//	client_shares/
//	├── owner 0x00 method                            → {stored, createdAt, updatedAt, statusAt, sealed}
//	└── owner 0x00 method 0x00 "versions" 0x00 <ns>  → the same, for a value replaced at <ns> (20 digits)
//
// # Prior versions
//
// An overwrite keeps the replaced value as a prior version for
// [Options.VersionRetention] (decisions/03), listed and restorable through
// the admin API and audited, so a mistaken or hostile overwrite never
// destroys the only copy of a share.
//
// # Audit
//
// Every write, read, status change, deletion and restore is an audit line
// (fail closed: a write or delete is refused when its line cannot be made
// durable; a read is answered only after its line is). No line carries a
// cipherText.
package clientshares
