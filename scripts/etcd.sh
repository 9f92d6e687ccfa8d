#!/usr/bin/env bash
# Builds the real etcd server once and caches it outside the repository.
# Prints the path of the binary. The first build takes a few minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${KEYWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keywarden}
sum=$(cat "$here/tools/etcd/go.mod" "$here/tools/etcd/go.sum" "$here/tools/etcd/main.go" | sha256sum | cut -c1-16)
bin="$cache/etcd-$sum/etcd"
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  echo "building etcd into $bin (first time only, a few minutes)" >&2
  (cd "$here/tools/etcd" && go build -trimpath -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
