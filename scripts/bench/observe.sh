#!/usr/bin/env bash
# What watching the cluster costs its controller, with 1,000 tasks on 10 fake agents in
# one process: the CPU per `/metrics` scrape and the page's size, and the CPU of the
# dashboard's live updates (`shoal dashboard` with 8 live pages open for 20 s), with RSS.
# Figures are printed (see tests/benches/observe.rs for how each is taken).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release -q -p shoal-cli
cargo bench -q -p shoal-tests --bench observe
