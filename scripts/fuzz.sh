#!/usr/bin/env bash
# Bounded fuzzing run: every target in fuzz/ for a fixed time each. See
# docs/testing.md, "Fuzzing".
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60, all targets)
#
# Installs cargo-fuzz from crates.io if it is missing. On a stable toolchain it sets
# RUSTC_BOOTSTRAP=1, because cargo-fuzz passes nightly-only flags (-Zsanitizer=address,
# SanitizerCoverage). Corpora grow in target/fuzz-corpus/TARGET (kept between runs)
# and crashing inputs land in target/fuzz-artifacts/TARGET/. Exit code 1 if any target
# found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(wire_decode wire_link_frame config_load_str console_parse_line kv_snapshot_decode transport_stream directory_decode resp_parse)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo install cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== cargo fuzz build"
cargo fuzz build --target-dir "$target_dir/fuzz"

failed=()
for t in "${targets[@]}"; do
    corpus="$target_dir/fuzz-corpus/$t"
    artifacts="$target_dir/fuzz-artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    echo "== $t for ${secs}s"
    if cargo fuzz run --target-dir "$target_dir/fuzz" "$t" "$corpus" -- \
        -max_total_time="$secs" -artifact_prefix="$artifacts/" -rss_limit_mb=2048 \
        2> "$artifacts/last-run.log"; then
        grep -E "^Done [0-9]+ runs" "$artifacts/last-run.log" || tail -1 "$artifacts/last-run.log"
    else
        echo "   CRASH: see $artifacts/ and $artifacts/last-run.log"
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets with crashes: ${failed[*]}"
    exit 1
fi
echo "no crashes"
