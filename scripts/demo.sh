#!/usr/bin/env bash
# The README's main command: builds petkv and the cluster harness (the `dev` profile, the one
# the test suite builds too, so a fresh clone reaches the demo in a few minutes), then runs the
# demo on a local 3-pod set: kill, restart, wipe and restart pods, and verify that identity
# and data survive. Extra arguments go to `petkv-harness demo` (e.g. --state-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --locked -p petkv -p petkv-harness
exec target/debug/petkv-harness demo "$@"
