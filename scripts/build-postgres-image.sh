#!/usr/bin/env bash
# Makes shoal-test/postgres:15, a real PostgreSQL for the volume tests
# (tests/tests/e2e_volumes.rs), from Debian's postgresql-15 with
# ../shared/tools/debian-image.sh (debootstrap from the machine's Debian mirror, cached).
#
# The rootfs that tool imports has its top directory mode 0700 (a mktemp dir) and no
# PATH; on engines with the vfs storage driver (the test hosts) a non-root user then
# cannot reach any file. So the image is exported once more with `/` at 0755, PATH set,
# and a label saying so; an image with that label is kept as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=shoal-test/postgres:15
BASE=shoal-test/postgres-base:15
LABEL=io.shoal.test.rootfs
if [[ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null)" == fixed ]]; then
  exit 0
fi
tool=../shared/tools/debian-image.sh
[[ -f "$tool" ]] || { echo "error: $tool is missing (the shared tools beside the repository)" >&2; exit 1; }
bash "$tool" "$BASE" postgresql-15 >/dev/null
cid=$(docker create "$BASE" /bin/true)
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
docker export "$cid" | python3 -c '
import sys, tarfile
src = tarfile.open(fileobj=sys.stdin.buffer, mode="r|")
dst = tarfile.open(fileobj=sys.stdout.buffer, mode="w|")
seen_root = False
for m in src:
    if m.name in (".", "./", ""):
        m.mode, seen_root = 0o755, True
    dst.addfile(m, src.extractfile(m) if m.isreg() else None)
if not seen_root:
    root = tarfile.TarInfo("./")
    root.type, root.mode = tarfile.DIRTYPE, 0o755
    dst.addfile(root)
dst.close()
' | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL $LABEL=fixed" - "$IMAGE" >/dev/null
echo "$IMAGE"
