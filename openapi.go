// Package keywarden holds the appliance's API document, openapi.yaml
// (OpenAPI 3.1), at the root of the repository so that people and tools
// find it there. The server serves it per listener (server/apidoc), its
// tests validate every request and answer against it, and the TypeScript
// client in clients/typescript generates its types from it.
package keywarden

import _ "embed"

// OpenAPIYAML is openapi.yaml as written.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte
