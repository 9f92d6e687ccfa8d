#!/usr/bin/env bash
# Runs every test of Keywarden on a fresh Debian machine with Go:
# installs the Debian packages the tests use, builds (once, cached) the real
# Vault server, then vet, the whole suite with the race detector, and the
# release build without cgo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
go mod download
KEYWARDEN_VAULT_BIN=$(bash scripts/vault.sh)
export KEYWARDEN_VAULT_BIN
echo "== go vet"
go vet ./...
echo "== release build (CGO_ENABLED=0, no simulator)"
CGO_ENABLED=0 go build -trimpath -o /dev/null ./cmd/keywarden
echo "== go test -race"
go test -race -timeout 30m -p 2 ./... "$@"
