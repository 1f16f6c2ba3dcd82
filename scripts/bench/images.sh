#!/usr/bin/env bash
# Benchmark: getting an image to 3 test hosts (scripts/hosts.sh) with no registry.
#
# A ~200 MB image of several layers (4 x 50 MB of random bytes on the test image, then
# a 5 MB top layer) is built on a fourth engine that is not a node (the deploying
# machine), then:
#   docker save | load   `docker save IMG | docker -H NODE load` to each node in turn
#   shoal deploy         a global service running it: the CLI pushes the blobs the
#                        cluster lacks to the controllers, each node's agent loads the
#                        layers its engine lacks; timed until every replica runs
# then the same after a change of the top layer only (a rebuild with another build arg).
# Bytes: for save|load the stream's size times the nodes; for shoal the bytes pushed
# (the CLI's own count) plus the bytes the agents received
# (shoal_agent_image_bytes_received_total). Asserts nothing.
# Usage: scripts/bench/images.sh   (root)
#   SHOAL_BIN=PATH   use this shoal binary instead of building a release one
#   SHOAL_HOSTS_ID   first instance id to try for hosts.sh (default 61)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export SHOAL_HOSTS_ID="${SHOAL_HOSTS_ID:-61}"
if [[ -z "${SHOAL_BIN:-}" ]]; then
  cargo build --release -q -p shoal-cli
  SHOAL_BIN="$PWD/target/release/shoal"
fi
export SHOAL_BIN
export SHOAL_LOG="${SHOAL_LOG:-info}"
export SHOAL_HOSTS_ENGINE_ONLY=4
export SHOAL_HOSTS_AGENT_ARGS="--metrics 0.0.0.0:9464"
HOSTS=scripts/hosts.sh
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for _ in $(seq 1 20); do
  rc=0
  bash "$HOSTS" up 4 >/dev/null || rc=$?
  [[ "$rc" != 3 ]] && break
  SHOAL_HOSTS_ID=$((SHOAL_HOSTS_ID % 99 + 1))
done
[[ "$rc" == 0 ]] || { echo "hosts.sh up failed (exit $rc)" >&2; exit 1; }
trap 'bash "$HOSTS" down || true; rm -rf "$WORK"' EXIT
ADDR="$(bash "$HOSTS" addr)"
SHOAL_CREDENTIALS="$(bash "$HOSTS" credentials)"
export SHOAL_CREDENTIALS
STATE="/tmp/shoal-hosts/$SHOAL_HOSTS_ID"
export DOCKER_HOST="unix://$STATE/n4/docker.sock"
shoal() { "$SHOAL_BIN" "$@" --addr "$ADDR"; }
node_docker() { docker -H "unix://$STATE/$1/docker.sock" "${@:2}"; }
now_ms() { date +%s%3N; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# Bytes the agents received from the cluster's store so far, summed over n1..n3.
agent_bytes() {
  local total=0 i v
  for i in 1 2 3; do
    v="$(timeout 5 curl -s "http://10.77.$SHOAL_HOSTS_ID.$((10 + i)):9464/metrics" |
      awk '/^shoal_agent_image_bytes_received_total/ { print $2 }')"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/Dockerfile" <<'DOCKERFILE'
FROM shoal-test/busybox:latest
RUN head -c 50000000 /dev/urandom > /l1
RUN head -c 50000000 /dev/urandom > /l2
RUN head -c 50000000 /dev/urandom > /l3
RUN head -c 50000000 /dev/urandom > /l4
ARG V=1
RUN echo "$V" > /version && head -c 5000000 /dev/urandom > /top
CMD ["sleep", "1000000"]
DOCKERFILE
echo "building the image on the deploying engine (n4)..." >&2
docker build -q -t bench-img:v1 --build-arg V=1 "$WORK/ctx" >/dev/null
docker build -q -t bench-img:v2 --build-arg V=2 "$WORK/ctx" >/dev/null
size_v1="$(docker save bench-img:v1 | wc -c)"
size_v2="$(docker save bench-img:v2 | wc -c)"

save_load() {
  local tag="$1" t0 t1
  t0="$(now_ms)"
  for n in n1 n2 n3; do docker save "bench-img:$tag" | node_docker "$n" load -q >/dev/null; done
  t1="$(now_ms)"
  echo $((t1 - t0))
}


compose() {
  cat >"$WORK/compose.yaml" <<YAML
services:
  b:
    image: bench-img:$1
    deploy:
      mode: global
      update_config: {parallelism: 3, order: stop-first}
    stop_grace_period: 1s
YAML
}
# deploy_timed TAG: deploys the service at TAG; prints "MS PUSHED_BYTES".
deploy_timed() {
  local t0 t1 out pushed
  compose "$1"
  t0="$(now_ms)"
  if ! out="$(shoal deploy -c "$WORK/compose.yaml" --stack bench 2>&1)"; then
    echo "shoal deploy failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  t1="$(now_ms)"
  pushed="$(grep -o 'pushed .*: [0-9]* of [0-9]* layers, [0-9]* bytes' <<<"$out" | awk '{print $(NF-1)}' | tail -1)"
  echo "$((t1 - t0)) ${pushed:-0}"
}
echo "shoal deploy (push + agents load)..." >&2
b0="$(agent_bytes)"
r1="$(deploy_timed v1)"
read -r sh1 push1 <<<"$r1"
b1="$(agent_bytes)"
r2="$(deploy_timed v2)"
read -r sh2 push2 <<<"$r2"
b2="$(agent_bytes)"

# The baseline, on engines cleared of what shoal loaded (the stack removed first).
shoal rm bench >/dev/null
for _ in $(seq 1 60); do
  left=0
  for n in n1 n2 n3; do
    [[ -n "$(node_docker "$n" ps -aq --filter label=io.shoal.stack=bench)" ]] && left=1
  done
  [[ "$left" == 0 ]] && break
  sleep 1
done
for n in n1 n2 n3; do
  node_docker "$n" images -q --filter reference='bench-img*' | xargs -r docker -H "unix://$STATE/$n/docker.sock" rmi -f >/dev/null
done
echo "docker save | load, to n1, n2, n3 in turn..." >&2
sl1="$(save_load v1)"
sl2="$(save_load v2)"

printf '\n%-44s %10s %16s\n' "image to 3 nodes ($(mib "$size_v1"), 6 layers)" "time" "bytes moved"
printf '%-44s %8s ms %16s\n' "docker save | docker -H NODE load, in turn" "$sl1" "$(mib $((size_v1 * 3)))"
printf '%-44s %8s ms %16s\n' "shoal deploy (push + agents)" "$sh1" "$(mib $((push1 + b1 - b0)))"
printf '%-44s\n' "after a change of the top layer only (5 MB)"
printf '%-44s %8s ms %16s\n' "docker save | docker -H NODE load, in turn" "$sl2" "$(mib $((size_v2 * 3)))"
printf '%-44s %8s ms %16s\n' "shoal deploy (push + agents, rolling)" "$sh2" "$(mib $((push2 + b2 - b1)))"
