#!/usr/bin/env bash
# Builds the shoal of an earlier commit, for the rolling-upgrade test
# (tests/tests/e2e_upgrade.rs), and prints the binary's path. Reused when built before.
#
#   scripts/old-shoal.sh [REV]     default: the release the upgrade test starts from
#
# The sources come from this clone's history (`git archive`), so it needs a clone that
# holds REV (any non-shallow clone of main does). Built with its own target dir under
# target/old/, so the current build is never touched.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The last release before wire protocols were numbered (issue 14's, stop 25).
REV="${1:-23ddcad}"
log() { echo "old-shoal.sh: $*" >&2; }

full="$(git -C "$ROOT" rev-parse --verify --quiet "$REV^{commit}")" || {
  log "commit $REV is not in this clone ($ROOT): clone without --depth to build it"
  exit 1
}
out="$ROOT/target/old/${full:0:12}"
if [[ -x "$out/shoal" ]]; then
  echo "$out/shoal"
  exit 0
fi
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
git -C "$ROOT" archive "$full" | tar -x -C "$src"
log "building shoal ${full:0:12} (a few minutes the first time)"
CARGO_TARGET_DIR="$ROOT/target/old/build" cargo build --quiet -p shoal-cli \
  --manifest-path "$src/Cargo.toml" >&2
mkdir -p "$out"
cp "$ROOT/target/old/build/debug/shoal" "$out/shoal"
echo "$out/shoal"
