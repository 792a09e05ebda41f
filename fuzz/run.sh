#!/usr/bin/env bash
# Runs the fuzz targets (default: all) for SECONDS (default 600) each, from the committed seed
# corpus: ./run.sh [SECONDS] [TARGET...]. A crash stops the run and leaves its input in artifacts/;
# copy it to regressions/TARGET/ so that tests/loaders.rs replays it.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
# Without AddressSanitizer (-s none): the code is safe Rust, the fuzzers look for panics, hangs
# and oversized allocations (libFuzzer's -malloc_limit_mb / -rss_limit_mb).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors_weights npy_input)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1
done
