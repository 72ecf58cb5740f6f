#!/usr/bin/env bash
# `npm run demo`: the setup steps of scripts/setup.sh, the dist/ bundle, then
# `ngate demo` on the embedded model, with any extra arguments passed through
# (`npm run demo -- --help`). Setup output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
bash scripts/build-dist.sh
exec node bin/ngate.js demo "$@"
