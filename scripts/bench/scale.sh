#!/usr/bin/env bash
# Scheduler and many-node benchmarks; each prints its own figures.
#   scheduler: placements/s for 100,000 replicas on 1,000 nodes (one core)
#   views: the agent sessions' views per applied entry, 10,000 and 100,000 replicas
#   scale_deploy: 10,000 replicas onto 100 fake agents until running; RSS with 1,000 tasks;
#     node loss at 3 and 1,000 nodes (SHOAL_BENCH_BIG=1 adds 100,000 onto 1,000 agents:
#     the controller's CPU over the deploy and at rest, and a restart with that state)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -p shoal-controller --bench scheduler
cargo bench -p shoal-controller --bench views
cargo bench -p shoal-tests --bench scale_deploy
