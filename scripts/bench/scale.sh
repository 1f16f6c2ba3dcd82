#!/usr/bin/env bash
# Scheduler and many-node benchmarks; each prints its own figures.
#   scheduler: placements/s for 100,000 replicas on 1,000 nodes (one core)
#   scale_deploy: 10,000 replicas onto 100 fake agents until running; RSS with 1,000 tasks
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -p shoal-controller --bench scheduler
cargo bench -p shoal-tests --bench scale_deploy
