#!/usr/bin/env bash
# Benchmark of `x-shoal-autoscale` on one node (`shoal up`: a controller and an agent in
# one process), with busybox httpd replicas serving a metrics file this script rewrites:
#   1. the time from a queue gauge crossing its target to the autoscaler's decision, and
#      to the new replicas healthy;
#   2. the CPU the shoal process spends while 100 replicas are scraped every 5 s, against
#      the same 100 replicas not autoscaled (the difference is the scraping: the agent's
#      reads and the leader's decisions).
# Prints the figures; asserts nothing. Usage: scripts/bench/autoscale.sh [REPLICAS] [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

N="${1:-100}"
SECONDS_MEASURED="${2:-60}"
IMAGE=shoal-test/busybox:latest
PORT=$((20000 + RANDOM % 20000))
WORK="$(mktemp -d)"
chmod 755 "$WORK"
NODE=bench-autoscale
UP_PID=""

cleanup() {
  [[ -n "$UP_PID" ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  docker ps -aq --filter "label=io.shoal.node=$NODE" | xargs -r docker rm -f >/dev/null
  for s in benchscale benchscrape; do docker network rm "shoal-$s" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
# User + system CPU of a process, in ms.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"; }
shoal() { "$SHOAL" "$@" --addr "127.0.0.1:$PORT" --credentials "$WORK/data/controller/admin"; }
# The `shoal services` field $2 of service $1 (python reads the JSON).
field() {
  shoal services --format json 2>/dev/null | python3 -c "
import json, sys
for s in json.load(sys.stdin):
    if s['stack'] + '/' + s['name'] == '$1':
        v = s
        for k in '$2'.split('.'):
            v = v.get(k, {}) if isinstance(v, dict) else {}
        print(v if v != {} else '')
" 2>/dev/null || true
}
wait_for() { # SERVICE FIELD MIN LIMIT_S
  for _ in $(seq 1 $(($4 * 10))); do
    v="$(field "$1" "$2")"
    [[ -n "$v" && "$v" -ge "$3" ]] && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1 $2 >= $3" >&2
  return 1
}

bash scripts/build-test-image.sh
cargo build --release -q -p shoal-cli
SHOAL=target/release/shoal

"$SHOAL" up --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --name "$NODE" \
  >"$WORK/up.log" 2>&1 &
UP_PID=$!
ready=""
for _ in $(seq 1 600); do
  shoal nodes --format json 2>/dev/null | grep -q '"ready"' && { ready=1; break; }
  sleep 0.1
done
[[ -n "$ready" ]] || { echo "shoal up did not get ready within 60 s:" >&2; tail -20 "$WORK/up.log" >&2; exit 1; }

mkdir -p "$WORK/www"
metrics() { printf '# TYPE queue_depth gauge\nqueue_depth %s\n' "$1" >"$WORK/www/.m" && mv "$WORK/www/.m" "$WORK/www/metrics"; }
service() { # NAME REPLICAS AUTOSCALE(yes|no) HEALTHCHECK(yes|no)
  cat <<YAML
  $1:
    image: $IMAGE
    command: ["httpd", "-f", "-p", "9100", "-h", "/www"]
    volumes: ["$WORK/www:/www:ro"]
    stop_grace_period: 1s
    deploy:
      replicas: $2
YAML
  # Checked every second: only where the figure is "healthy" (100 replicas' checks
  # would cost more than what part 2 measures).
  if [[ "${4:-no}" == yes ]]; then
    cat <<YAML
    healthcheck:
      test: ["CMD-SHELL", "timeout 2 wget -q -O- http://127.0.0.1:9100/metrics >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 3
YAML
  fi
  if [[ "$3" == yes ]]; then
    cat <<YAML
    x-shoal-autoscale:
      min: $2
      max: $(($2 * 3))
      metrics:
        - scrape: { port: 9100, gauge: queue_depth, per_replica: 10 }
YAML
  fi
}

# --- 1. signal to healthy replicas ---------------------------------------------------
metrics 5
{ echo "name: benchscale"; echo "services:"; service web 2 yes yes; } >"$WORK/scale.yaml"
shoal deploy -c "$WORK/scale.yaml" >/dev/null
wait_for benchscale/web healthy 2 60
sleep 6 # one quiet decision at the target
metrics 20 # 2 replicas x 20 = 40 against 10 each: 4 replicas
crossed=$(now_ms)
wait_for benchscale/web autoscale.desired 4 60
decided=$(( $(now_ms) - crossed ))
wait_for benchscale/web healthy 4 120
healthy=$(( $(now_ms) - crossed ))
shoal rm benchscale >/dev/null

# --- 2. CPU of scraping N replicas every 5 s ----------------------------------------
metrics 10
measure() { # AUTOSCALE -> CPU ms of the shoal process over SECONDS_MEASURED
  { echo "name: benchscrape"; echo "services:"; service w "$N" "$1" no; } >"$WORK/scrape.yaml"
  shoal deploy -c "$WORK/scrape.yaml" --timeout 600 >/dev/null
  wait_for benchscrape/w healthy "$N" 600
  sleep 5
  local before
  before=$(cpu_ms "$UP_PID")
  sleep "$SECONDS_MEASURED"
  echo $(( $(cpu_ms "$UP_PID") - before ))
}
plain=$(measure no)
scraped=$(measure yes)
# The same stack deployed again with autoscale: no rollout (the count and its
# autoscaler change no container), so the replicas are the same.
per_interval=$(( (scraped - plain) * 5000 / (SECONDS_MEASURED * 1000) ))

echo "signal crossed to decision:            ${decided} ms"
echo "signal crossed to 4 healthy replicas:  ${healthy} ms"
echo "replicas scraped every 5 s:            $N"
echo "shoal up CPU over ${SECONDS_MEASURED} s, not autoscaled:   ${plain} ms"
echo "shoal up CPU over ${SECONDS_MEASURED} s, autoscaled:       ${scraped} ms"
share=$(awk -v d=$((scraped - plain)) -v s="$SECONDS_MEASURED" 'BEGIN { printf "%.1f", d * 100 / (s * 1000) }')
echo "scraping cost (agent + leader):        ${per_interval} ms CPU per 5 s interval (${share}% of one core)"
