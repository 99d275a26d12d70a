#!/usr/bin/env bash
# Full local check: Rust format, lints and tests, the release addon build, then the JS
# test suite against real servers. Extra arguments go to vitest (e.g. a file filter).
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  printf '\n\033[1m==== %s ====\033[0m\n' "$*"
}

# A fresh clone: install the JS dependencies first (CI runs `npm ci` itself).
[ -d node_modules/vitest ] || { step "npm ci"; npm ci --no-audit --no-fund --loglevel=error; }
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM_PATH:-}" ] || echo "note: /usr/bin/chromium missing; the dashboard test needs Debian's chromium (apt-get install -y chromium)" >&2

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (with a test-bed server pair for the reconciler's server tests)"
pairlog=$(mktemp)
node scripts/testbed.js start >"$pairlog" 2>&1 &
pairpid=$!
trap 'kill "$pairpid" 2>/dev/null || true; wait "$pairpid" 2>/dev/null || true; rm -f "$pairlog"' EXIT
for _ in $(seq 1 600); do
  grep -q '^MONGODB_ATLAS_URI=' "$pairlog" && break
  kill -0 "$pairpid" 2>/dev/null || { cat "$pairlog"; echo "test bed failed to start" >&2; exit 1; }
  sleep 0.1
done
grep -q '^MONGODB_ATLAS_URI=' "$pairlog" || { cat "$pairlog"; echo "test bed did not come up" >&2; exit 1; }
DUALSYNC_TEST_LOCAL_URI="$(sed -n 's/^MONGODB_LOCAL_URI=//p' "$pairlog")/"
DUALSYNC_TEST_ATLAS_URI="$(sed -n 's/^MONGODB_ATLAS_URI=//p' "$pairlog")/"
export DUALSYNC_TEST_LOCAL_URI DUALSYNC_TEST_ATLAS_URI
cargo test --workspace
kill "$pairpid" 2>/dev/null || true
wait "$pairpid" 2>/dev/null || true
trap - EXIT
rm -f "$pairlog"

step "npm run build (napi release addon)"
npm run build

step "vitest${*:+ $*}"
report=$(mktemp)
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
# One plain closing line with the JS counts (CI reads it).
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
' "$report" || true
rm -f "$report"
[ "$status" -eq 0 ] || exit "$status"
