#!/usr/bin/env bash
# Fuzzes the journal record decoder and segment scanner for a bounded time.
# Not run in CI. Usage: scripts/fuzz-journal.sh [seconds]   (default 60)
# Env: FUZZ_SANITIZER (default "none": the code under test has no unsafe, and
#      skipping ASan makes the build much faster; set "address" to use it),
#      CARGO_TARGET_DIR is honoured. Crashes land in crates/core/fuzz/artifacts/.
set -euo pipefail

secs="${1:-60}"
case "$secs" in '' | *[!0-9]*) echo "fuzz-journal: seconds must be a whole number, got '$secs'" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz_dir="$root/crates/core/fuzz"

# cargo-fuzz needs nightly rustc (sanitizer coverage flags).
if ! command -v rustup >/dev/null 2>&1; then
  echo "fuzz-journal: rustup not found; cargo fuzz needs a nightly toolchain installed through rustup" >&2
  exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz-journal: no nightly toolchain; trying 'rustup toolchain install nightly --profile minimal'..." >&2
  if ! rustup toolchain install nightly --profile minimal; then
    echo "fuzz-journal: cannot install the nightly toolchain here (no access to the Rust toolchain server?)." >&2
    echo "fuzz-journal: the journal fuzz target was NOT run. Install nightly by other means and retry." >&2
    exit 2
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-journal: installing cargo-fuzz from crates.io..." >&2
  cargo install cargo-fuzz --locked
fi

mkdir -p "$fuzz_dir/corpus/journal_record"
cd "$fuzz_dir"
echo "fuzz-journal: fuzzing journal_record for ${secs}s (sanitizer: ${FUZZ_SANITIZER:-none})" >&2
exec cargo +nightly fuzz run --debug-assertions --sanitizer "${FUZZ_SANITIZER:-none}" journal_record \
  -- -max_total_time="$secs"
