#!/usr/bin/env bash
# Full local check, runnable on a fresh clone: system packages (installed when root, else
# the exact command is printed), Rust format, lints and tests, the release addon build,
# then the JS suite against real servers — the Rust server tests and the whole vitest
# suite run once per test-bed engine (DUALSYNC_TEST_ENGINES, default "ferretdb documentdb"),
# then the prebuilt binaries for other platforms are cross-built and tested under wine / qemu
# (scripts/test-platforms.js; DUALSYNC_TEST_PLATFORMS, default "win32-x64-gnu linux-arm64-gnu",
# "none" skips them), and last the bench's smoke run (every scenario at small sizes) on one
# engine (DUALSYNC_BENCH_SMOKE_ENGINES, default: the last test engine; "none" skips it). The
# smoke run fails the check only when a scenario cannot run, never on a missed speed goal.
# Extra arguments go to vitest (e.g. a file filter).
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  printf '\n\033[1m==== %s ====\033[0m\n' "$*"
  step_started=$SECONDS
}
# Every step's duration, printed at the end (CI time must stay well under its limit).
timings=()
step_started=$SECONDS
step_done() {
  timings+=("$(printf '%5ss  %s' "$((SECONDS - step_started))" "$*")")
}

engines=${DUALSYNC_TEST_ENGINES:-ferretdb documentdb}
platforms=${DUALSYNC_TEST_PLATFORMS:-win32-x64-gnu linux-arm64-gnu}
[ "$platforms" != none ] || platforms=
for e in $engines; do
  DUALSYNC_TESTBED=$e node -e 'require("./scripts/testbed.js").engine()' 2>/dev/null || {
    echo "DUALSYNC_TEST_ENGINES: unknown engine \"$e\" (expected ferretdb, documentdb or mongod)" >&2
    exit 2
  }
done

# ---- system packages -------------------------------------------------------------------
step "system packages"
need=()
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM_PATH:-}" ] || need+=(chromium)
# FerretDB's _id index repair (scripts/testbed-idindex.js) runs the sqlite3 CLI.
case " $engines " in *" ferretdb "*) command -v sqlite3 >/dev/null || need+=(sqlite3) ;; esac
for e in $engines; do
  # The engine lists its Debian packages (the documentdb build needs PostgreSQL 15 and friends).
  for p in $(DUALSYNC_TESTBED=$e node scripts/testbed.js packages); do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
done
# Cross linkers, wine and qemu for the platform test (scripts/test-platforms.js lists them).
for pl in $platforms; do
  for p in $(node -e 'console.log(require("./scripts/test-platforms.js").DEBS[process.argv[1]].join(" "))' "$pl"); do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing Debian packages; run as root, then npm test again:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${need[*]}" >&2
    exit 1
  fi
fi
step_done "system packages"

# rustup installs without rustfmt/clippy on some images.
if command -v rustup >/dev/null 2>&1 && ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# A fresh clone: install the JS dependencies first.
if [ ! -d node_modules/vitest ]; then
  step "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  step_done "npm ci"
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step_done "cargo fmt"

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
step_done "cargo clippy"

for e in $engines; do
  step "test bed $e: build (first run only) and check"
  DUALSYNC_TESTBED=$e node scripts/testbed.js build
  step_done "test bed $e build"
done

pairpid=
pairlog=
stop_pair() {
  if [ -n "$pairpid" ]; then
    kill "$pairpid" 2>/dev/null || true
    wait "$pairpid" 2>/dev/null || true
  fi
  [ -z "$pairlog" ] || rm -f "$pairlog"
  pairpid= pairlog=
}
trap stop_pair EXIT

# Starts a server pair of engine $1 and exports its URIs for the Rust server tests.
start_pair() {
  pairlog=$(mktemp)
  DUALSYNC_TESTBED=$1 node scripts/testbed.js start >"$pairlog" 2>&1 &
  pairpid=$!
  for _ in $(seq 1 1200); do
    grep -q '^MONGODB_ATLAS_URI=' "$pairlog" && break
    kill -0 "$pairpid" 2>/dev/null || { cat "$pairlog"; echo "test bed $1 failed to start" >&2; exit 1; }
    sleep 0.1
  done
  grep -q '^MONGODB_ATLAS_URI=' "$pairlog" || { cat "$pairlog"; echo "test bed $1 did not come up" >&2; exit 1; }
  DUALSYNC_TEST_LOCAL_URI="$(sed -n 's/^MONGODB_LOCAL_URI=//p' "$pairlog")/"
  DUALSYNC_TEST_ATLAS_URI="$(sed -n 's/^MONGODB_ATLAS_URI=//p' "$pairlog")/"
  export DUALSYNC_TEST_LOCAL_URI DUALSYNC_TEST_ATLAS_URI
}

first=1
for e in $engines; do
  if [ "$first" = 1 ]; then
    step "cargo test --workspace (server tests on $e)"
    start_pair "$e"
    cargo test --workspace
    first=0
  else
    step "cargo test: reconciler server tests on $e"
    start_pair "$e"
    cargo test -p dualsync-core --test reconcile_server
  fi
  stop_pair
  step_done "cargo test ($e)"
done

step "npm run build (napi release addon)"
npm run build
step_done "npm run build"

passed=0
failed=0
status=0
lines=()
for e in $engines; do
  step "vitest on $e${*:+ $*}"
  report=$(mktemp)
  s=0
  DUALSYNC_TESTBED=$e npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || s=$?
  [ "$s" -eq 0 ] || status=$s
  # One read of the report: the counts on the first line, then the name of each failure
  # (repeated in the closing summary: CI keeps only the end of the log).
  summary=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const rel = (f) => require("path").relative(process.cwd(), f);
    // A file that fails outside any test (its set-up threw) counts as a failure too.
    const files = r.testResults.filter((t) => t.status === "failed" && t.assertionResults.every((a) => a.status !== "failed"));
    console.log(`${r.numPassedTests} ${r.numFailedTests} ${r.numPendingTests + r.numTodoTests} ${files.length}`);
    for (const t of r.testResults) {
      for (const a of t.assertionResults) if (a.status === "failed") console.log(`${rel(t.name)} > ${a.fullName}`);
    }
    for (const t of files) console.log(`${rel(t.name)} (outside its tests: ${String(t.message || "").split("\n")[0].slice(0, 200)})`);
  ' "$report" 2>/dev/null || echo "0 1 0 0")
  counts=${summary%%$'\n'*}
  names=()
  while IFS= read -r name; do [ -z "$name" ] || names+=("  FAILED ($e): $name"); done < <(printf '%s\n' "$summary" | tail -n +2)
  rm -f "$report"
  read -r p f k ff <<<"$counts"
  passed=$((passed + p))
  failed=$((failed + f + ff))
  extra=""
  if [ "$ff" -gt 0 ]; then extra=", $ff file(s) failed outside their tests"; fi
  lines+=("vitest ($e): $p passed, $f failed, $k skipped$extra" ${names[@]+"${names[@]}"})
  step_done "vitest ($e)"
done

# The prebuilt binaries of other platforms: cross builds (toolchains and build cache under
# ~/.cache/dualsync), then installed and run under wine / qemu against the first test bed.
if [[ " $platforms " == *" win32-x64-gnu "* ]]; then
  step "cargo clippy --target x86_64-pc-windows-gnu (warnings are errors)"
  node scripts/cross.js --clippy win32-x64-gnu
  step_done "cargo clippy (windows)"
fi
for pl in $platforms; do
  step "cross build $pl"
  node scripts/cross.js "$pl"
  step_done "cross build $pl"
done
if [ -n "$platforms" ]; then
  step "test:platforms ($platforms)"
  s=0
  # shellcheck disable=SC2086
  DUALSYNC_TESTBED=${engines%% *} DUALSYNC_PLATFORMS_NO_BUILD=1 node scripts/test-platforms.js $platforms || s=$?
  [ "$s" -eq 0 ] || status=$s
  lines+=("test:platforms ($platforms): $([ "$s" -eq 0 ] && echo passed || echo FAILED)")
  step_done "test:platforms"
fi

# A vitest filter means a partial run: the bench smoke belongs to the whole check only.
bench_engines=${DUALSYNC_BENCH_SMOKE_ENGINES:-${engines##* }}
if [ "$#" -eq 0 ] && [ "$bench_engines" != none ]; then
  for e in $bench_engines; do
    step "bench smoke on $e (reports PASS/MISS; fails only if a scenario cannot run)"
    s=0
    node bench/run.js --smoke --engine "$e" || s=$?
    [ "$s" -eq 0 ] || { status=$s; lines+=("bench smoke ($e): a scenario could not run (exit $s)"); }
    [ "$s" -ne 0 ] || lines+=("bench smoke ($e): every scenario ran (results in bench/results/$e/smoke/)")
    step_done "bench smoke ($e)"
  done
fi

printf '\n==== step times ====\n'
printf '%s\n' "${timings[@]}"
printf '%s\n' "${lines[@]}"
# One plain closing line with the JS counts over all engines (CI reads it).
echo "vitest: $passed passed, $failed failed"
[ "$status" -eq 0 ] || exit "$status"
