#!/usr/bin/env bash
# `npm run demo`: installs what a fresh clone lacks (npm packages, the
# native addon, the FerretDB test bed), then runs the café demo.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/mongoose ] || npm ci --no-audit --no-fund --loglevel=error
if ! node -e "require('./native.js')" >/dev/null 2>&1; then
  echo "building the native addon (first run only, a few minutes)…"
  npm run build
fi
if [ -z "${MONGODB_LOCAL_URI:-}" ] || [ -z "${MONGODB_ATLAS_URI:-}" ]; then
  node scripts/testbed.js build >/dev/null
fi
exec node examples/cafe/demo.js
