#!/usr/bin/env bash
# Soak of the Firebase release (issue 19, item 5): `keywarden dev` at its
# default log level, USERS (default 20000) distinct users each with a stored
# key, then soakbench at RATE requests/s (default 500, well below
# saturation) on C (16) connections for DURATION (default 30m): releases of
# every user in turn, every 50th request an overwrite of the user's key.
# Every SAMPLE (30s) it reads process_resident_memory_bytes and
# go_goroutines from /metrics. Pass: no failed request, RSS at the end
# < 1.10 x RSS after the warm-up (WARMUP, 5m), goroutines flat.
# Usage: scripts/soak.sh [duration]. Loopback ports 19801-19802.
# The series is kept in SOAK_OUT (default $TMPDIR/keywarden-soak.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-30m}
users=${USERS:-20000}
rate=${RATE:-500}
conc=${C:-16}
out=${SOAK_OUT:-${TMPDIR:-/tmp}/keywarden-soak.tsv}
bash scripts/setup.sh
for p in 19801 19802; do
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
go build -o "$work/loadbench" ./internal/benchtools/loadbench
go build -o "$work/soakbench" ./internal/benchtools/soakbench

# Fresh tokens (they live an hour; the run and its set-up must fit in it).
"$work/loadbench" mint -project bench-project -users "$users" -dir "$work/tokens"
"$work/loadbench" issuer -addr 127.0.0.1:19801 -project bench-project -token-out "$work/token" & pids+=($!)
sleep 1
(cd "$work" && KEYWARDEN_LISTEN_ADDR=127.0.0.1:19802 KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:19802 \
  KEYWARDEN_ADMIN_KEY=soak-admin-key-0123456789 KEYWARDEN_FIREBASE_PROJECT_IDS=bench-project \
  KEYWARDEN_FIREBASE_CERTS_URL=http://127.0.0.1:19801/certs KEYWARDEN_LIMITS_RATE_PER_SECOND=10000000 \
  KEYWARDEN_LIMITS_RATE_BURST=10000000 exec ./keywarden dev >"$work/kw.log" 2>&1) & pids+=($!)
for i in $(seq 1 60); do curl -sf http://127.0.0.1:19802/readyz >/dev/null && break; sleep 0.5; done
echo "storing one key for each of $users users (not measured)..."
"$work/loadbench" put -url http://127.0.0.1:19802/v1/firebase/key -tokens "$work/tokens/store.tokens"
echo "soak: $rate req/s on $conc connections for $dur, $(nproc) cores, $(date -u '+%F %T') UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
"$work/soakbench" -url http://127.0.0.1:19802/v1/firebase/key -store "$work/tokens/store.tokens" \
  -read "$work/tokens/read.tokens" -metrics http://127.0.0.1:19802/metrics -admin-key soak-admin-key-0123456789 \
  -rate "$rate" -c "$conc" -d "$dur" -sample "${SAMPLE:-30s}" -warmup "${WARMUP:-5m}" -out "$out"
rc=$?
set -e
echo "series: $out; store file $(find "$work" -name '*.db' -exec du -h {} + | head -1)"
grep -ci 'level=error' "$work/kw.log" | sed 's/^/error lines in the server log: /' || true
exit $rc
