#!/usr/bin/env bash
# Bundles lib/ into dist/ (tsup) when dist/ is missing or older than a source.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f dist/cli.js ] || [ -n "$(find lib types tsup.config.ts package.json -newer dist/cli.js -print -quit)" ]; then
  npm run --silent build:ts >&2
fi
