#!/usr/bin/env bash
# Full local check: Rust format, lints and tests, the release addon build, then the JS
# test suite against real servers. Extra arguments go to vitest (e.g. a file filter).
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  printf '\n\033[1m==== %s ====\033[0m\n' "$*"
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "npm run build (napi release addon)"
npm run build

step "vitest${*:+ $*}"
npx vitest run "$@"

step "all checks passed"
