#!/usr/bin/env bash
# Benchmark: time from `shoal deploy` to 10 healthy replicas, against the same 10
# containers started with plain `docker run` and waited on until healthy.
# Prints the figures; asserts nothing. Usage: scripts/bench/deploy.sh [REPLICAS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

N="${1:-10}"
IMAGE=shoal-test/busybox:latest
PORT=$((20000 + RANDOM % 20000))
WORK="$(mktemp -d)"
STACK=benchdeploy
NODE=bench-node
UP_PID=""

cleanup() {
  [[ -n "$UP_PID" ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  docker ps -aq --filter "label=io.shoal.node=$NODE" | xargs -r docker rm -f >/dev/null
  docker ps -aq --filter "label=shoal.bench=plain" | xargs -r docker rm -f >/dev/null
  docker network rm "shoal-$STACK" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

bash scripts/build-test-image.sh
cargo build --release -q -p shoal-cli
SHOAL=target/release/shoal

HEALTH='wget -q -O- http://127.0.0.1:8080/ >/dev/null'
CMD='mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www'

# --- plain docker run -------------------------------------------------------------
start=$(now_ms)
for i in $(seq 1 "$N"); do
  docker run -d --label shoal.bench=plain --health-cmd "$HEALTH" --health-interval 1s \
    --health-timeout 2s --health-retries 3 "$IMAGE" sh -c "$CMD" >/dev/null
done
for _ in $(seq 1 600); do
  healthy=$(docker ps -q --filter label=shoal.bench=plain --filter health=healthy | wc -l)
  [[ "$healthy" -ge "$N" ]] && break
  sleep 0.1
done
plain=$(( $(now_ms) - start ))
docker ps -aq --filter "label=shoal.bench=plain" | xargs -r docker rm -f >/dev/null

# --- shoal -------------------------------------------------------------------------
"$SHOAL" up --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --name "$NODE" \
  >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 100); do
  "$SHOAL" nodes --addr "127.0.0.1:$PORT" --format json 2>/dev/null | grep -q '"ready"' && break
  sleep 0.1
done
cat >"$WORK/compose.yaml" <<YAML
name: $STACK
services:
  web:
    image: $IMAGE
    command: ["sh", "-c", "$CMD"]
    deploy:
      replicas: $N
    healthcheck:
      test: ["CMD-SHELL", "$HEALTH"]
      interval: 1s
      timeout: 2s
      retries: 3
YAML
start=$(now_ms)
"$SHOAL" deploy -c "$WORK/compose.yaml" --addr "127.0.0.1:$PORT" >/dev/null
shoal_ms=$(( $(now_ms) - start ))

echo "replicas:                        $N"
echo "docker run, until all healthy:   ${plain} ms"
echo "shoal deploy, until all healthy: ${shoal_ms} ms"
echo "overhead per replica:            $(( (shoal_ms - plain) / N )) ms"
