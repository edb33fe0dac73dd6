#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after the other, each for the same time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 30 seconds each, every target. The hardening runs in docs/hardening.md used 600.
# cargo fuzz passes nightly-only flags (sanitizers) to rustc; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Runs are niced: the fuzzers take a whole core each.
# Corpora grow in fuzz/corpus/<target>, crashes land in fuzz/artifacts/<target>, and each run's
# output (with libFuzzer's final stats) in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(api_requests state_machine_apply identity_record snapshot_file log_records)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

mkdir -p fuzz/logs
failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "== $target: ${seconds}s"
    # -malloc_limit_mb: a single allocation past 32 MiB is a finding (a few damaged bytes must
    # not make the reader allocate what a length field claims).
    if ! nice -n 19 cargo fuzz run --fuzz-dir fuzz "$target" -- \
        -max_total_time="$seconds" -malloc_limit_mb=32 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | tee "fuzz/logs/$target.log"; then
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "findings (see fuzz/artifacts/): ${failed[*]}" >&2
    exit 1
fi
