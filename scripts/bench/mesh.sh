#!/usr/bin/env bash
# Benchmark: the routing mesh's cost, on 3 test hosts (scripts/hosts.sh).
#
# One httpd replica (pinned to n1, published as 8080). From inside n2's network
# namespace, a Python client with CONCURRENCY threads sends REQUESTS HTTP GETs (a new
# TCP connection each, as busybox httpd closes after each answer) to:
#   1. straight to the replica's container address (routed host-gw, no proxy);
#   2. n1:8080, the mesh on the replica's own node (one proxy hop);
#   3. n2:8080, the mesh on a node with no replica (proxy on n2, then routed to n1).
# Prints requests per second and p50/p99 latency of each; asserts nothing.
#
# Usage: scripts/bench/mesh.sh [REQUESTS] [CONCURRENCY]   (root; defaults 5000 and 8)
#   SHOAL_BIN=PATH   use this shoal binary instead of building a release one
#   SHOAL_HOSTS_ID   first instance id to try for hosts.sh (default 71)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

REQUESTS="${1:-5000}"
CONCURRENCY="${2:-8}"
export SHOAL_HOSTS_ID="${SHOAL_HOSTS_ID:-71}"
command -v python3 >/dev/null || { echo "mesh.sh needs python3" >&2; exit 2; }
if [[ -z "${SHOAL_BIN:-}" ]]; then
  cargo build --release -q -p shoal-cli
  SHOAL_BIN="$PWD/target/release/shoal"
fi
export SHOAL_BIN
export SHOAL_LOG="${SHOAL_LOG:-info}"
HOSTS=scripts/hosts.sh
WORK="$(mktemp -d)"
STACK=benchmesh

# The first free instance id from SHOAL_HOSTS_ID on (hosts.sh up exits 3 on one in
# use); only an instance this script brought up is taken down.
UP=""
cleanup() {
  [[ -n "$UP" ]] && bash "$HOSTS" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 20); do
  rc=0
  bash "$HOSTS" up 3 >/dev/null || rc=$?
  if [[ "$rc" == 0 ]]; then UP=1; break; fi
  [[ "$rc" == 3 ]] || { echo "hosts.sh up failed ($rc)" >&2; exit 1; }
  export SHOAL_HOSTS_ID=$((SHOAL_HOSTS_ID % 99 + 1))
done
[[ -n "$UP" ]] || { echo "no free hosts.sh instance id" >&2; exit 1; }
ADDR="$(bash "$HOSTS" addr)"
SHOAL_CREDENTIALS="$(bash "$HOSTS" credentials)"
export SHOAL_CREDENTIALS

cat >"$WORK/compose.yaml" <<EOF
name: $STACK
services:
  web:
    image: shoal-test/busybox:latest
    command: ["sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 8000 -h /tmp"]
    stop_grace_period: 1s
    ports: ["8080:8000"]
    deploy:
      placement:
        constraints: ["node.hostname==n1"]
EOF
"$SHOAL_BIN" deploy -c "$WORK/compose.yaml" --addr "$ADDR" >/dev/null
cid="$(bash "$HOSTS" docker n1 ps -q --filter "label=io.shoal.stack=$STACK")"
replica="$(bash "$HOSTS" docker n1 inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")"
n1="$(bash "$HOSTS" ip n1)"
n2="$(bash "$HOSTS" ip n2)"

cat >"$WORK/load.py" <<'PY'
import socket, sys, threading, time
host, port, total, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lat, errors, lock, next_i = [], [0], threading.Lock(), [0]
def one():
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b: break
        data += b
    s.close()
    return data.startswith(b"HTTP/1.") and b" 200 " in data[:16]
def worker():
    while True:
        with lock:
            if next_i[0] >= total: return
            next_i[0] += 1
        t = time.perf_counter()
        try: ok = one()
        except OSError: ok = False
        d = time.perf_counter() - t
        with lock:
            if ok: lat.append(d)
            else: errors[0] += 1
for _ in range(2):  # warm-up of the path
    try: one()
    except OSError: pass
t0 = time.perf_counter()
ts = [threading.Thread(target=worker) for _ in range(conc)]
for t in ts: t.start()
for t in ts: t.join()
el = time.perf_counter() - t0
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
print(f"{len(lat) / el:8.0f} req/s  p50 {q(0.50):6.2f} ms  p99 {q(0.99):6.2f} ms  errors {errors[0]}")
PY

# The mesh on n2 needs the replica to be listed first (bounded wait).
for _ in $(seq 1 100); do
  bash "$HOSTS" exec n2 python3 -c "import socket; socket.create_connection(('$n2', 8080), timeout=1).close()" 2>/dev/null && break
  sleep 0.1
done

echo "mesh benchmark: $REQUESTS requests, $CONCURRENCY concurrent, client on n2 (binary: $SHOAL_BIN)"
printf '%-34s' "straight to the replica $replica:8000"; bash "$HOSTS" exec n2 python3 "$WORK/load.py" "$replica" 8000 "$REQUESTS" "$CONCURRENCY"
printf '%-34s' "mesh on the replica's node n1"; bash "$HOSTS" exec n2 python3 "$WORK/load.py" "$n1" 8080 "$REQUESTS" "$CONCURRENCY"
printf '%-34s' "mesh on a node without it, n2"; bash "$HOSTS" exec n2 python3 "$WORK/load.py" "$n2" 8080 "$REQUESTS" "$CONCURRENCY"
