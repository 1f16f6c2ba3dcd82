#!/usr/bin/env bash
# Several test hosts on one machine: each node is a network namespace with its own
# address and a mount namespace of its own, in which its Docker engine and its
# `shoal agent` both run; three `shoal controller` processes run on the host, on the
# bridge address, so cutting a node never takes a controller.
#
#   scripts/hosts.sh up N          N nodes (n1..nN) + 3 controllers; waits until all ready
#   scripts/hosts.sh down          kill everything, remove netns, veths, bridge, rules, dirs
#   scripts/hosts.sh cut NODE      power cut: kill its containers, agent and engine; link down
#   scripts/hosts.sh revive NODE   link up; engine and agent again on the same data dirs
#   scripts/hosts.sh partition NODE / heal NODE    link down / up, processes untouched
#   scripts/hosts.sh kill-controller K             SIGKILL controller K (1..3)
#   scripts/hosts.sh start-controller K [ARGS..]   start controller K again on its data dir,
#                                  address and log; with ARGS instead of --init/--join
#   scripts/hosts.sh wipe-controller K             SIGKILL controller K, delete its data dir
#   scripts/hosts.sh stop-agent NODE / start-agent NODE   SIGTERM the agent (its
#                                  containers keep running) / start it on its data dir
#   scripts/hosts.sh new-cluster   every controller and agent killed, their data dirs
#                                  deleted (engines kept), a new cluster made as `up` does
#   scripts/hosts.sh docker NODE ARGS..            docker against the node's engine
#   scripts/hosts.sh exec NODE CMD..               a command inside the node's netns
#                                                  and mount namespace
#   scripts/hosts.sh mknod NODE NAME               the character device /dev/shoal-test/NAME
#                                                  (1:3, as /dev/null) on NODE only
#   scripts/hosts.sh rmdev NODE NAME               remove it again
#   scripts/hosts.sh addr | ip NODE | status       controller addresses, a node's IP, a summary
#   scripts/hosts.sh credentials   the admin credentials dir (for --credentials or
#                                  SHOAL_CREDENTIALS); controller 1 writes it at --init
#
# NODE is n1..nN (or just its number). Environment:
#   SHOAL_HOSTS_ID       instance number 1..99 (default 7): bridge shb<ID>, subnet
#                        10.77.<ID>.0/24 (host .1, node i .1<i>: .11, .12, ..), netns
#                        shoal<ID>-n<i>, state in /tmp/shoal-hosts/<ID>. Two runs with
#                        different ids never collide; `up` on an id in use exits 3.
#   SHOAL_BIN            the shoal binary (default target/debug/shoal)
#   SHOAL_HOSTS_CONTROLLERS   number of controllers (default 3)
#   SHOAL_HOSTS_TOKEN    join token given to every agent and joining controller instead
#                        of the cluster's own (asked with `shoal token show` after init)
#   SHOAL_HOSTS_AGENT_ARGS, SHOAL_HOSTS_AGENT_ARGS_<i>   extra agent flags (all, node i)
#   SHOAL_HOSTS_ENGINE_ONLY   node numbers (e.g. "4") that get an engine but no agent:
#                        a machine that deploys (builds, pushes) without being a node
#   SHOAL_HOSTS_CONTROLLER_ARGS                          extra controller flags
#   SHOAL_HOSTS_METRICS=1  serve /metrics: controller K on <host ip>:<9369+K>, each
#                        agent on <node ip>:9370
#   SHOAL_LOG            log filter of the shoal processes (logs in the state dir)
#
# Each engine: dockerd started with `nsenter --net=` (not `ip netns exec`, which remounts
# /sys and breaks dockerd's cgroup detection), its own --config-file (the host's
# /etc/docker/daemon.json is not read), data-root, exec-root (so its supervised
# containerd has its own socket, state and root), pidfile, socket and --bip
# 10.(100+ID).<i>.1/24, storage driver vfs. The test image is loaded into each from the
# host engine. Needs root, iproute2, iptables, nsenter (util-linux), dockerd.
#
# Each node's mount namespace (`unshare --mount=FILE --propagation slave`: mounts made
# on the host still appear in it, none made in it leaks out) is kept by a bind mount
# of it on $STATE/ns/n<i> (a private mount, as the kernel wants it), so the engine and
# the agent of a revived node enter the same one again; `down` unmounts those, which
# frees the namespaces with everything mounted in them. In it, /dev/shoal-test is a
# tmpfs of the node's own (the empty directory is made on the host's /dev first), so a
# device file made there with `mknod` exists on that node only: what the engine checks
# for `--device` and the agent reports as the node's devices.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ID="${SHOAL_HOSTS_ID:-7}"
[[ "$ID" =~ ^[0-9]+$ && "$ID" -ge 1 && "$ID" -le 99 ]] || {
  echo "hosts.sh: SHOAL_HOSTS_ID must be a number from 1 to 99, not '$ID'" >&2
  exit 2
}
STATE="/tmp/shoal-hosts/$ID"
BR="shb$ID"
NET="10.77.$ID"
HOST_IP="$NET.1"
SHOAL="${SHOAL_BIN:-$ROOT/target/debug/shoal}"
IMAGE="shoal-test/busybox:latest"
NCTL="${SHOAL_HOSTS_CONTROLLERS:-3}"
export SHOAL_LOG="${SHOAL_LOG:-info,shoal_controller=debug,shoal_agent=debug}"

log() { printf 'hosts.sh[%s]: %s\n' "$ID" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- names -------------------------------------------------------------------------

# node_index NODE -> i (accepts n3 or 3)
node_index() {
  local n="${1#n}"
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || die "bad node '$1': use n1, n2, .. (or 1, 2, ..)"
  [[ -d "$STATE/n$n" ]] || die "node n$n does not exist in instance $ID (is it up?)"
  echo "$n"
}
netns() { echo "shoal$ID-n$1"; }
veth_host() { echo "vh$ID-$1"; }
veth_node() { echo "vn$ID-$1"; }
node_ip() { echo "$NET.$((10 + $1))"; }
node_dir() { echo "$STATE/n$1"; }
sock() { echo "$(node_dir "$1")/docker.sock"; }
ndocker() { local i="$1"; shift; docker -H "unix://$(sock "$i")" "$@"; }
in_ns() { local i="$1"; shift; nsenter --net="/var/run/netns/$(netns "$i")" "$@"; }
mntns() { echo "$STATE/ns/n$1"; }
# in_node I CMD..: CMD in node I's network and mount namespaces (where its engine and
# agent run).
in_node() {
  local i="$1"
  shift
  nsenter --mount="$(mntns "$i")" --net="/var/run/netns/$(netns "$i")" "$@"
}
DEVDIR=/dev/shoal-test
ctl_addr() { echo "$HOST_IP:$((7369 + $1))"; }
admin_dir() { echo "$STATE/c1/admin"; }
# token ROLE: the join token for ROLE (agent | controller), as saved after init.
token() { [[ -n "${SHOAL_HOSTS_TOKEN:-}" ]] && echo "$SHOAL_HOSTS_TOKEN" || cat "$STATE/$1.token"; }
controllers() {
  local k out=()
  for k in $(seq 1 "$NCTL"); do out+=("$(ctl_addr "$k")"); done
  local IFS=,
  echo "${out[*]}"
}

# --- the command lines, in one place --------------------------------------------------

# controller_cmd K: the command line of controller K (1 inits, the others join 1).
controller_cmd() {
  local k="$1" addr
  addr="$(ctl_addr "$k")"
  CMD=("$SHOAL" controller --data-dir "$STATE/c$k" --listen "$addr" --advertise "$addr")
  if [[ "$k" == 1 ]]; then
    CMD+=(--init)
  else
    CMD+=(--join "$(ctl_addr 1)" --token "$(token controller)")
  fi
  [[ "${SHOAL_HOSTS_METRICS:-}" == 1 ]] && CMD+=(--metrics "$HOST_IP:$((9369 + k))")
  # shellcheck disable=SC2206
  CMD+=(${SHOAL_HOSTS_CONTROLLER_ARGS:-})
}

# agent_cmd I: the command line of node I's agent (run inside its netns).
agent_cmd() {
  local i="$1" extra="SHOAL_HOSTS_AGENT_ARGS_$1"
  CMD=("$SHOAL" agent --addr "$(controllers)" --name "n$i" --advertise "$(node_ip "$i")"
    --docker "unix://$(sock "$i")" --data-dir "$(node_dir "$i")/agent"
    --secrets-dir "$(node_dir "$i")/secrets" --token "$(token agent)")
  [[ "${SHOAL_HOSTS_METRICS:-}" == 1 ]] && CMD+=(--metrics "$(node_ip "$i"):9370")
  # shellcheck disable=SC2206
  CMD+=(${SHOAL_HOSTS_AGENT_ARGS:-} ${!extra:-})
}

# engine_only I: node I runs an engine and no agent (SHOAL_HOSTS_ENGINE_ONLY).
engine_only() {
  local k
  for k in ${SHOAL_HOSTS_ENGINE_ONLY:-}; do [[ "$k" == "$1" ]] && return 0; done
  return 1
}

# --- processes -----------------------------------------------------------------------

# spawn PIDFILE LOG CMD..: run detached (own session, no inherited stdio), record pid.
spawn() {
  local pidfile="$1" logfile="$2"
  shift 2
  setsid "$@" </dev/null >>"$logfile" 2>&1 &
  echo $! >"$pidfile"
}

# alive PID: running and not a zombie (an orphan's zombie may linger unreaped).
alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null &&
    [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# ours PID: PID is alive and is this instance's (its command line names the instance's
# state dir): a pid file can outlive its process, and pids are reused.
ours() {
  alive "${1:-}" && grep -qaF -- "$STATE" "/proc/$1/cmdline" 2>/dev/null
}

# kill9 PID..: SIGKILL, then wait (bounded, 10 s) until each is gone.
kill9() {
  local pid
  for pid in "$@"; do [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 200); do
      alive "$pid" || break
      sleep 0.05
    done
    alive "$pid" && log "warning: process $pid survived SIGKILL for 10 s"
  done
  return 0
}

# pid_of PIDFILE: its pid on a line of its own (dockerd writes no newline).
pid_of() {
  local p=""
  [[ -f "$1" ]] && p="$(tr -dc '0-9' <"$1" 2>/dev/null)"
  [[ -n "$p" ]] && echo "$p"
  return 0
}

# Pids whose command line mentions PATTERN (a path unique to this instance), read
# from /proc so nothing outside the instance can match.
pids_mentioning() {
  grep -laF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | grep -vx "$$" || true
}

# Container processes of node I: what `docker kill` would signal. Read from the engine
# if it answers, and from the runtime's state files otherwise.
container_pids() {
  local i="$1" ids
  if ids="$(timeout 10 docker -H "unix://$(sock "$i")" ps -q 2>/dev/null)" && [[ -n "$ids" ]]; then
    # shellcheck disable=SC2086
    timeout 10 docker -H "unix://$(sock "$i")" inspect -f '{{.State.Pid}}' $ids 2>/dev/null |
      grep -v '^0$' || true
  fi
  # runc's state of the engine's containers (moby namespace), in case the engine is gone.
  local f
  for f in "$(node_dir "$i")"/exec/runtime-runc/moby/*/state.json; do
    [[ -f "$f" ]] && grep -o '"init_process_pid":[0-9]*' "$f" | cut -d: -f2 || true
  done
}

# stop_node I: power cut of node I: containers, agent, engine, containerd and shims get
# SIGKILL at once (containers outlive a SIGKILLed engine otherwise).
stop_node() {
  local i="$1" dir pids p
  dir="$(node_dir "$i")"
  mapfile -t pids < <(
    container_pids "$i"
    pid_of "$dir/agent.pid"
    pid_of "$dir/dockerd.pid"
    # The agent, the engine, its containerd and shims all mention the node's dir on
    # their command lines (data dir, config file, exec-root).
    pids_mentioning "$dir/"
  )
  for p in "${pids[@]}"; do [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null || true; done
  kill9 "${pids[@]}"
  rm -f "$dir/agent.pid"
}

# --- engines -------------------------------------------------------------------------

start_engine() {
  local i="$1" dir
  dir="$(node_dir "$i")"
  mkdir -p "$dir/data" "$dir/exec"
  cat >"$dir/daemon.json" <<EOF
{
  "data-root": "$dir/data",
  "exec-root": "$dir/exec",
  "pidfile": "$dir/dockerd.pid",
  "hosts": ["unix://$(sock "$i")"],
  "bip": "10.$((100 + ID)).$i.1/24",
  "storage-driver": "vfs",
  "log-driver": "json-file",
  "mtu": 1400
}
EOF
  # A killed engine's containerd may linger as an unreaped zombie, which its pidfile
  # would make the new engine wait for instead of starting its own.
  rm -f "$dir/dockerd.pid" "$dir/exec/containerd/containerd.pid" "$dir/exec/containerd/containerd.sock"
  setsid nsenter --mount="$(mntns "$i")" --net="/var/run/netns/$(netns "$i")" \
    dockerd --config-file "$dir/daemon.json" </dev/null >>"$dir/dockerd.log" 2>&1 &
}

# make_mntns I: node I's mount namespace, kept by a bind mount on $(mntns I), with its
# own tmpfs on $DEVDIR.
make_mntns() {
  local i="$1" f
  f="$(mntns "$i")"
  : >"$f"
  unshare --mount="$f" --propagation slave true || die "cannot make the mount namespace of n$i"
  # The copy of $STATE/ns in it would keep the earlier nodes' namespaces alive.
  nsenter --mount="$f" umount -l "$STATE/ns" 2>/dev/null || true
  nsenter --mount="$f" mount -t tmpfs -o mode=755,size=1m "shoal-test-n$i" "$DEVDIR" ||
    die "cannot mount a tmpfs on $DEVDIR in the mount namespace of n$i"
}

# device_name NAME: NAME if it is a plain file name.
device_name() {
  [[ "$1" =~ ^[A-Za-z0-9._-]+$ && "$1" != . && "$1" != .. ]] ||
    die "bad device name '$1': letters, digits, '.', '_' and '-' only"
  echo "$1"
}

cmd_mknod() {
  local i name
  i="$(node_index "$1")"
  name="$(device_name "$2")"
  nsenter --mount="$(mntns "$i")" mknod -m 666 "$DEVDIR/$name" c 1 3 ||
    die "mknod $DEVDIR/$name on n$i failed"
}

cmd_rmdev() {
  local i name
  i="$(node_index "$1")"
  name="$(device_name "$2")"
  nsenter --mount="$(mntns "$i")" rm -f "$DEVDIR/$name"
}

wait_engine() {
  local i="$1"
  for _ in $(seq 1 120); do
    ndocker "$i" version >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  tail -n 20 "$(node_dir "$i")/dockerd.log" >&2 || true
  die "the engine of n$i did not answer within 60 s (log: $(node_dir "$i")/dockerd.log)"
}

start_agent() {
  local i="$1" dir
  dir="$(node_dir "$i")"
  agent_cmd "$i"
  spawn "$dir/agent.pid" "$dir/agent.log" nsenter --mount="$(mntns "$i")" \
    --net="/var/run/netns/$(netns "$i")" "${CMD[@]}"
}

# --- waiting on the cluster ------------------------------------------------------------

shoal_json() {
  "$SHOAL" "$@" --format json --addr "$(controllers)" --credentials "$(admin_dir)" 2>/dev/null
}

# save_tokens: once controller 1 leads, keep both join tokens for the joiners.
# start_controllers: controller 1 inits, then the others join it one at a time (each
# is added as a learner, then promoted); the join tokens are saved after the first.
start_controllers() {
  local k
  for k in $(seq 1 "$NCTL"); do
    controller_cmd "$k"
    spawn "$STATE/c$k.pid" "$STATE/c$k.log" "${CMD[@]}"
    wait_voters "$k"
    [[ "$k" == 1 ]] && save_tokens
  done
  return 0
}

# start_agents N: the agent of every node 1..N that has one; waits until each is
# ready. Leaves their names in NAMES.
start_agents() {
  local i
  NAMES=()
  for i in $(seq 1 "$1"); do
    engine_only "$i" && continue
    start_agent "$i"
    NAMES+=("n$i")
  done
  wait_nodes ready "${NAMES[@]}"
}

save_tokens() {
  local role
  for role in controller agent; do
    "$SHOAL" token show "$role" --addr "$(ctl_addr 1)" --credentials "$(admin_dir)" \
      >"$STATE/$role.token" || die "shoal token show $role failed"
  done
}

# wait_nodes STATUS NODE..: until `shoal nodes` shows each NODE with STATUS (60 s).
wait_nodes() {
  local want="$1" out n ok
  shift
  for _ in $(seq 1 300); do
    out="$(shoal_json nodes | tr -d ' \n' || true)"
    ok=1
    for n in "$@"; do
      grep -q "\"name\":\"$n\"[^}]*\"status\":\"$want\"" <<<"$out" || ok=0
    done
    [[ "$ok" == 1 ]] && return 0
    sleep 0.2
  done
  die "nodes $* not $want within 60 s; shoal nodes: $out"
}

wait_voters() {
  local n="$1" out
  for _ in $(seq 1 300); do
    out="$(shoal_json cluster status | tr -d ' \n' || true)"
    if [[ "$(grep -o '"role":"\(leader\|follower\)"' <<<"$out" | wc -l)" -ge "$n" ]] &&
      ! grep -q '"leader":0' <<<"$out" && [[ -n "$out" ]]; then
      return 0
    fi
    sleep 0.2
  done
  die "no $n voting controllers within 60 s; cluster status: $out"
}

# --- commands ------------------------------------------------------------------------

require() {
  [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, veths, iptables, dockerd)"
  local c
  for c in ip iptables nsenter unshare mount mknod setsid dockerd docker timeout; do
    command -v "$c" >/dev/null || die "'$c' is missing (apt-get install iproute2 iptables util-linux docker.io)"
  done
  [[ -x "$SHOAL" ]] || die "$SHOAL is missing: cargo build -p shoal-cli (or set SHOAL_BIN)"
  docker image inspect "$IMAGE" >/dev/null 2>&1 ||
    die "$IMAGE is not in the host engine: run scripts/build-test-image.sh"
}

cmd_up() {
  local n="${1:-3}" i k
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$n" -le 50 ]] || die "up N: N from 1 to 50, not '$n'"
  require
  mkdir -p "$(dirname "$STATE")"
  if ! mkdir "$STATE" 2>/dev/null; then
    log "instance $ID is in use ($STATE exists): run 'SHOAL_HOSTS_ID=$ID $0 down' or pick another id"
    exit 3
  fi
  trap 'rc=$?; if [[ $rc != 0 ]]; then log "up failed; cleaning up"; cmd_down; fi' EXIT
  log "bridge $BR $HOST_IP/24"
  ip link add "$BR" type bridge
  ip addr add "$HOST_IP/24" dev "$BR"
  ip link set "$BR" up
  # The host engine sets FORWARD's policy to DROP; bridged traffic passes FORWARD.
  iptables -I FORWARD -i "$BR" -o "$BR" -j ACCEPT
  echo "$n" >"$STATE/nodes"
  # Where the nodes' mount namespaces are kept: a private mount (binding a namespace
  # on a shared one is refused).
  mkdir -p "$STATE/ns" "$DEVDIR"
  mount --bind "$STATE/ns" "$STATE/ns"
  mount --make-private "$STATE/ns"
  for i in $(seq 1 "$n"); do
    mkdir -p "$(node_dir "$i")"
    ip netns add "$(netns "$i")"
    ip link add "$(veth_host "$i")" type veth peer name "$(veth_node "$i")"
    ip link set "$(veth_node "$i")" netns "$(netns "$i")"
    ip link set "$(veth_host "$i")" master "$BR" up
    in_ns "$i" ip link set lo up
    in_ns "$i" ip link set "$(veth_node "$i")" name eth0
    in_ns "$i" ip addr add "$(node_ip "$i")/24" dev eth0
    in_ns "$i" ip link set eth0 up
    in_ns "$i" ip route add default via "$HOST_IP"
    make_mntns "$i"
    start_engine "$i"
  done
  log "controllers on $(controllers)"
  start_controllers
  local image="$STATE/image.tar"
  docker save "$IMAGE" -o "$image"
  local pids=()
  for i in $(seq 1 "$n"); do
    (wait_engine "$i" && ndocker "$i" load -q -i "$image" >/dev/null) &
    pids+=($!)
  done
  for k in "${pids[@]}"; do wait "$k" || die "an engine did not come up (logs in $STATE/n*/dockerd.log)"; done
  rm -f "$image"
  start_agents "$n"
  trap - EXIT
  log "up: ${NAMES[*]} ready; SHOAL_ADDR=$(controllers)"
}

cmd_down() {
  set +e
  local d i k
  for d in "$STATE"/n*/; do
    [[ -d "$d" ]] || continue
    i="${d%/}"
    i="${i##*/n}"
    stop_node "$i" &
  done
  wait
  for k in $(seq 1 9); do kill9 "$(pid_of "$STATE/c$k.pid")"; done
  # Anything else of this instance (its paths are on every command line).
  local rest
  mapfile -t rest < <(pids_mentioning "$STATE/")
  kill9 "${rest[@]}"
  # Mounts left under the state dir, deepest first: the nodes' mount namespaces
  # ($STATE/ns/n<i>; with no process left in one, that frees it and all the engine
  # mounted in it: container shm, netns bind mounts, the node's $DEVDIR), then
  # $STATE/ns itself.
  if [[ -d "$STATE" ]]; then
    awk -v s="$STATE/" 'index($2, s) == 1 { print $2 }' /proc/self/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null; done
  fi
  for i in $(seq 1 50); do
    ip netns del "$(netns "$i")" 2>/dev/null
    ip link del "$(veth_host "$i")" 2>/dev/null
  done
  ip link del "$BR" 2>/dev/null
  while iptables -D FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; do :; done
  rm -rf "$STATE"
  set -e
  return 0
}

cmd_cut() {
  local i
  i="$(node_index "$1")"
  local at
  # The cut's time is when the link goes, just before the processes.
  at="$(date +%s%3N)"
  ip link set "$(veth_host "$i")" down
  stop_node "$i" >/dev/null
  log "n$i power-cut"
  echo "$at"
}

cmd_revive() {
  local i
  i="$(node_index "$1")"
  ours "$(pid_of "$(node_dir "$i")/agent.pid")" && die "n$i is running; cut it first"
  ip link set "$(veth_host "$i")" up
  start_engine "$i"
  wait_engine "$i"
  if ! engine_only "$i"; then
    start_agent "$i"
    wait_nodes ready "n$i"
  fi
  log "n$i revived"
}

# start-controller K [ARGS..]: controller K on its data dir, address and log, with ARGS
# (e.g. --restore FILE) in place of its --init/--join when given.
cmd_start_controller() {
  local k="$1"
  shift
  ours "$(pid_of "$STATE/c$k.pid")" && die "controller $k is running"
  controller_cmd "$k"
  if [[ $# -gt 0 ]]; then
    local addr
    addr="$(ctl_addr "$k")"
    CMD=("$SHOAL" controller --data-dir "$STATE/c$k" --listen "$addr" --advertise "$addr" "$@")
  fi
  spawn "$STATE/c$k.pid" "$STATE/c$k.log" "${CMD[@]}"
  log "controller $k started: ${CMD[*]:1}"
}

cmd_stop_agent() {
  local i pid
  i="$(node_index "$1")"
  pid="$(pid_of "$(node_dir "$i")/agent.pid")"
  [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    alive "$pid" || return 0
    sleep 0.05
  done
  die "the agent of n$i did not stop within 10 s of SIGTERM"
}

# new-cluster: the same machines given a new cluster, as a user would make one: every
# controller and agent SIGKILLed and their data dirs deleted (the engines stay, with the
# old cluster's containers and networks), controller 1 initialised again and the others
# joining it (as `up`), every agent started again with the new tokens.
cmd_new_cluster() {
  local n i k
  n="$(cat "$STATE/nodes")"
  for k in $(seq 1 9); do kill9 "$(pid_of "$STATE/c$k.pid")"; done
  for i in $(seq 1 "$n"); do
    kill9 "$(pid_of "$(node_dir "$i")/agent.pid")"
    rm -rf "$(node_dir "$i")/agent" "$(node_dir "$i")/agent.pid"
  done
  for k in $(seq 1 9); do rm -rf "${STATE:?}/c$k" "$STATE/c$k.pid"; done
  rm -f "$STATE/controller.token" "$STATE/agent.token"
  start_controllers
  start_agents "$n"
  log "new-cluster: ${NAMES[*]} ready in a new cluster"
}

cmd_status() {
  local i n
  n="$(cat "$STATE/nodes" 2>/dev/null || echo 0)"
  echo "instance $ID: controllers $(controllers)"
  for i in $(seq 1 "$n"); do
    local link agent engine
    link="$(ip -br link show "$(veth_host "$i")" 2>/dev/null | awk '{print $2}')"
    agent=down engine=down
    alive "$(pid_of "$(node_dir "$i")/agent.pid")" && agent=up
    alive "$(pid_of "$(node_dir "$i")/dockerd.pid")" && engine=up
    echo "n$i $(node_ip "$i") link=$link engine=$engine agent=$agent"
  done
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    cut) cmd_cut "${1:?cut NODE}" ;;
    revive) cmd_revive "${1:?revive NODE}" ;;
    partition) ip link set "$(veth_host "$(node_index "${1:?partition NODE}")")" down ;;
    heal) ip link set "$(veth_host "$(node_index "${1:?heal NODE}")")" up ;;
    kill-controller)
      kill9 "$(pid_of "$STATE/c${1:?kill-controller K}.pid")"
      # A pid file left behind could name another process once the pid is reused.
      rm -f "$STATE/c$1.pid"
      ;;
    start-controller) cmd_start_controller "${1:?start-controller K [ARGS..]}" "${@:2}" ;;
    wipe-controller)
      kill9 "$(pid_of "$STATE/c${1:?wipe-controller K}.pid")"
      rm -rf "${STATE:?}/c$1" "$STATE/c$1.pid"
      ;;
    stop-agent) cmd_stop_agent "${1:?stop-agent NODE}" ;;
    start-agent) start_agent "$(node_index "${1:?start-agent NODE}")" ;;
    new-cluster) cmd_new_cluster ;;
    docker)
      local i
      i="$(node_index "${1:?docker NODE ARGS..}")"
      shift
      ndocker "$i" "$@"
      ;;
    exec)
      local i
      i="$(node_index "${1:?exec NODE CMD..}")"
      shift
      in_node "$i" "$@"
      ;;
    mknod) cmd_mknod "${1:?mknod NODE NAME}" "${2:?mknod NODE NAME}" ;;
    rmdev) cmd_rmdev "${1:?rmdev NODE NAME}" "${2:?rmdev NODE NAME}" ;;
    addr) controllers ;;
    credentials) admin_dir ;;
    ip) node_ip "$(node_index "${1:?ip NODE}")" ;;
    status) cmd_status ;;
    *)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

main "$@"
