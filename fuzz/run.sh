#!/usr/bin/env bash
# Runs every fuzz target for the given number of seconds each (default 30), from the committed
# seeds plus the local corpus (fuzz/corpus, not committed). A crash stops the script with
# libFuzzer's report and leaves the input in fuzz/artifacts/<target>/. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(resp_request bql_filter document_decode update_projection segment_recovery)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${seconds}s"
  # -rss_limit_mb: an input that makes a parser allocate without bound fails as out-of-memory.
  # -timeout: one input taking longer than 10 s is reported as a hang.
  # FUZZ_ARGS adds libFuzzer options (CI passes a fixed -seed so its short runs are repeatable).
  # shellcheck disable=SC2086
  cargo fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-}
done
