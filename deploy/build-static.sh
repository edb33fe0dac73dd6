#!/usr/bin/env bash
# Builds the static musl binary that deploy/Dockerfile.scratch copies into a FROM-scratch
# image: target/x86_64-unknown-linux-musl/dist/petkv (under $CARGO_TARGET_DIR if set).
# Installs what the build needs when it is missing: the Rust musl target (rustup) and
# musl-gcc (Debian's musl-tools), which crates with C code (ring, for one) compile with.
# Builds with `--features kube` when the petkv package has that feature, without it otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TARGET=x86_64-unknown-linux-musl

if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "build-static: adding the Rust target $TARGET"
  rustup target add "$TARGET"
fi

if ! command -v musl-gcc >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "build-static: musl-gcc is missing; install it with: sudo apt-get install -y musl-tools" >&2
    exit 1
  fi
  echo "build-static: installing musl-tools (musl-gcc)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools
fi

features=()
if cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); p=[p for p in m["packages"] if p["name"]=="petkv"][0]; sys.exit(0 if "kube" in p["features"] else 1)'; then
  features=(--features kube)
else
  echo "build-static: the petkv package has no 'kube' feature on this branch; building without it"
fi

# cc-rs picks musl-gcc for this target on its own; saying so keeps it from guessing.
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --profile dist --locked -p petkv --target "$TARGET" "${features[@]}"

bin="${CARGO_TARGET_DIR:-target}/$TARGET/dist/petkv"
echo "build-static: built $bin"
file "$bin" 2>/dev/null || true
