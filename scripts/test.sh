#!/usr/bin/env bash
# `npm test`: the setup steps of scripts/setup.sh, the dist/ bundle (one test
# runs the real `ngate` binary), then jest, with any extra arguments passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-dist.sh
npx jest "$@"
