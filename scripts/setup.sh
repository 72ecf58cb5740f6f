#!/usr/bin/env bash
# Every setup step a fresh Debian 12 machine needs before the tests or the demo:
#   1. system libtorch and OpenBLAS when missing (scripts/setup-debian.sh)
#   2. npm packages (`npm ci`, exactly the lock file) when node_modules is missing or older than the lock file
#   3. the addon build (incremental: seconds when nothing changed)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-debian.sh
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # The addon is built just below, so the package's own install script need not.
  NGATE_SKIP_BUILD=1 npm ci --no-audit --no-fund
fi
node scripts/build-native.js
