#!/usr/bin/env bash
# Cluster load benchmark, in one run with one load generator (wrk -t2 -c64, per-address limits
# lifted as in scripts/bench.sh): Firebase stores/s and releases/s of distinct users for
#   1. one `keywarden dev` on bbolt
#   2. one `keywarden dev` on a one-member embedded etcd
#   3. the three nodes of scripts/cluster.sh (embedded etcd, joined by attestation) behind HAProxy
# then, on the cluster, releases and stores while node 2 is SIGKILLed: p99, the slowest request
# and the failed ones. Usage: scripts/bench-cluster.sh [duration, default 10s]. Loopback only;
# see docs/BENCHMARKS.md. The cluster runs on KEYWARDEN_CLUSTER_PORT_OFFSET=2000 (HAProxy on
# 127.0.0.1:10440) so it does not collide with a cluster.sh on the default ports.
# PROFILE=<dir>: also take an 8 s CPU profile of each cluster node during the cluster's store and
# release runs (<dir>/stores-node<i>.pprof, releases-node<i>.pprof; the nodes run in dev mode).
# ONLY=cluster: skip the single-node runs and the failover (profiling, quick checks).
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
users=${USERS:-256}
off=2000
bash scripts/setup.sh
command -v wrk >/dev/null || { echo "wrk missing" >&2; exit 1; }
for p in 18830 18831 18832 18833 18834 $((8440 + off)) $((8441 + off)) $((2381 + off)); do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is busy; stop what listens there" >&2; exit 1; fi
done
work=$(mktemp -d)
export KEYWARDEN_CLUSTER_DIR=$work/cluster KEYWARDEN_CLUSTER_PORT_OFFSET=$off
pids=()
cleanup() {
  bash scripts/cluster.sh down >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/cluster/bin"
go build -o "$work/cluster/bin/keywarden" ./cmd/keywarden
go build -o "$work/loadbench" ./internal/benchtools/loadbench
"$work/loadbench" issuer -addr 127.0.0.1:18830 -project bench-project -n "$users" -token-out "$work/tokens" & pids+=($!)
for i in $(seq 1 50); do [ -s "$work/tokens" ] && break; sleep 0.2; done
admin=bench-admin-key-0123456789
# Every node (single and cluster) gets these; per-address limits lifted (one load address).
export KEYWARDEN_ADMIN_KEY=$admin KEYWARDEN_FIREBASE_PROJECT_IDS=bench-project \
  KEYWARDEN_FIREBASE_CERTS_URL=http://127.0.0.1:18830/certs KEYWARDEN_LIMITS_RATE_PER_SECOND=10000000 \
  KEYWARDEN_LIMITS_RATE_BURST=10000000

# Lua: requests cycle through the tokens (distinct users); the two threads start half the list
# apart, so a store run of #users requests stores every user once before the release run.
lua() { # method body
  cat <<LUA
local tokens = {}
for line in io.lines("$work/tokens") do tokens[#tokens + 1] = line end
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
local i = 0
function init(args) i = ((tid or 1) - 1) * math.floor(#tokens / 2) end
request = function()
  i = i + 1
  return wrk.format("$1", "/v1/firebase/key",
    {["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1], ["Content-Type"] = "application/json"}, $2)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %.0f %.0f\n", summary.requests, e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(99), latency.max))
end
LUA
}
lua PUT "'{\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"}'" >"$work/put.lua"
lua GET nil >"$work/get.lua"

# What the appliances spent, read around each run: watch holds "pid admin-url" of each node.
watch=()
hz=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$hz" '{printf "%d", ($14 + $15) * 1000 / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
metric() { # admin-url name{labels}: one sample, 0 when absent
  curl -s --max-time 2 -H "Authorization: Bearer $admin" "$1/metrics" | awk -v n="$2" '$1 == n {v = $2} END {printf "%d", v + 0}'
}
counters() { # per node: cpu-ms views updates conflicts
  local w
  for w in "${watch[@]}"; do
    set -- $w
    echo "$(cpu_ms "$1") $(metric "$2" 'keywarden_etcd_txn_duration_seconds_count{op="view"}') $(metric "$2" 'keywarden_etcd_txn_duration_seconds_count{op="update"}') $(metric "$2" keywarden_etcd_txn_conflicts_total)"
  done
}

profile() { # name: CPU profiles of the cluster's nodes, in the background
  [ -n "${PROFILE:-}" ] || return 0
  mkdir -p "$PROFILE"
  local i
  for i in 1 2 3; do
    curl -s --max-time 20 -H "Authorization: Bearer $admin" -o "$PROFILE/$1-node$i.pprof" \
      "http://127.0.0.1:$((8450 + off + i))/v1/admin/debug/pprof/profile?seconds=8" &
  done
}

run() { # name url script [duration]
  local before; before=$(counters)
  local out; out=$(wrk -t2 -c64 -d"${4:-$dur}" --timeout 10s -s "$3" "$2")
  local after; after=$(counters)
  local line; line=$(echo "$out" | grep '^RESULT')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  set -- "$1" $line "$rps" # name RESULT requests non2xx sockerr p99 max rps
  printf '%-26s %8s req/s %7s requests %5s non-2xx %5s socket errors  p99 %8s us  max %8s us\n' "$1" "$8" "$3" "$4" "$5" "$6" "$7"
  echo "$1 $8" >>"$work/results"
  local req=$3
  [ "$req" -gt 0 ] || return 0
  paste -d' ' <(echo "$before") <(echo "$after") | awk -v req="$req" '
    NF == 8 {n++; cpu[n] = $5 - $1; v += $6 - $2; u += $7 - $3; c += $8 - $4; tot += $5 - $1}
    END {
      if (n == 0) exit
      line = sprintf("    appliance CPU per request %.2f ms (", tot / req)
      for (i = 1; i <= n; i++) line = line sprintf("%snode%d %.2f", i > 1 ? ", " : "", i, cpu[i] / req)
      printf "%s); etcd views %.2f, updates %.2f (attempts), conflicts %.3f per request\n", line, v / req, u / req, c / req
    }'
}

single() { # name backend-env…
  local name=$1; shift
  mkdir -p "$work/$name"
  (cd "$work/$name" && exec env KEYWARDEN_DATA_DIR="$work/$name/data" KEYWARDEN_LISTEN_ADDR=127.0.0.1:18831 \
    KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:18832 "$@" "$work/cluster/bin/keywarden" dev >"$work/$name.log" 2>&1) &
  local pid=$!
  for i in $(seq 1 120); do curl -sf http://127.0.0.1:18831/readyz >/dev/null && break; sleep 0.5; done
  watch=("$pid http://127.0.0.1:18832")
  run "$name stores" http://127.0.0.1:18831 "$work/put.lua"
  run "$name releases" http://127.0.0.1:18831 "$work/get.lua"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "wrk -t2 -c64 -d$dur --timeout 10s, $users distinct users, on $(nproc) cores, $(date -u +%F), load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ "${ONLY:-}" = cluster ] || single bbolt KEYWARDEN_STORE_BACKEND=bbolt
[ "${ONLY:-}" = cluster ] || single etcd-1 KEYWARDEN_STORE_BACKEND=embedded KEYWARDEN_CLUSTER_NAME=solo \
  KEYWARDEN_CLUSTER_PEER_LISTEN=127.0.0.1:18833 KEYWARDEN_CLUSTER_PEER_ADVERTISE=https://127.0.0.1:18833 \
  KEYWARDEN_CLUSTER_CLIENT_LISTEN=127.0.0.1:18834

bash scripts/cluster.sh up 2>"$work/cluster.log"
lb=http://127.0.0.1:$((8440 + off))
cluster_watch() {
  watch=()
  local i
  for i in 1 2 3; do watch+=("$(cat "$work/cluster/node$i/pid") http://127.0.0.1:$((8450 + off + i))"); done
}
cluster_watch
profile stores
run "cluster-3 stores" "$lb" "$work/put.lua"
profile releases
run "cluster-3 releases" "$lb" "$work/get.lua"
[ "${ONLY:-}" != cluster ] || exit 0
awk '{r[$1" "$2]=$3} END{
  printf "cluster releases / bbolt releases = %.2f (goal >= 0.5)\n", r["cluster-3 releases"]/r["bbolt releases"];
  printf "cluster stores = %.0f/s (goal >= 2000)\n", r["cluster-3 stores"]}' "$work/results"

echo
echo "failover: node 2 SIGKILLed 4 s into a 12 s run (goal: no request slower than 2 s)"
failover() { # name script
  watch=() # node 2 dies in the middle: no per-request figures
  (sleep 4; kill -9 "$(cat "$work/cluster/node2/pid")") &
  local k=$!
  run "$1" "$lb" "$2" 12s
  wait $k
  bash scripts/cluster.sh start 2 2>>"$work/cluster.log"
  cluster_watch
}
failover "releases, node2 killed" "$work/get.lua"
failover "stores, node2 killed" "$work/put.lua"
bash scripts/cluster.sh status 2>/dev/null | head -5 || true
