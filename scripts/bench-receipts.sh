#!/usr/bin/env bash
# What release receipts cost the Firebase release (issue 17's bar: at most
# 5 %). Two builds of the same source side by side, `keywarden dev` at its
# default log level: the normal one (signed anchors and a receipt with
# every release) and one built with the tag bench_noreceipts (no signing
# key: HMAC anchors, no receipt header). The same load generator (wrk -t2)
# alternates between them, round by round:
#   hot  (one token repeated) with C connections (default 64), and
#   cold (a distinct user and a never-seen token per request), unless HOT_ONLY=1.
# Printed per run: requests/s and the server's CPU time per request (from
# /proc/<pid>/stat: utime+stime over the run, divided by the requests),
# then the ratios. Usage: scripts/bench-receipts.sh [duration, default 8s]
# ROUNDS (default 3), C (default 64), USERS (cold users, default 200000;
# tokens minted once and kept for 35 minutes in BENCH_TOKENS, default
# $TMPDIR/keywarden-receipt-tokens). Loopback only; ports 18821–18823.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-8s}
rounds=${ROUNDS:-3}
conns=${C:-64}
users=${USERS:-200000}
hot_only=${HOT_ONLY:-}
tokdir=${BENCH_TOKENS:-${TMPDIR:-/tmp}/keywarden-receipt-tokens}
bash scripts/setup.sh
command -v wrk >/dev/null || { echo "wrk missing" >&2; exit 1; }
for p in 18821 18822 18823; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is busy; stop what listens there" >&2; exit 1; fi
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/keywarden" ./cmd/keywarden
go build -tags bench_noreceipts -o "$work/keywarden-noreceipts" ./cmd/keywarden
go build -o "$work/loadbench" ./internal/benchtools/loadbench
[ -n "$hot_only" ] || "$work/loadbench" mint -project bench-project -users "$users" -dir "$tokdir"
"$work/loadbench" issuer -addr 127.0.0.1:18821 -project bench-project -token-out "$work/token" & pids+=($!)
for i in $(seq 1 120); do curl -sf http://127.0.0.1:18821/certs >/dev/null && break; sleep 0.5; done
declare -A pid
start() { # name port binary
  mkdir -p "$work/$1"
  (cd "$work/$1" && KEYWARDEN_LISTEN_ADDR=127.0.0.1:$2 KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:$2 \
    KEYWARDEN_ADMIN_KEY=bench-admin-key-0123456789 KEYWARDEN_FIREBASE_PROJECT_IDS=bench-project \
    KEYWARDEN_FIREBASE_CERTS_URL=http://127.0.0.1:18821/certs KEYWARDEN_LIMITS_RATE_PER_SECOND=10000000 \
    KEYWARDEN_LIMITS_RATE_BURST=10000000 exec "$3" dev >log 2>&1) &
  pids+=($!); pid[$1]=$!
}
start receipts 18822 "$work/keywarden"
start plain 18823 "$work/keywarden-noreceipts"
declare -A port=([receipts]=18822 [plain]=18823)
for n in receipts plain; do
  for i in $(seq 1 60); do curl -sf "http://127.0.0.1:${port[$n]}/readyz" >/dev/null && break; sleep 0.5; done
done
token=$(cat "$work/token")
for n in receipts plain; do
  curl -sf -XPUT -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"key":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' "http://127.0.0.1:${port[$n]}/v1/firebase/key" >/dev/null
  [ -n "$hot_only" ] || "$work/loadbench" put -url "http://127.0.0.1:${port[$n]}/v1/firebase/key" -tokens "$tokdir/store.tokens"
done
hdr=$(curl -si -H "Authorization: Bearer $token" http://127.0.0.1:18822/v1/firebase/key | grep -i '^keywarden-receipt:' | wc -c)
none=$(curl -si -H "Authorization: Bearer $token" http://127.0.0.1:18823/v1/firebase/key | grep -ic '^keywarden-receipt:' || true)
[ "$hdr" -gt 0 ] && [ "$none" = 0 ] || { echo "the builds do not differ by the receipt header" >&2; exit 1; }
cat >"$work/get.lua" <<LUA
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer $token"
LUA
cat >"$work/cold.lua" <<'LUA'
-- each request: the next never-sent token of the file given (thread t takes lines t, t+2, …)
local n = 0
function setup(thread) thread:set("tid", n); n = n + 1 end
function init(args)
  toks, sent = {}, 0
  local i = 0
  for line in io.lines(args[1]) do
    if i % 2 == tid then toks[#toks + 1] = line end
    i = i + 1
  end
end
function request()
  sent = sent + 1
  return wrk.format("GET", nil, {["Authorization"] = "Bearer " .. toks[(sent - 1) % #toks + 1]})
end
LUA
if [ -z "$hot_only" ]; then # each round's cold runs read a share of the tokens no run sent before
  split -n "l/$rounds" -d -a 2 "$tokdir/read.tokens" "$work/read."
fi
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
run() { # case name [script args]
  local c=$1 n=$2; shift 2
  local c0 c1 out reqs rps
  c0=$(cpu "${pid[$n]}")
  out=$(wrk -t2 -c"$conns" -d"$dur" -s "$@")
  c1=$(cpu "${pid[$n]}")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local us; us=$(awk -v a="$c0" -v b="$c1" -v n="$reqs" -v t="$tck" 'BEGIN{printf "%.1f", (b-a)*1e6/t/n}')
  printf '%-5s %-9s %10s req/s  server CPU %6s us/request\n' "$c" "$n" "$rps" "$us"
  echo "$c $n $rps $us" >>"$work/results"
}
echo "wrk -t2 -c$conns -d$dur on $(nproc) cores, $(date -u +%F), receipt header $hdr bytes"
for r in $(seq 1 "$rounds"); do
  echo "round $r"
  run hot receipts "$work/get.lua" http://127.0.0.1:18822/v1/firebase/key
  run hot plain "$work/get.lua" http://127.0.0.1:18823/v1/firebase/key
  if [ -z "$hot_only" ]; then
    f="$work/read.$(printf %02d $((r - 1)))"
    run cold plain "$work/cold.lua" http://127.0.0.1:18823/v1/firebase/key -- "$f"
    run cold receipts "$work/cold.lua" http://127.0.0.1:18822/v1/firebase/key -- "$f"
  fi
done
rs=$(curl -s -H 'Authorization: Bearer bench-admin-key-0123456789' http://127.0.0.1:18822/metrics | awk '$1=="keywarden_audit_receipts_total"{r=$2} $1=="keywarden_audit_receipt_signatures_total"{s=$2} END{if (s>0) printf "%.1f", r/s}')
echo "receipts per signature: $rs"
awk '{k=$1" "$2; rps[k]+=$3; us[k]+=$4; n[k]++} END{
  for (c in cs) {}
  split("hot cold", cases, " ")
  for (i=1; i<=2; i++) { c=cases[i]; if (!n[c" plain"]) continue
    a=rps[c" receipts"]/n[c" receipts"]; b=rps[c" plain"]/n[c" plain"]
    x=us[c" receipts"]/n[c" receipts"]; y=us[c" plain"]/n[c" plain"]
    printf "%s: receipts / plain = %.3f of the throughput (cost %.1f %%), server CPU +%.1f us per release (+%.1f %%) (bar: 5 %%)\n", c, a/b, (1-a/b)*100, x-y, (x/y-1)*100 }
}' "$work/results"
