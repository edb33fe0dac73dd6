#!/usr/bin/env bash
# Installs what `petkv-harness bench --compare etcd` needs on Debian: the etcd server
# (`etcd-server`, 3.4.x) and protoc (`protobuf-compiler`) with the well-known .proto files
# (`libprotobuf-dev`: google/protobuf/descriptor.proto), which the `etcd-client` crate's
# build script needs. Idempotent: installs only what is missing, runs `apt-get update` at most
# once. Then build the harness with: cargo build --release -p petkv-harness --features etcd
set -euo pipefail
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
if [ ${#missing[@]} -eq 0 ]; then
  echo "etcd, protoc and the well-known .proto files are already installed"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Update the package lists once, only when apt cannot find the packages.
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
  $sudo apt-get update
fi
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
# Debian's package starts a system etcd on 2379/2380; the bench runs its own members.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  $sudo systemctl stop etcd || true
fi
echo "installed: ${missing[*]}"
