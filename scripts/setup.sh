#!/usr/bin/env bash
# Installs what Keywarden's build and tests need on a fresh Debian machine with Go.
# Idempotent: a second run only checks.
set -euo pipefail
pkgs=(build-essential libssl-dev swtpm swtpm-tools tpm2-tools haproxy wrk chromium systemd curl ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The TypeScript client (clients/typescript) and its tests need Node 20+
# and npm; `npm ci` installs its locked dependencies (the only network use
# of its tests). Debian 13 ships Node 20; on an older Debian install Node
# 20+ yourself (e.g. NodeSource) or the client's tests are skipped.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing nodejs npm" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node $(node --version 2>/dev/null) is older than 20: the TypeScript client's tests will be skipped" >&2
else
  ts="$(dirname "$0")/../clients/typescript"
  if [ ! -f "$ts/node_modules/.package-lock.json" ] || [ "$ts/package-lock.json" -nt "$ts/node_modules/.package-lock.json" ]; then
    echo "setup: npm ci in clients/typescript" >&2
    (cd "$ts" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
