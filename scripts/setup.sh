#!/usr/bin/env bash
# One place for every install step the project needs beyond the Rust toolchain, so the two
# README commands work on a fresh Debian machine. Sourced by demo.sh and test.sh.
# Today nothing beyond cargo is needed: protoc comes from the protoc-bin-vendored crate.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "petkv needs the Rust toolchain (cargo); install it with rustup first" >&2
  exit 1
fi
