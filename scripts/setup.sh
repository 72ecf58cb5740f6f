#!/usr/bin/env bash
# Every setup step a fresh Debian 12 machine needs before the tests or the demo:
#   1. system libtorch and OpenBLAS when missing (scripts/setup-debian.sh)
#   2. npm packages when node_modules is missing or older than the lock file
#   3. the addon build (incremental: seconds when nothing changed)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-debian.sh
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install`, not `npm ci`: the lock file cannot list the platform packages this
  # registry does not serve (rollup's, esbuild's), and `npm ci` refuses such a lock.
  NGATE_SKIP_BUILD=1 npm install --no-audit --no-fund
fi
node scripts/build-native.js
