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
