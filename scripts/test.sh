#!/usr/bin/env bash
# The README's test command: the whole suite (unit tests, openraft's storage conformance
# suite, end-to-end tests that start real node processes on loopback through the harness),
# plus formatting and lint checks when the toolchain has rustfmt and clippy, and the offline
# checks of the Kubernetes manifests in deploy/ (scripts/check-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh --test
started=$(date +%s)
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "note: rustfmt is not installed; skipping the format check"
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked --all-targets --all-features -- -D warnings
else
  echo "note: clippy is not installed; skipping the lint check"
fi
# Kubernetes manifests: rendered, schema-validated and linted offline (pip needs PyPI once).
bash scripts/check-deploy.sh
cargo test --locked --workspace --all-features
echo "suite wall time: $(( $(date +%s) - started )) s"
