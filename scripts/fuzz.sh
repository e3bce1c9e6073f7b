#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each;
# exits non-zero if any target crashes.
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only rustc flags
# (-Zsanitizer=address and the sanitizer-coverage passes), and
# RUSTC_BOOTSTRAP=1 lets stable accept them.
#
# libFuzzer writes every new input into its first corpus directory, so that
# is a working copy under fuzz/target/ and the checked-in seeds in
# fuzz/corpus/<target>/ are only read. Copy an input worth keeping there by
# hand; tests/fuzz_corpus.rs replays those seeds on every `cargo test`.
#
# A crash leaves its input in fuzz/artifacts/<target>/. Reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
#
# Environment:
#   FUZZ_SECONDS    seconds per target (60)
#   FUZZ_TARGETS    space-separated targets to run (all of `cargo fuzz list`)
#   FUZZ_SANITIZER  address | none | ... (address; `none` runs ~2x faster)
#   FUZZ_MAX_LEN    largest input to try (20480: past the parsers' 16 KiB caps)
set -euo pipefail

cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
max_len="${FUZZ_MAX_LEN:-20480}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --version '^0.13' --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
if [[ -z "$targets" ]]; then
  echo "no fuzz targets found in fuzz/" >&2
  exit 1
fi

failed=()
for target in $targets; do
  work="fuzz/target/corpus/$target"
  log="fuzz/target/fuzz-$target.log"
  mkdir -p "$work"
  corpora=("$work")
  if [[ -d "fuzz/corpus/$target" ]]; then
    corpora+=("fuzz/corpus/$target")
  fi

  echo "==> fuzzing $target for ${seconds}s (sanitizer: $sanitizer, log: $log)"
  if cargo fuzz run --sanitizer "$sanitizer" "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1; then
    # libFuzzer's closing line, e.g. "Done 2458302 runs in 61 second(s)".
    grep -E '^Done [0-9]+ runs' "$log" || true
  else
    echo "!!! $target FAILED; last lines of $log:" >&2
    tail -n 60 "$log" >&2
    failed+=("$target")
  fi
done

if ((${#failed[@]} > 0)); then
  echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzzing passed: $targets"
