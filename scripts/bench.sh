#!/usr/bin/env bash
# Load benchmark of the Firebase release, side by side in one run with the
# same load generator (wrk -t2 -c64):
#   1. Keywarden (`keywarden dev`: sealed records in bbolt, fail-closed
#      group-committed audit, metrics, rate limiter all on)
#   2. a bare server that only verifies the token with golang-jwt and answers from a map
#   3. Vault Transit decrypt called directly (the real Vault dev server)
# Usage: scripts/bench.sh [duration, default 10s]. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
keep=${KEEP:-}
bash scripts/setup.sh
command -v wrk >/dev/null || { echo "wrk missing" >&2; exit 1; }
ports="18801 18802 18803 18804 18811"
for p in $ports; do
  for i in $(seq 1 20); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || break; sleep 0.5; done
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is busy; stop what listens there" >&2; exit 1; fi
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pkill -f "$work/keywarden" 2>/dev/null || true
  rm -rf "$work"
}
[ -n "$keep" ] || trap cleanup EXIT
go build -o "$work/keywarden" ./cmd/keywarden
go build -o "$work/loadbench" ./internal/benchtools/loadbench
go build -o "$work/passkeybench" ./internal/benchtools/passkeybench
vault=$(bash scripts/vault.sh)

"$work/loadbench" issuer -addr 127.0.0.1:18801 -project bench-project -token-out "$work/token" & pids+=($!)
sleep 1
(cd "$work" && KEYWARDEN_LISTEN_ADDR=127.0.0.1:18802 KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:18802 \
  KEYWARDEN_ADMIN_KEY=bench-admin-key-0123456789 KEYWARDEN_FIREBASE_PROJECT_IDS=bench-project \
  KEYWARDEN_FIREBASE_CERTS_URL=http://127.0.0.1:18801/certs KEYWARDEN_LIMITS_RATE_PER_SECOND=10000000 \
  KEYWARDEN_LIMITS_RATE_BURST=10000000 KEYWARDEN_LOG_LEVEL=warn KEYWARDEN_PASSKEY_ORIGINS=http://localhost:18802 \
  KEYWARDEN_PASSKEY_MAX_CEREMONIES_PER_ADDRESS=100000 exec ./keywarden dev >"$work/kw.log" 2>&1) & pids+=($!)
"$work/loadbench" bare -addr 127.0.0.1:18803 -project bench-project -certs http://127.0.0.1:18801/certs & pids+=($!)
"$work/passkeybench" bare -addr 127.0.0.1:18811 -origin http://localhost:18811 & pids+=($!)
"$vault" server -dev -dev-root-token-id=bench-root -dev-listen-address=127.0.0.1:18804 >"$work/vault.log" 2>&1 & pids+=($!)
for i in $(seq 1 60); do curl -sf http://127.0.0.1:18802/readyz >/dev/null && curl -sf http://127.0.0.1:18804/v1/sys/health >/dev/null && break; sleep 0.5; done
token=$(cat "$work/token")
curl -sf -XPUT -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"key":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' http://127.0.0.1:18802/v1/firebase/key >/dev/null
V() { curl -sf -H "X-Vault-Token: bench-root" "$@"; }
V -XPOST -d '{"type":"transit"}' http://127.0.0.1:18804/v1/sys/mounts/transit >/dev/null
V -XPOST http://127.0.0.1:18804/v1/transit/keys/bench >/dev/null
ct=$(V -XPOST -d '{"plaintext":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' http://127.0.0.1:18804/v1/transit/encrypt/bench | sed 's/.*"ciphertext":"\([^"]*\)".*/\1/')

cat >"$work/get.lua" <<LUA
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer $token"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.0f\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, latency:percentile(99)))
end
LUA
cat >"$work/vault.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = "bench-root"
wrk.body = '{"ciphertext":"$ct"}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.0f\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, latency:percentile(99)))
end
LUA
run() { # name url script
  local out; out=$(wrk -t2 -c64 -d"$dur" -s "$3" "$2")
  local line; line=$(echo "$out" | grep '^RESULT')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  set -- "$1" $line "$rps"
  printf '%-24s %10s req/s  %9s requests  %6s non-2xx/errors  p99 %6s us\n' "$1" "$6" "$3" "$4" "$5"
  echo "$1 $6" >>"$work/results"
}
echo "wrk -t2 -c64 -d$dur on $(nproc) cores, $(date -u +%F)"
run keywarden http://127.0.0.1:18802/v1/firebase/key "$work/get.lua"
run bare-golang-jwt http://127.0.0.1:18803/v1/firebase/key "$work/get.lua"
run vault-transit-decrypt http://127.0.0.1:18804/v1/transit/decrypt/bench "$work/vault.lua"
awk 'NR==1{k=$2} NR==2{b=$2} NR==3{v=$2} END{printf "keywarden / bare = %.2f (target >= 0.85)\nkeywarden / vault decrypt = %.2f (target >= 2)\n", k/b, k/v}' "$work/results"
tpm=$(curl -s -H 'Authorization: Bearer bench-admin-key-0123456789' http://127.0.0.1:18802/metrics | awk '/^keywarden_tpm_commands_total/ {print $2}')
commits=$(curl -s -H 'Authorization: Bearer bench-admin-key-0123456789' http://127.0.0.1:18802/metrics | awk '/^keywarden_store_commits_total/ {print $2}')
fsyncs=$(curl -s -H 'Authorization: Bearer bench-admin-key-0123456789' http://127.0.0.1:18802/metrics | awk '/^keywarden_audit_fsyncs_total/ {print $2}')
lines=$(curl -s -H 'Authorization: Bearer bench-admin-key-0123456789' http://127.0.0.1:18802/metrics | awk '/^keywarden_audit_lines_total/ {print $2}')
echo "after the run: TPM commands total $tpm (all at start), store commits $commits, audit lines $lines in $fsyncs fsyncs"

echo
echo "passkey release (begin + finish), same Go load generator (64 workers, real ES256 signatures; wrk cannot sign):"
pk() {
  local out; out=$("$work/passkeybench" load "$@" -c 64 -d "$dur" | grep '^RESULT')
  set -- $out
  printf '%-24s %10s releases/s  %8s ok  %5s errors  p99 %6s us\n' "$2" "$3" "$4" "$5" "$6"
  echo "$2 $3" >>"$work/pk"
}
pk -target keywarden -url http://127.0.0.1:18802 -origin http://localhost:18802 -admin-key bench-admin-key-0123456789
pk -target bare -url http://127.0.0.1:18811 -origin http://localhost:18811
awk 'NR==1{k=$2} NR==2{b=$2} END{printf "keywarden / bare go-webauthn = %.2f (target >= 0.8)\n", k/b}' "$work/pk"
