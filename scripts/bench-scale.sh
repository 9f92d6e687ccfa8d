#!/usr/bin/env bash
# Scale of the store (issue 19, item 3; docs/BENCHMARKS.md "Issue 19: scale,
# durable stores, soak"). Usage: scripts/bench-scale.sh KEYS [step ...]
#   fill     fill a `keywarden dev` store to KEYS Firebase keys through the
#            admin import (scalebench import: 400 items a request, IMPORT_C
#            requests at a time); resumes where an earlier run stopped
#   passkeys register PASSKEYS (20000) more passkey users in the KEYS store
#            (registration ceremonies with software authenticators: the
#            admin import carries no credentials)
#   small    the same with SMALL (10000) keys, the reference store
#   size     file bytes per key
#   start    cold start: stop, start again, time until /readyz answers (the
#            root key unsealed, the store opened, the rollback record's range
#            entries checked; a store of up to 150,000 records checked in full)
#   check    after start: time until the background check of every range
#            ends (decisions/55), and the server's RSS then
#   release  release latency and server CPU per release, KEYS store vs SMALL
#            store, interleaved ROUNDS (3) times (scalebench release: C (4)
#            clients, DUR (10s), SAMPLE (2000) users spread over each store)
#   rss      the server's RSS (anonymous and file-backed) after the releases
#   backup   `keywarden backup` of the KEYS store while releases continue
#   stores   durable Firebase stores: STORES_C (16) writers, distinct new users
# Default steps: all of them, in that order. The stores are kept in SCALE_DIR
# (default $TMPDIR/keywarden-scale) for the next run; delete it to start over.
# Loopback ports 19811 (token issuer), 19812 (KEYS store), 19813 (SMALL store).
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:?usage: scripts/bench-scale.sh KEYS [fill|passkeys|small|size|start|release|rss|backup|stores ...]}
shift
steps=${*:-fill small size start release rss backup stores}
small=${SMALL:-10000}
dir=${SCALE_DIR:-${TMPDIR:-/tmp}/keywarden-scale}
admin=scale-admin-key-0123456789
mkdir -p "$dir/big" "$dir/small"
go build -o "$dir/keywarden" ./cmd/keywarden
go build -o "$dir/loadbench" ./internal/benchtools/loadbench
go build -o "$dir/scalebench" ./internal/benchtools/scalebench
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
if ! (exec 3<>/dev/tcp/127.0.0.1/19811) 2>/dev/null; then
  "$dir/loadbench" issuer -addr 127.0.0.1:19811 -project bench-project -token-out "$dir/token" >/dev/null 2>&1 & pids+=($!)
fi
declare -A srv
start() { # name port: start keywarden dev on the store in $dir/name, wait until ready
  local name=$1 port=$2
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is busy" >&2; exit 1; fi
  local t0; t0=$(date +%s.%N); started=$t0
  [ -f "$dir/$name/kw.log" ] && mv "$dir/$name/kw.log" "$dir/$name/kw.log.1"
  (cd "$dir/$name" && KEYWARDEN_LISTEN_ADDR=127.0.0.1:$port KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:$port \
    KEYWARDEN_ADMIN_KEY=$admin KEYWARDEN_FIREBASE_PROJECT_IDS=bench-project \
    KEYWARDEN_FIREBASE_CERTS_URL=http://127.0.0.1:19811/certs KEYWARDEN_LIMITS_RATE_PER_SECOND=10000000 \
    KEYWARDEN_LIMITS_RATE_BURST=10000000 KEYWARDEN_PASSKEY_ORIGINS=http://localhost:$port \
    KEYWARDEN_PASSKEY_MAX_CEREMONIES_PER_ADDRESS=100000 exec "$dir/keywarden" dev >>"$dir/$name/kw.log" 2>&1) &
  srv[$name]=$!; pids+=($!)
  for i in $(seq 1 1200); do
    curl -sf -o /dev/null http://127.0.0.1:$port/readyz && break
    kill -0 "${srv[$name]}" 2>/dev/null || { echo "$name did not start:" >&2; tail -5 "$dir/$name/kw.log" >&2; exit 1; }
    sleep 0.05
  done
  ready=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
}
stop() { kill "${srv[$1]}"; wait "${srv[$1]}" 2>/dev/null || true; }
count() { cat "$dir/$1/imported" 2>/dev/null || echo 0; }
fill() { # name port target
  local have; have=$(count "$1")
  if [ "$have" -lt "$3" ]; then
    echo "$1: importing keys $have … $(($3 - 1))"
    "$dir/scalebench" import -url "http://127.0.0.1:$2" -admin-key $admin -from "$have" -n $(($3 - have)) -batch 400 -c "${IMPORT_C:-8}" | tee -a "$dir/$1/import.log"
    echo "$3" >"$dir/$1/imported"
  fi
}
rss() { awk '/^(VmRSS|RssAnon|RssFile)/ {printf "%s %.0f MB  ", $1, $2/1024}' "/proc/$1/status"; echo; }
dbfile() { echo "$dir/$1/keywarden-data/keywarden.db"; }

case " $steps " in *" fill "*|*" passkeys "*|*" start "*|*" release "*|*" rss "*|*" backup "*)
  start big 19812
  echo "KEYS store ($(count big) keys) ready in ${ready}s";;
esac
need_small=0
case " $steps " in *" small "*|*" release "*) need_small=1;; esac
if [ $need_small = 1 ]; then start small 19813; fi
for step in $steps; do
  case $step in
  fill) fill big 19812 "$keys" ;;
  small) fill small 19813 "$small" ;;
  passkeys)
    have=$(cat "$dir/big/passkeys" 2>/dev/null || echo 0)
    "$dir/scalebench" passkeys -url http://127.0.0.1:19812 -admin-key $admin -origin http://localhost:19812 \
      -from "$have" -n "${PASSKEYS:-20000}" -c "${IMPORT_C:-8}" | tee -a "$dir/big/passkeys.log"
    echo $((have + ${PASSKEYS:-20000})) >"$dir/big/passkeys" ;;
  size)
    for s in big small; do
      [ -f "$(dbfile $s)" ] || continue
      n=$(count $s); b=$(stat -c %s "$(dbfile $s)")
      echo "size: $s store $n keys, file $b bytes = $(awk -v b="$b" -v n="$n" 'BEGIN{printf "%.0f", b/n}') bytes per key; audit log $(du -sh "$dir/$s/keywarden-data/audit" | cut -f1)"
    done ;;
  start)
    stop big; sync
    start big 19812
    echo "start: cold start of the KEYS store ($(count big) keys, file $(du -h "$(dbfile big)" | cut -f1)): ${ready}s until /readyz"
    grep -E 'rollback|records' "$dir/big/kw.log" | tail -2 ;;
  release)
    for s in big small; do
      [ -s "$dir/$s/release.tokens" ] && [ "$(find "$dir/$s/release.tokens" -mmin -40)" ] ||
        "$dir/scalebench" mint -users "$(count $s)" -sample "${SAMPLE:-2000}" -out "$dir/$s/release.tokens"
    done
    for r in $(seq 1 "${ROUNDS:-3}"); do
      for s in big small; do
        port=19812; [ $s = small ] && port=19813
        printf 'release round %d, %-5s store (%s keys): ' "$r" $s "$(count $s)"
        "$dir/scalebench" release -url "http://127.0.0.1:$port/v1/firebase/key" -tokens "$dir/$s/release.tokens" \
          -c "${C:-4}" -d "${DUR:-10s}" -pid "${srv[$s]}" | grep RESULT
      done
    done ;;
  check)
    for i in $(seq 1 6000); do
      grep -qE "records match its rollback record|records do not match" "$dir/big/kw.log" 2>/dev/null && break
      sleep 0.05
    done
    echo "check: the background range check ended $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s after the start: $(grep -E 'records match its rollback record|records do not match' "$dir/big/kw.log" | tail -1 | sed 's/.*msg=//')"
    printf 'rss after the check: '; rss "${srv[big]}" ;;
  rss) printf 'rss: KEYS store server: '; rss "${srv[big]}" ;;
  backup)
    "$dir/scalebench" release -url http://127.0.0.1:19812/v1/firebase/key -tokens "$dir/big/release.tokens" -c 4 -d 600s -pid "${srv[big]}" >"$dir/backup-releases.txt" 2>&1 &
    rel=$!
    sleep 2
    t0=$(date +%s.%N)
    if ! KEYWARDEN_ADMIN_KEY=$admin "$dir/keywarden" backup -url http://127.0.0.1:19812 -out "$dir/backup.db"; then
      kill -INT $rel; wait $rel || true; echo "backup FAILED" >&2; exit 1
    fi
    echo "backup: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s for $(du -h "$dir/backup.db" | cut -f1) while releases ran"
    kill -INT $rel 2>/dev/null || true; wait $rel 2>/dev/null || true
    echo "releases during the backup: $(grep RESULT "$dir/backup-releases.txt")"
    echo "where the backup copy's bytes go (the live file's pages, copied as they are):"
    "$dir/scalebench" dbstat -db "$dir/backup.db"
    rm -f "$dir/backup.db" ;;
  stores)
    # Durable stores as scripts/bench.sh measures releases: wrk, here
    # -t2 -c16, each request a never-stored user's first store (its own
    # token), on a fresh store at the default log level; every store is
    # audited and committed durably (group commit) before its answer.
    n=${STORES_USERS:-120000}
    [ -s "$dir/stores.tokens" ] && [ "$(find "$dir/stores.tokens" -mmin -40)" ] && [ "$(wc -l <"$dir/stores.tokens")" -ge "$n" ] ||
      "$dir/scalebench" mint -users "$n" -sample "$n" -offset 1000000000 -out "$dir/stores.tokens"
    cat >"$dir/stores.lua" <<'LUA'
local threads, n = {}, 0
function setup(thread) thread:set("tid", n); n = n + 1; table.insert(threads, thread) end
function init(args)
  toks, sent = {}, 0
  local i = 0
  for line in io.lines(args[1]) do
    if i % tonumber(args[2]) == tid then toks[#toks + 1] = line end
    i = i + 1
  end
end
function request()
  sent = sent + 1
  if sent > #toks then wrk.thread:stop() end
  return wrk.format("PUT", nil, {["Authorization"] = "Bearer " .. toks[(sent - 1) % #toks + 1], ["Content-Type"] = "application/json"},
    '{"key":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}')
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.0f\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, latency:percentile(99)))
end
LUA
    for r in $(seq 1 "${ROUNDS:-3}"); do
      rm -rf "$dir/stores"; mkdir -p "$dir/stores"
      start stores 19814
      # each round its own slice of the users: a store is always a new user's
      split -n "l/$r/${ROUNDS:-3}" "$dir/stores.tokens" >"$dir/stores.round"
      c0=$(curl -s -H "Authorization: Bearer $admin" http://127.0.0.1:19814/metrics | awk '$1=="keywarden_store_commits_total"{print $2}')
      out=$(wrk -t2 -c"${STORES_C:-16}" -d"${DUR:-10s}" -s "$dir/stores.lua" http://127.0.0.1:19814/v1/firebase/key -- "$dir/stores.round" 2)
      c1=$(curl -s -H "Authorization: Bearer $admin" http://127.0.0.1:19814/metrics | awk '$1=="keywarden_store_commits_total"{print $2}')
      read -r _ reqs errs p99 <<<"$(echo "$out" | grep '^RESULT')"
      echo "stores round $r: $(echo "$out" | awk '/Requests\/sec/ {print $2}') stores/s, $reqs requests, $errs non-2xx/errors, p99 $((p99 / 1000)) ms, $(awk -v a="$c0" -v b="$c1" -v n="$reqs" 'BEGIN{printf "%.1f", n/(b-a)}') stores per commit"
      stop stores
    done ;;
  *) echo "unknown step $step" >&2; exit 1 ;;
  esac
done
