#!/usr/bin/env bash
# Runs shoal's whole test suite on a machine with Rust and Docker, installing what it
# needs: the busybox test image (from Debian's busybox-static) and a running engine.
#
#   scripts/test.sh            # everything
#   SHOAL_TEST_ARGS=... scripts/test.sh   # extra arguments for the test binaries
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*"; }

# A Docker engine must answer: the end-to-end tests drive real containers.
if ! docker info >/dev/null 2>&1; then
  if command -v dockerd >/dev/null 2>&1; then
    log "starting dockerd"
    (dockerd >/tmp/shoal-test-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers (docker info)" >&2; exit 1; }
fi

# The multi-host tests (tests/tests/e2e_hosts.rs, scripts/hosts.sh) need these,
# cli/tests/install.rs checks the units `shoal install` writes with systemd-analyze, and
# tests/tests/e2e_autoscale.rs queries a real Prometheus server, and
# tests/tests/e2e_dashboard.rs drives headless Chromium through chromedriver.
missing=()
for c in ip:iproute2 iptables:iptables nsenter:util-linux systemd-analyze:systemd prometheus:prometheus chromium:chromium chromedriver:chromium-driver; do
  command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c##*:}")
done
if [[ ${#missing[@]} -gt 0 ]] && command -v apt-get >/dev/null 2>&1; then
  log "installing ${missing[*]} for the multi-host and install tests"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "building the test image"
bash scripts/build-test-image.sh

# A real PostgreSQL for the volume tests (tests/tests/e2e_volumes.rs), from Debian's
# packages (debootstrap, cached under /var/cache/debian-image after the first time).
log "building the PostgreSQL image"
bash scripts/build-postgres-image.sh

# The Compose conformance corpus lives beside the repository (../shared).
if [[ -z "${SHOAL_COMPOSE_CORPUS:-}" && -d ../shared/compose-corpus ]]; then
  SHOAL_COMPOSE_CORPUS="$(cd ../shared/compose-corpus && pwd)"
  export SHOAL_COMPOSE_CORPUS
fi

log "building (once, for every test)"
cargo build --workspace --all-targets

log "every test: unit, in-process, then end-to-end on Docker"
# One invocation over the whole workspace, so cargo reuses the build above (selecting
# fewer packages would change the unified features and rebuild everything). One test
# at a time within each test binary: the end-to-end tests share the Docker engine and
# the machine's ports; cargo runs the binaries one after another anyway.
# shellcheck disable=SC2086
cargo test --workspace --no-fail-fast -- --test-threads=1 ${SHOAL_TEST_ARGS:-}
