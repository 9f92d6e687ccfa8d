#!/usr/bin/env bash
# Load benchmark of the Firebase release, side by side in one run with the
# same load generator (wrk -t2 -c64):
#   1. Keywarden (`keywarden dev` at its default log level: sealed records in
#      bbolt, fail-closed group-committed audit, metrics, rate limiter all on)
#   2. a bare server that only verifies the token with golang-jwt and answers from a map
#   3. Vault Transit decrypt called directly (the real Vault dev server)
# in two cases: hot (one token repeated) and cold (a distinct user and a
# never-seen token per request: each user's key was stored with another
# token first). Then the passkey release against a bare go-webauthn server.
# Usage: scripts/bench.sh [duration, default 10s]. Loopback only.
# COLD_USERS (default 150000) users are minted for the cold case, two RS256
# tokens each; minting is slow (one RSA signature per token), so the tokens
# are kept in BENCH_TOKENS (default $TMPDIR/keywarden-bench-tokens) and
# reused by runs in the next 35 minutes. A cold run that needs more requests
# than there are users says so: raise COLD_USERS or shorten the duration.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
keep=${KEEP:-}
cold_users=${COLD_USERS:-150000}
tokdir=${BENCH_TOKENS:-${TMPDIR:-/tmp}/keywarden-bench-tokens}
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

"$work/loadbench" mint -project bench-project -users "$cold_users" -dir "$tokdir"
"$work/loadbench" issuer -addr 127.0.0.1:18801 -project bench-project -token-out "$work/token" & pids+=($!)
# Wait for the issuer (on a loaded machine it takes longer than a second;
# the servers below fetch its certificates at start).
for i in $(seq 1 120); do curl -sf http://127.0.0.1:18801/certs >/dev/null && break; sleep 0.5; done
(cd "$work" && KEYWARDEN_LISTEN_ADDR=127.0.0.1:18802 KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:18802 \
  KEYWARDEN_ADMIN_KEY=bench-admin-key-0123456789 KEYWARDEN_FIREBASE_PROJECT_IDS=bench-project \
  KEYWARDEN_FIREBASE_CERTS_URL=http://127.0.0.1:18801/certs KEYWARDEN_LIMITS_RATE_PER_SECOND=10000000 \
  KEYWARDEN_LIMITS_RATE_BURST=10000000 KEYWARDEN_PASSKEY_ORIGINS=http://localhost:18802 \
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

echo "storing one key for each of $(wc -l <"$tokdir/store.tokens") cold users (not measured)..."
"$work/loadbench" put -url http://127.0.0.1:18802/v1/firebase/key -tokens "$tokdir/store.tokens"
"$work/loadbench" put -url http://127.0.0.1:18803/v1/firebase/key -tokens "$tokdir/store.tokens"

metric() { curl -s -H 'Authorization: Bearer bench-admin-key-0123456789' http://127.0.0.1:18802/metrics | awk -v m="$1" '$1 == m {print $2}'; }
snapshot() { echo "$(metric keywarden_tpm_commands_total) $(metric keywarden_store_commits_total) $(metric keywarden_audit_lines_total) $(metric keywarden_audit_fsyncs_total)"; }
counters() { # the increase of one counter since the set-up
  local now; now=($(snapshot)); local i
  case $1 in tpm) i=0;; commits) i=1;; lines) i=2;; fsyncs) i=3;; esac
  awk -v a="${now[$i]}" -v b="${base[$i]}" 'BEGIN{printf "%d", a-b}'
}
base=($(snapshot))

cat >"$work/cold.lua" <<'LUA'
-- each request: the next never-sent token of read.tokens (thread t takes lines t, t+2, …)
local threads, n = {}, 0
function setup(thread)
  thread:set("tid", n); n = n + 1
  table.insert(threads, thread)
end
function init(args)
  toks, sent = {}, 0
  local i = 0
  for line in io.lines(args[1]) do
    if i % 2 == tid then toks[#toks + 1] = line end
    i = i + 1
  end
  ntok = #toks
end
function request()
  sent = sent + 1
  return wrk.format("GET", nil, {["Authorization"] = "Bearer " .. toks[(sent - 1) % ntok + 1]})
end
done = function(summary, latency, requests)
  local reused = 0
  for _, t in ipairs(threads) do
    local r = t:get("sent") - t:get("ntok")
    if r > 0 then reused = reused + r end
  end
  io.write(string.format("RESULT %d %d %.0f %d\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, latency:percentile(99), reused))
end
LUA
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
run() { # name url script [script args]
  local name=$1 url=$2 script=$3; shift 3
  local out; out=$(wrk -t2 -c64 -d"$dur" -s "$script" "$url" -- "$@")
  local line; line=$(echo "$out" | grep '^RESULT')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local reqs errs p99 reused
  read -r _ reqs errs p99 reused <<<"$line"
  printf '%-24s %10s req/s  %9s requests  %6s non-2xx/errors  p99 %6s us\n' "$name" "$rps" "$reqs" "$errs" "$p99"
  if [ "${reused:-0}" -gt 0 ]; then
    case $name in
    keywarden*) echo "  !! $reused requests repeated a token (more requests than COLD_USERS=$cold_users): not all cold; raise COLD_USERS" >&2 ;;
    *) echo "  ($reused requests repeated a token: the same work for a server without a token cache)" ;;
    esac
  fi
  echo "$name $rps $p99" >>"$work/results"
}
echo "wrk -t2 -c64 -d$dur on $(nproc) cores, $(date -u +%F), keywarden at its default log level"
echo "hot: one token repeated"
run keywarden-hot http://127.0.0.1:18802/v1/firebase/key "$work/get.lua"
run bare-hot http://127.0.0.1:18803/v1/firebase/key "$work/get.lua"
run vault-transit-decrypt http://127.0.0.1:18804/v1/transit/decrypt/bench "$work/vault.lua"
echo "cold: a distinct user and a never-seen token per request"
run keywarden-cold http://127.0.0.1:18802/v1/firebase/key "$work/cold.lua" "$tokdir/read.tokens"
run bare-cold http://127.0.0.1:18803/v1/firebase/key "$work/cold.lua" "$tokdir/read.tokens"
awk '{r[$1]=$2; p[$1]=$3} END{
  printf "hot:  keywarden / bare = %.2f (target >= 0.85), p99 %.2fx bare (target <= 2)\n", r["keywarden-hot"]/r["bare-hot"], p["keywarden-hot"]/p["bare-hot"]
  printf "hot:  keywarden / vault decrypt = %.2f (target >= 2)\n", r["keywarden-hot"]/r["vault-transit-decrypt"]
  printf "cold: keywarden / bare = %.2f (target >= 0.85), p99 %.2fx bare (target <= 2)\n", r["keywarden-cold"]/r["bare-cold"], p["keywarden-cold"]/p["bare-cold"]
  printf "cold: keywarden / vault decrypt = %.2f\n", r["keywarden-cold"]/r["vault-transit-decrypt"]}' "$work/results"
echo "after the runs (the releases only: counted from the end of the set-up): TPM commands $(counters tpm), store commits $(counters commits), audit lines $(counters lines) in $(counters fsyncs) fsyncs"

echo
echo "passkey release (begin + finish), same Go load generator (64 workers, real ES256 signatures; wrk cannot sign):"
pk() {
  local out; out=$("$work/passkeybench" load "$@" -c 64 -d "$dur" | grep '^RESULT')
  set -- $out
  printf '%-24s %10s releases/s  %8s ok  %5s errors  p99 %6s us\n' "$2" "$3" "$4" "$5" "$6"
  echo "$2 $3 $6" >>"$work/pk"
}
pk -target keywarden -url http://127.0.0.1:18802 -origin http://localhost:18802 -admin-key bench-admin-key-0123456789
pk -target bare -url http://127.0.0.1:18811 -origin http://localhost:18811
awk 'NR==1{k=$2; kp=$3} NR==2{b=$2; bp=$3} END{printf "keywarden / bare go-webauthn = %.2f (target >= 0.8), p99 %.2fx bare (target <= 2)\n", k/b, kp/bp}' "$work/pk"
