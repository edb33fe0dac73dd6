#!/usr/bin/env bash
# One place for every install step the project needs beyond the Rust toolchain (with the C
# compiler rustup needs to link, and python3), so the two README commands work on a fresh
# Debian machine. Sourced by demo.sh and test.sh; `setup.sh --test` also installs what only
# the test suite uses. scripts/fresh-machine-check.sh proves it in a clean Debian root.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "petkv needs the Rust toolchain (cargo); install it with rustup first" >&2
  exit 1
fi

# Debian packages, installed only when missing and only by root (a non-root user is told).
petkv_apt_install() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: these Debian packages are missing and only root can install them: ${missing[*]}" >&2
    return 0
  fi
  echo "setup: installing ${missing[*]}" >&2
  # A fresh machine's package lists may be empty or stale: update once per run of this script.
  if [ -z "${PETKV_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    export PETKV_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# protoc: client/build.rs and node/build.rs run the protoc of the protoc-bin-vendored crate
# themselves, but the harness's optional `etcd` feature (built by the suite's `--all-features`)
# compiles etcd-client, whose build script runs $PROTOC or a protoc on the PATH. Point PROTOC
# at the same vendored binary, found through cargo's own metadata (the crate is in the lock
# file).
petkv_vendored_protoc() {
  local arch
  case "$(uname -m)" in
    x86_64) arch=x86_64 ;;
    aarch64) arch=aarch_64 ;;
    i?86) arch=x86_32 ;;
    ppc64le) arch=ppcle_64 ;;
    s390x) arch=s390_64 ;;
    *) return 1 ;;
  esac
  local manifest
  manifest=$(cargo metadata --format-version 1 --locked 2>/dev/null \
    | grep -o "\"manifest_path\":\"[^\"]*/protoc-bin-vendored-linux-${arch}-[^\"/]*/Cargo.toml\"" \
    | head -n 1 | sed -e 's/^"manifest_path":"//' -e 's/"$//') || return 1
  [ -n "$manifest" ] || return 1
  local protoc
  protoc="$(dirname "$manifest")/bin/protoc"
  [ -f "$protoc" ] || return 1
  # Cargo unpacks crate files without their execute bits on some setups.
  [ -x "$protoc" ] || chmod +x "$protoc" 2>/dev/null || true
  printf '%s\n' "$protoc"
}

if [ -z "${PROTOC:-}" ]; then
  if protoc_path=$(petkv_vendored_protoc); then
    export PROTOC="$protoc_path"
  elif ! command -v protoc >/dev/null 2>&1; then
    echo "note: no vendored protoc for $(uname -m); the harness's etcd feature needs protoc on the PATH" >&2
  fi
fi

# jemalloc (the node's allocator, tikv-jemalloc-sys) is built from C with make.
petkv_apt_install make

# The test suite's pod-mode tests use iproute2 (network namespaces, a bridge); the deploy
# checks use python3's venv module to install their linters from PyPI; the etcd API tests
# drive petkv's etcd port with etcd's own etcdctl (Debian's etcd-client).
if [ "${1:-}" = "--test" ]; then
  petkv_apt_install iproute2 python3-venv etcd-client
fi
