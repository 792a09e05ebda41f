#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, from the committed seed corpus.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
# Without AddressSanitizer (-s none): the code is safe Rust, the fuzzers look for panics, hangs
# and oversized allocations (libFuzzer's -malloc_limit_mb / -rss_limit_mb).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
for target in safetensors_weights npy_input; do
  mkdir -p "corpus/$target"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1
done
