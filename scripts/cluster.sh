#!/usr/bin/env bash
# scripts/cluster.sh — a three-node Keywarden cluster on one machine, for trying it out and for the
# end-to-end test. INSECURE like dev mode: simulated TPMs with public seeds.
#
#   scripts/cluster.sh up        start three dev-mode nodes (each its own simulated TPM and embedded
#                                etcd member), join nodes 2 and 3 by attestation (approved here), and
#                                HAProxy on 127.0.0.1:8440; returns once all three answer /readyz 200
#   scripts/cluster.sh start I   restart node I after a kill (it rejoins and catches up)
#   scripts/cluster.sh status    members and leader
#   scripts/cluster.sh down      stop everything
#
# Node I: public listener 127.0.0.1:844I, admin 127.0.0.1:845I, etcd peer 127.0.0.1:238I, its own
# etcd client 127.0.0.1:239I, files in ./keywarden-cluster/nodeI/ (pid, log, data/). Every KEYWARDEN_…
# variable of this script's environment applies to every node; KEYWARDEN_ADMIN_KEY is the admin key of
# all three (default: one made up and printed). KEYWARDEN_CLUSTER_DIR moves ./keywarden-cluster;
# KEYWARDEN_CLUSTER_PORT_OFFSET (default 0; a multiple of 100 below 5000) is added to every port above,
# so a second cluster (the end-to-end test's) can run beside one on the default ports.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${KEYWARDEN_CLUSTER_DIR:-$PWD/keywarden-cluster}
bin=$root/bin/keywarden
admin_key=${KEYWARDEN_ADMIN_KEY:-}
key_file=$root/admin-key
off=${KEYWARDEN_CLUSTER_PORT_OFFSET:-0}
case $off in
  ''|*[!0-9]*) off=bad ;;
  *) if [ $((off % 100)) -ne 0 ] || [ "$off" -ge 5000 ]; then off=bad; fi ;;
esac
if [ "$off" = bad ]; then
  echo "cluster: KEYWARDEN_CLUSTER_PORT_OFFSET must be a multiple of 100 below 5000" >&2; exit 2
fi
# port BASE I: node I's port of a range (8440 public, 8450 admin, 2380 etcd
# peer, 2390 etcd client); port 8440 0 is HAProxy's.
port() { echo $(($1 + off + $2)); }

log() { echo "cluster: $*" >&2; }

# node_env I: the variables of node I (the caller's KEYWARDEN_… come first
# and apply to every node; these name what differs per node).
node_env() {
  local i=$1
  echo "KEYWARDEN_DATA_DIR=$root/node$i/data"
  echo "KEYWARDEN_STORE_BACKEND=embedded"
  echo "KEYWARDEN_CLUSTER_NAME=node$i"
  echo "KEYWARDEN_CLUSTER_PEER_LISTEN=127.0.0.1:$(port 2380 "$i")"
  echo "KEYWARDEN_CLUSTER_PEER_ADVERTISE=https://127.0.0.1:$(port 2380 "$i")"
  echo "KEYWARDEN_CLUSTER_CLIENT_LISTEN=127.0.0.1:$(port 2390 "$i")"
  echo "KEYWARDEN_LISTEN_ADDR=127.0.0.1:$(port 8440 "$i")"
  echo "KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:$(port 8450 "$i")"
  echo "KEYWARDEN_TPM_SIMULATOR_SEED=$((7000 + i))"
  echo "KEYWARDEN_ADMIN_KEY=$admin_key"
  echo "KEYWARDEN_ADMIN_URL=http://127.0.0.1:$(port 8450 "$i")"
  echo "KEYWARDEN_DEV=1"
}

# on I CMD…: runs CMD with node I's environment.
on() {
  local i=$1; shift
  local vars=()
  while IFS= read -r v; do vars+=("$v"); done < <(node_env "$i")
  env "${vars[@]}" "$@"
}

build() {
  mkdir -p "$root/bin"
  if [ ! -x "$bin" ] || [ -n "$(find cmd server store cluster enclave attest custodian internal -newer "$bin" -name '*.go' -print -quit 2>/dev/null)" ]; then
    log "building keywarden"
    go build -o "$bin" ./cmd/keywarden
  fi
}

load_key() {
  if [ -z "$admin_key" ]; then
    if [ -s "$key_file" ]; then
      admin_key=$(cat "$key_file")
    else
      admin_key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    fi
  fi
  mkdir -p "$root"; umask 077; printf '%s' "$admin_key" >"$key_file"
}

alive() { local p="$root/node$1/pid"; [ -s "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; }

ready() { curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$(port 8440 "$1")/readyz"; }

wait_ready() {
  local i=$1 n=0
  until ready "$i"; do
    if ! alive "$i"; then log "node$i exited; its log:"; tail -n 30 "$root/node$i/log" >&2; return 1; fi
    n=$((n + 1)); if [ $n -gt 600 ]; then log "node$i not ready after 120 s"; tail -n 30 "$root/node$i/log" >&2; return 1; fi
    sleep 0.2
  done
}

# start_node I: runs node I in the background (dev mode on the embedded
# backend; node 1 initializes its cluster on a fresh directory).
start_node() {
  local i=$1
  if alive "$i"; then log "node$i already runs (pid $(cat "$root/node$i/pid"))"; return 0; fi
  mkdir -p "$root/node$i"
  # exec: the background subshell becomes the node itself (setsid execs
  # too, the subshell leads no process group), so the pid written is the
  # node's, the one `down` and a test's SIGKILL must reach.
  (
    vars=()
    while IFS= read -r v; do vars+=("$v"); done < <(node_env "$i")
    exec env "${vars[@]}" setsid "$bin" dev
  ) >>"$root/node$i/log" 2>&1 </dev/null &
  echo $! >"$root/node$i/pid"
}

# join_node I: node I asks node 1 to join, and this script approves it
# (as an operator would after comparing the AK name and EK fingerprint).
join_node() {
  local i=$1 out="$root/node$i/join.log" id="" n=0
  mkdir -p "$root/node$i"
  : >"$out"
  on "$i" "$bin" cluster join -poll 200ms "http://127.0.0.1:$(port 8450 1)" >"$out" 2>&1 &
  local jp=$!
  until id=$(sed -n 's/^join request \([^ ]*\) sent.*/\1/p' "$out") && [ -n "$id" ]; do
    if ! kill -0 $jp 2>/dev/null; then log "node$i: cluster join failed:"; cat "$out" >&2; return 1; fi
    n=$((n + 1)); [ $n -lt 300 ] || { log "node$i: no join request after 60 s"; cat "$out" >&2; return 1; }
    sleep 0.2
  done
  on 1 "$bin" cluster approve -yes "$id" >>"$out" 2>&1 || { log "approve $id failed:"; cat "$out" >&2; return 1; }
  wait $jp || { log "node$i: cluster join failed:"; cat "$out" >&2; return 1; }
}

haproxy_up() {
  local cfg="$root/haproxy.cfg"
  cat >"$cfg" <<CFG
global
    maxconn 4096
    pidfile $root/haproxy.pid

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch

frontend keywarden_public
    bind 127.0.0.1:$(port 8440 0)
    default_backend keywarden

backend keywarden
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
    server node1 127.0.0.1:$(port 8440 1) check
    server node2 127.0.0.1:$(port 8440 2) check
    server node3 127.0.0.1:$(port 8440 3) check
CFG
  if [ -s "$root/haproxy.pid" ] && kill -0 "$(cat "$root/haproxy.pid")" 2>/dev/null; then return 0; fi
  haproxy -c -q -f "$cfg"
  haproxy -D -f "$cfg"
}

cmd_up() {
  bash scripts/setup.sh
  build
  load_key
  start_node 1
  wait_ready 1
  for i in 2 3; do
    if [ ! -s "$root/node$i/data/node/state.json" ]; then join_node "$i"; fi
    start_node "$i"
    wait_ready "$i"
  done
  haproxy_up
  log "three nodes ready: public 127.0.0.1:$(port 8440 1)-$(port 8440 3), admin 127.0.0.1:$(port 8450 1)-$(port 8450 3), HAProxy 127.0.0.1:$(port 8440 0)"
  log "admin key: in $key_file (KEYWARDEN_ADMIN_KEY)"
}

cmd_start() {
  local i=${1:?usage: cluster.sh start 1|2|3}
  case $i in 1|2|3) ;; *) echo "usage: cluster.sh start 1|2|3" >&2; exit 2 ;; esac
  build
  load_key
  start_node "$i"
  wait_ready "$i"
  log "node$i ready"
}

cmd_status() {
  load_key
  local i
  for i in 1 2 3; do
    if alive "$i" && ready "$i"; then on "$i" "$bin" cluster status; return; fi
  done
  log "no node answers"; return 1
}

cmd_down() {
  local i p
  if [ -s "$root/haproxy.pid" ]; then kill "$(cat "$root/haproxy.pid")" 2>/dev/null || true; rm -f "$root/haproxy.pid"; fi
  for i in 1 2 3; do
    p="$root/node$i/pid"
    if [ -s "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; then kill "$(cat "$p")" 2>/dev/null || true; fi
  done
  for i in 1 2 3; do
    p="$root/node$i/pid"
    for _ in $(seq 100); do { [ -s "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; } || break; sleep 0.1; done
    if [ -s "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; then kill -9 "$(cat "$p")" 2>/dev/null || true; fi
    rm -f "$p"
  done
  log "stopped (data kept in $root; remove it for a fresh cluster)"
}

case "${1:-}" in
  up) cmd_up ;;
  start) shift; cmd_start "$@" ;;
  status) cmd_status ;;
  down) cmd_down ;;
  *) echo "usage: scripts/cluster.sh up | start I | status | down" >&2; exit 2 ;;
esac
