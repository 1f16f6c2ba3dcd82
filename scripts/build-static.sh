#!/usr/bin/env bash
# Builds a static Linux `shoal` (musl): one file to copy onto any x86-64 Linux machine,
# whatever its C library, before `shoal install controller|agent`.
#
#   scripts/build-static.sh     # -> target/x86_64-unknown-linux-musl/release/shoal
#
# Needs the Rust target x86_64-unknown-linux-musl (added with rustup if missing) and a C
# compiler for it: `ring` (TLS) compiles C and assembly, so Debian's `musl-tools`
# (musl-gcc) is installed with apt-get when missing.
#
# A static binary cannot dlopen: NVML is not found, so on GPU nodes run the glibc build
# (`cargo build --release`) or give the agent `--gpu-inventory FILE`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=x86_64-unknown-linux-musl
log() { printf '==> %s\n' "$*"; }

if ! rustup target list --installed | grep -qx "$target"; then
  log "adding the Rust target $target"
  rustup target add "$target"
fi

if ! command -v musl-gcc >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    log "installing musl-tools (musl-gcc, the C compiler ring needs for $target)"
    apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null
  fi
  command -v musl-gcc >/dev/null 2>&1 || {
    echo "error: musl-gcc not found: install musl-tools (Debian/Ubuntu) or musl-gcc" >&2
    exit 1
  }
fi

log "building shoal for $target (release)"
CC_x86_64_unknown_linux_musl=musl-gcc \
  cargo build --release --target "$target" -p shoal-cli --bin shoal

bin="target/$target/release/shoal"
# `file` says "statically linked" (or "static-pie linked"); ldd says so too.
desc=$(file -b "$bin")
if ! grep -Eq 'static(ally|-pie) linked' <<<"$desc"; then
  echo "error: $bin is not statically linked: $desc" >&2
  exit 1
fi
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "error: $bin loads shared libraries:" >&2
  ldd "$bin" >&2
  exit 1
fi
log "$bin: $desc"
"$bin" --version
