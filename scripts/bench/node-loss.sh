#!/usr/bin/env bash
# Benchmark: node power cut -> all its replicas healthy elsewhere, on 3 test hosts
# (scripts/hosts.sh: a netns, an engine and an agent per node; 3 controllers).
#
# ROUNDS times (default 10), cutting n1, n2, n3 in turn: deploy a 6-replica httpd
# service with a healthcheck (every 250 ms) so each node runs 2, cut the power of one
# node, and time from the cut (its link going down, as hosts.sh cut reports it) until
# `shoal ps` shows 6 replicas running, then 6 healthy, none on the cut node. Then revive
# the node and remove the stack, so each round starts from 2/2/2. Prints each round,
# then median and worst; asserts nothing. The time includes the node grace (1.5 s by
# default), the reconcile tick, the Raft writes, the new containers' create and start,
# their first passing healthcheck, and the polling of `shoal ps` (each poll starts a
# client process and jq, so a poll takes tens of ms or more on a loaded machine).
#
# Usage: scripts/bench/node-loss.sh [ROUNDS]      (root; needs jq)
#   SHOAL_BIN=PATH   use this shoal binary instead of building a release one
#   SHOAL_HOSTS_ID   first instance id to try for hosts.sh (default 61)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ROUNDS="${1:-10}"
export SHOAL_HOSTS_ID="${SHOAL_HOSTS_ID:-61}"
command -v jq >/dev/null || { echo "node-loss.sh needs jq" >&2; exit 2; }
if [[ -z "${SHOAL_BIN:-}" ]]; then
  cargo build --release -q -p shoal-cli
  SHOAL_BIN="$PWD/target/release/shoal"
fi
export SHOAL_BIN
export SHOAL_LOG="${SHOAL_LOG:-info}"
HOSTS=scripts/hosts.sh
WORK="$(mktemp -d)"
STACK=benchloss

# The first free instance id from SHOAL_HOSTS_ID on (hosts.sh up exits 3 on one in
# use); only an instance this script brought up is taken down.
rm_work() { rm -rf "$WORK"; }
trap rm_work EXIT
for _ in $(seq 1 20); do
  rc=0
  bash "$HOSTS" up 3 >/dev/null || rc=$?
  [[ "$rc" != 3 ]] && break
  SHOAL_HOSTS_ID=$((SHOAL_HOSTS_ID % 99 + 1))
done
[[ "$rc" == 0 ]] || { echo "hosts.sh up failed (exit $rc)" >&2; exit 1; }
cleanup() {
  bash "$HOSTS" down || true
  rm_work
}
trap cleanup EXIT
ADDR="$(bash "$HOSTS" addr)"
SHOAL_CREDENTIALS="$(bash "$HOSTS" credentials)"
export SHOAL_CREDENTIALS
shoal() { "$SHOAL_BIN" "$@" --addr "$ADDR"; }
now_ms() { date +%s%3N; }

cat >"$WORK/compose.yaml" <<EOF
name: $STACK
services:
  web:
    image: shoal-test/busybox:latest
    command: ["sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 8000 -h /tmp"]
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/"]
      interval: 250ms
      timeout: 2s
      retries: 3
    deploy:
      replicas: 6
EOF

# off NODE: "RUNNING HEALTHY", current replicas running (or healthy) and healthy on
# nodes other than NODE.
off() {
  shoal ps "$STACK" --format json 2>/dev/null |
    jq -r --arg n "$1" '[.[] | select(.desired == "running" and .node != $n)] |
      "\([.[] | select(.state == "running" or .state == "healthy")] | length) \([.[] | select(.state == "healthy")] | length)"' 2>/dev/null ||
    echo "0 0"
}

# on_node NODE: healthy replicas on NODE.
on_node() {
  shoal ps "$STACK" --format json 2>/dev/null |
    jq --arg n "$1" '[.[] | select(.desired == "running" and .state == "healthy" and .node == $n)] | length' 2>/dev/null ||
    echo 0
}

declare -a TIMES=() RTIMES=()
for r in $(seq 1 "$ROUNDS"); do
  node="n$(((r - 1) % 3 + 1))"
  shoal deploy -c "$WORK/compose.yaml" >/dev/null
  moved="$(on_node "$node")"
  t0="$(bash "$HOSTS" cut "$node" 2>/dev/null)"
  t1="" tr=""
  for _ in $(seq 1 1200); do   # at most about 60 s
    read -r running healthy < <(off "$node")
    [[ -z "$tr" && "$running" == 6 ]] && tr="$(now_ms)"
    if [[ "$healthy" == 6 ]]; then
      t1="$(now_ms)"
      break
    fi
    sleep 0.02
  done
  if [[ -z "$t1" ]]; then
    echo "round $r: $node's replicas were not healthy elsewhere within 60 s" >&2
    shoal ps "$STACK" >&2 || true
    exit 1
  fi
  ms=$((t1 - t0))
  rms=$((${tr:-$t1} - t0))
  TIMES+=("$ms")
  RTIMES+=("$rms")
  printf 'round %2d: cut %s (%s replicas) -> all 6 running elsewhere in %5d ms, healthy in %5d ms\n' \
    "$r" "$node" "$moved" "$rms" "$ms"
  bash "$HOSTS" revive "$node" 2>/dev/null
  shoal rm "$STACK" >/dev/null
  for _ in $(seq 1 300); do
    left=0
    for n in n1 n2 n3; do
      left=$((left + $(bash "$HOSTS" docker "$n" ps -aq --filter "label=io.shoal.stack=$STACK" | wc -l)))
    done
    [[ "$left" == 0 ]] && break
    sleep 0.2
  done
done

# stats LABEL MS..: median and worst.
stats() {
  local label="$1" sorted n median
  shift
  mapfile -t sorted < <(printf '%s\n' "$@" | sort -n)
  n="${#sorted[@]}"
  if ((n % 2)); then
    median="${sorted[$((n / 2))]}"
  else
    median=$(((sorted[n / 2 - 1] + sorted[n / 2]) / 2))
  fi
  echo "node power cut -> its replicas $label elsewhere, $n cuts: median ${median} ms, worst ${sorted[$((n - 1))]} ms"
}
stats running "${RTIMES[@]}"
stats healthy "${TIMES[@]}"
echo "(binary: $SHOAL_BIN)"
