#!/usr/bin/env bash
# Builds the real Vault server once and caches it outside the repository.
# Prints the path of the binary. The first build takes about 20 minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${KEYWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keywarden}
sum=$(cat "$here/tools/vault/go.mod" "$here/tools/vault/go.sum" "$here/tools/vault/main.go" | sha256sum | cut -c1-16)
bin="$cache/vault-$sum/vault"
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  echo "building Vault into $bin (first time only, ~20 min)" >&2
  (cd "$here/tools/vault" && go build -trimpath -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
