#!/usr/bin/env bash
# Benchmark: leader loss to first accepted write, with three `shoal controller` processes.
#
# For the default Raft timings and for `--heartbeat-ms 50 --election-timeout-ms 300`:
# start three controllers (one --init, two --join), deploy a one-service stack, then ROUNDS
# times: find the leader (`shoal cluster status`), kill -9 it, retry `shoal scale` against
# the two survivors in a tight bounded loop and time the first one that exits 0; restart
# the killed controller with its original command line and wait until every member is a
# reachable voter again. Prints median and worst per timing; asserts nothing.
#
# The time includes starting the `shoal` client process for each attempt (a few ms).
# Usage: scripts/bench/failover.sh [ROUNDS]     (needs jq)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ROUNDS="${1:-20}"
WORK="$(mktemp -d)"
STACK=benchfailover
declare -a PIDS=() ADDRS=() CMDS=()

# kill9 PID..: SIGKILL, then wait (bounded) until each is gone, so its port is free.
kill9() {
  local pid
  for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
  done
}

cleanup() {
  [[ ${#PIDS[@]} -gt 0 ]] && kill9 "${PIDS[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v jq >/dev/null || { echo "failover.sh needs jq" >&2; exit 2; }
cargo build --release -q -p shoal-cli
SHOAL=target/release/shoal

now_ms() { date +%s%3N; }

# A port nothing listens on (bash's /dev/tcp connects; a refusal means free).
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "no free port found" >&2
  exit 1
}

join_by() { local IFS="$1"; shift; echo "$*"; }

status() { "$SHOAL" cluster status --format json --addr "$1" 2>/dev/null; }

# start_controller I: runs CMDS[I] in the background, appending to its log.
start_controller() {
  local i="$1"
  # shellcheck disable=SC2086
  "$SHOAL" ${CMDS[$i]} >>"$WORK/controller-$i.log" 2>&1 &
  PIDS[$i]=$!
  # Killing it is the point: no "Killed" job report from bash.
  disown "${PIDS[$i]}"
}

# wait_voters N ADDRS: until the leader reports N members, each a reachable voter.
wait_voters() {
  local n="$1" addrs="$2"
  for _ in $(seq 1 600); do
    if status "$addrs" | jq -e --argjson n "$n" '
        .leader != 0 and (.members | length) == $n and
        all(.members[]; (.role == "leader" or .role == "follower") and .reachable)' \
        >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for $n reachable voters" >&2
  tail -n 20 "$WORK"/controller-*.log >&2
  exit 1
}

# The index (into ADDRS) of the leader.
leader_index() {
  local addr
  addr=$(status "$(join_by , "${ADDRS[@]}")" |
    jq -r '.leader as $l | .members[] | select(.id == $l) | .address')
  for i in "${!ADDRS[@]}"; do
    [[ "${ADDRS[$i]}" == "$addr" ]] && { echo "$i"; return; }
  done
  echo "no leader found (got '$addr')" >&2
  exit 1
}

# run_timing SLUG LABEL [FLAGS..]: one full series of ROUNDS kills; appends a line to
# RESULTS. Runs in this shell (not a subshell) so the cleanup trap sees every PID.
run_timing() {
  local slug="$1" label="$2"; shift 2
  local flags="$*"
  local dir="$WORK/$slug"
  mkdir -p "$dir"
  ADDRS=() CMDS=() PIDS=()
  for i in 0 1 2; do
    ADDRS[$i]="127.0.0.1:$(free_port)"
  done
  # Controller 0 inits (and writes the admin credentials every CLI call uses); the
  # others join it with the controller token.
  export SHOAL_CREDENTIALS="$dir/c0/admin"
  local token=""
  for i in 0 1 2; do
    local boot="--init"
    [[ "$i" -gt 0 ]] && boot="--join ${ADDRS[0]} --token $token"
    CMDS[$i]="controller --data-dir $dir/c$i --listen ${ADDRS[$i]} --advertise ${ADDRS[$i]} $boot $flags"
    start_controller "$i"
    wait_voters $((i + 1)) "$(join_by , "${ADDRS[@]:0:$((i + 1))}")"
    [[ "$i" == 0 ]] && token=$("$SHOAL" token show controller --addr "${ADDRS[0]}")
  done

  cat >"$dir/compose.yaml" <<YAML
name: $STACK
services:
  web:
    image: shoal-test/busybox:latest
    deploy:
      replicas: 0
YAML
  "$SHOAL" deploy -c "$dir/compose.yaml" --detach --addr "$(join_by , "${ADDRS[@]}")" >/dev/null

  local times=() failures=0
  for round in $(seq 1 "$ROUNDS"); do
    local victim survivors start took="" ok=0
    victim=$(leader_index)
    survivors=$(join_by , $(for i in 0 1 2; do [[ "$i" != "$victim" ]] && echo "${ADDRS[$i]}"; done))
    kill -9 "${PIDS[$victim]}"
    start=$(now_ms)
    # Tight bounded loop: at most 60 s of attempts.
    while (( $(now_ms) - start < 60000 )); do
      if "$SHOAL" scale "$STACK/web=0" --addr "$survivors" >/dev/null 2>&1; then
        ok=1
        break
      fi
    done
    took=$(( $(now_ms) - start ))
    if [[ "$ok" == 1 ]]; then
      times+=("$took")
    else
      failures=$((failures + 1))
      echo "  round $round: no write accepted within 60 s" >&2
    fi
    kill9 "${PIDS[$victim]}"
    start_controller "$victim"
    wait_voters 3 "$(join_by , "${ADDRS[@]}")"
    if [[ "$ok" == 1 ]]; then
      echo "  $slug round $round: leader ${ADDRS[$victim]} killed, first write accepted after ${took} ms" >&2
    fi
  done

  kill9 "${PIDS[@]}"
  PIDS=()

  local sorted n median worst
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  n=${#times[@]}
  if [[ "$n" -gt 0 ]]; then
    median=$(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p")
    worst=$(echo "$sorted" | tail -n 1)
  else
    median=- worst=-
  fi
  RESULTS+=("$(printf '%-44s kills %2d  failed %d  median %6s ms  worst %6s ms' \
    "$label" "$n" "$failures" "$median" "$worst")")
}

RESULTS=()
run_timing default "default (heartbeat 100 ms, election 1000 ms)"
run_timing fast "fast (heartbeat 50 ms, election 300 ms)" --heartbeat-ms 50 --election-timeout-ms 300

echo
echo "leader loss (kill -9) to first accepted write, three controllers, $ROUNDS kills each:"
printf '%s\n' "${RESULTS[@]}"
