#!/usr/bin/env bash
# Builds shoal-test/busybox:latest, the image the Docker tests use, from Debian's
# busybox-static (no registry is needed). Idempotent: does nothing if the image exists,
# unless --force is given.
set -euo pipefail

IMAGE="${SHOAL_TEST_IMAGE:-shoal-test/busybox:latest}"

if [[ "${1:-}" != "--force" ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

BUSYBOX="$(command -v busybox || true)"
if [[ -z "$BUSYBOX" ]] || ! "$BUSYBOX" --list >/dev/null 2>&1 \
  || ! ldd "$BUSYBOX" 2>&1 | grep -q "not a dynamic executable"; then
  if [[ ! -x /bin/busybox ]] || ! ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq busybox-static >/dev/null
  fi
  BUSYBOX=/bin/busybox
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/usr/bin" "$ROOT/tmp" "$ROOT/www" "$ROOT/etc"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [[ "$applet" == busybox ]] && continue
  ln -sf busybox "$ROOT/bin/$applet"
done
chmod 1777 "$ROOT/tmp"
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
echo "nobody:x:65534:65534:nobody:/:/bin/sh" >>"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"
echo "nogroup:x:65534:" >>"$ROOT/etc/group"
echo "shoal test" >"$ROOT/www/index.html"

tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/bin:/sbin:/usr/bin' \
  --change 'CMD ["sh"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
