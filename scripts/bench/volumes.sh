#!/usr/bin/env bash
# Benchmark: volumes on 3 test hosts (scripts/hosts.sh).
#
# 1. Move: a named volume holding SIZE_MIB (default 1024) of random data in 64 files is
#    moved with `shoal volume move` to another node, ROUNDS times (default 3), back and
#    forth; prints each move's wall time (from the command's start to its exit, which
#    includes stopping the replica, the copy through the leader, checksums on both ends,
#    and rebinding) and throughput, then the median.
# 2. Freeze: a replicated volume (`x-shoal-volume: {replicas: 2, every: 3s}`) under a
#    write load (a container appending 4 KiB records in a loop, plus 64 MiB already
#    there); prints the replicas' pause (freeze) of each standby refresh for SYNCS
#    refreshes (default 5), then the median and worst.
# Asserts nothing. Usage: scripts/bench/volumes.sh   (root; needs jq)
#   SIZE_MIB, ROUNDS, SYNCS   as above
#   SHOAL_BIN=PATH            use this shoal binary instead of building a release one
#   SHOAL_HOSTS_ID            first instance id to try for hosts.sh (default 71)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SIZE_MIB="${SIZE_MIB:-1024}"
ROUNDS="${ROUNDS:-3}"
SYNCS="${SYNCS:-5}"
export SHOAL_HOSTS_ID="${SHOAL_HOSTS_ID:-71}"
command -v jq >/dev/null || { echo "volumes.sh needs jq" >&2; exit 2; }
if [[ -z "${SHOAL_BIN:-}" ]]; then
  cargo build --release -q -p shoal-cli
  SHOAL_BIN="$PWD/target/release/shoal"
fi
export SHOAL_BIN
export SHOAL_LOG="${SHOAL_LOG:-info}"
HOSTS=scripts/hosts.sh
WORK="$(mktemp -d)"

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
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

# wait_for DESC SECONDS CMD..: poll CMD every 200 ms until it succeeds (bounded).
wait_for() {
  local desc="$1" secs="$2" end
  shift 2
  end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < end)) || { echo "timed out waiting for $desc" >&2; exit 1; }
    sleep 0.2
  done
}
running_on() { shoal ps "$1" --format json | jq -er '[.[] | select(.desired == "running" and .state == "running")][0].node'; }
is_running() { running_on "$1"; }

# --- 1. move ---------------------------------------------------------------------------
cat >"$WORK/move.yaml" <<EOF
name: benchvol
services:
  app:
    image: shoal-test/busybox:latest
    command: ["sh", "-c", "test -f /data/done || { i=0; while [ \$\$i -lt 64 ]; do head -c $((SIZE_MIB * 1024 * 1024 / 64)) /dev/urandom > /data/f\$\$i; i=\$\$((i+1)); done; touch /data/done; }; exec sleep 36000"]
    stop_grace_period: 1s
    volumes: [data:/data]
volumes:
  data: {}
EOF
shoal deploy -c "$WORK/move.yaml" --detach >/dev/null
wait_for "the app running" 60 is_running benchvol
echo "filling the volume with $SIZE_MIB MiB..."
filled() {
  local n c
  n=$(shoal ps benchvol --format json | jq -r '.[] | select(.desired == "running") | .node')
  c=$(shoal ps benchvol --format json | jq -r '.[] | select(.desired == "running") | .container')
  bash "$HOSTS" docker "$n" exec "$c" test -f /data/done
}
wait_for "the volume filled" 900 filled
gone_from() { ! shoal volume ls benchvol --format json | jq -e --arg n "$1" '.[] | select(.node == $n)'; }
times=()
for r in $(seq 1 "$ROUNDS"); do
  from="$(running_on benchvol)"
  to=n1; [[ "$from" == n1 ]] && to=n2
  t0=$(now_ms)
  shoal volume move benchvol/data --to "$to" >"$WORK/move.out"
  t1=$(now_ms)
  ms=$((t1 - t0))
  bytes=$(shoal volume ls benchvol --format json | jq -r --arg n "$to" '.[] | select(.node == $n and .state == "live") | .size_bytes')
  printf 'move %d: %s -> %s, %s MiB in %d ms (%s MiB/s)\n' "$r" "$from" "$to" "$((bytes / 1048576))" "$ms" \
    "$(awk -v b="$bytes" -v ms="$ms" 'BEGIN {printf "%.1f", b / 1048576 / (ms / 1000)}')"
  times+=("$ms")
  # The set-aside copy goes, so the next move may come back here.
  shoal volume rm benchvol/data --node "$from" >/dev/null
  wait_for "the old copy removed" 60 gone_from "$from"
  wait_for "the app running again" 60 is_running benchvol
done
printf 'move median: %s ms for %s MiB\n' "$(printf '%s\n' "${times[@]}" | median)" "$SIZE_MIB"
shoal rm benchvol --volumes >/dev/null

# --- 2. freeze under a write load ----------------------------------------------------
cat >"$WORK/repl.yaml" <<'EOF'
name: benchrepl
services:
  writer:
    image: shoal-test/busybox:latest
    command: ["sh", "-c", "head -c 67108864 /dev/urandom > /data/base; while true; do head -c 4096 /dev/urandom >> /data/log; done"]
    stop_grace_period: 1s
    volumes: [data:/data]
volumes:
  data:
    x-shoal-volume: {replicas: 2, every: 3s}
EOF
shoal deploy -c "$WORK/repl.yaml" --detach >/dev/null
wait_for "the writer running" 60 is_running benchrepl
seen=""
frozen=()
end=$(($(date +%s) + 60 + SYNCS * 30))
while ((${#frozen[@]} < SYNCS)) && (($(date +%s) < end)); do
  line=$(shoal volume ls benchrepl --format json | jq -r '.[] | select(.state == "standby") | "\(.synced_ms) \(.frozen_ms) \(.size_bytes)"' | head -1)
  if [[ -n "$line" && "${line%% *}" != "$seen" ]]; then
    seen="${line%% *}"
    read -r _ f size <<<"$line"
    printf 'refresh %d: replicas paused %s ms (volume %s MiB)\n' "$((${#frozen[@]} + 1))" "$f" "$((size / 1048576))"
    frozen+=("$f")
  fi
  sleep 0.5
done
if ((${#frozen[@]})); then
  printf 'freeze median: %s ms, worst %s ms over %d refreshes\n' \
    "$(printf '%s\n' "${frozen[@]}" | median)" "$(printf '%s\n' "${frozen[@]}" | sort -n | tail -1)" "${#frozen[@]}"
else
  echo "no standby refresh seen" >&2
fi
shoal rm benchrepl --volumes >/dev/null
