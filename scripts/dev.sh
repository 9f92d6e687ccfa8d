#!/usr/bin/env bash
# Runs the appliance on embedded defaults: simulated TPM (INSECURE, public
# seed), a bbolt file under ./keywarden-data, plain HTTP on 127.0.0.1:8420.
# Every setting can be overridden with KEYWARDEN_… variables.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec go run ./cmd/keywarden dev "$@"
