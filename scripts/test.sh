#!/usr/bin/env bash
# Runs every test of Keywarden on a fresh Debian machine with Go:
# installs the Debian packages the tests use, builds (once, cached) the real
# Vault and etcd servers, then gofmt, vet, staticcheck, the release build without cgo,
# the TypeScript client's package, and the whole suite with the race detector
# (its internal/e2e TestTypeScriptClient runs the client's Node tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
go mod download
KEYWARDEN_VAULT_BIN=$(bash scripts/vault.sh)
export KEYWARDEN_VAULT_BIN
KEYWARDEN_ETCD_BIN=$(bash scripts/etcd.sh)
export KEYWARDEN_ETCD_BIN
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './tools/*'))
if [ -n "$unformatted" ]; then echo "not gofmt'ed: $unformatted" >&2; exit 1; fi
echo "== go vet"
go vet ./...
go vet -tags bench_noreceipts ./cmd/keywarden # the build scripts/bench-receipts.sh compares with
echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
echo "== release build (CGO_ENABLED=0, no simulator)"
CGO_ENABLED=0 go build -trimpath -o /dev/null ./cmd/keywarden
if [ -d clients/typescript/node_modules ] && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; then
  # internal/e2e TestTypeScriptClient runs the client's tests against
  # keywarden dev; with Node and the client installed it must not skip.
  export KEYWARDEN_REQUIRE_NODE=1
  echo "== TypeScript client: npm pack (offline)"
  (cd clients/typescript && npm pack --dry-run --offline --silent >/dev/null)
fi
echo "== go test -race"
go test -race -timeout 30m -p 2 ./... "$@"
