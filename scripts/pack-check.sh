#!/usr/bin/env bash
# The outside-project path, as a new user takes it (CI runs this after npm test):
# pack the library, install the tarball into two empty TypeScript projects, one
# with npm 11 and one with npm 10, type-check a program from ESM and from
# CommonJS with tsc --strict, and run it: learnMask → buildGate → gatedEdit →
# evaluate on the embedded demo model, timed step by step.
#
# The npm 11 project installs with --ignore-scripts, as a user whose npm does
# not run dependencies' install scripts (npm 11's allowScripts, or a policy):
# its first nativeInfo() builds the addon. The npm 10 project runs the install
# script, which finds that build in the shared cache (NGATE_CACHE_DIR) and
# reuses it.
# Nothing here uses the repository's own build: the addon is compiled from the
# tarball's sources.
#   bash scripts/pack-check.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=${1:-$(mktemp -d /tmp/ngate-pack-check.XXXXXX)}
mkdir -p "$work"
export NGATE_CACHE_DIR="$work/cache"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t=$(now)
[ -f dist/index.mjs ] || npm run --silent build:ts >&2
tarball=$(npm pack --ignore-scripts --silent --pack-destination "$work" | tail -1)
echo "pack: $tarball in $(since "$t") s ($(du -h "$work/$tarball" | cut -f1))"

for npmv in 11 10; do
  project="$work/project-npm$npmv"
  rm -rf "$project" && mkdir -p "$project" && cd "$project"
  if [ "$npmv" = 11 ]; then npm_cmd=(npm); scripts=(--ignore-scripts); else npm_cmd=(npx -y npm@10.9.9); scripts=(); fi
  echo "== npm $("${npm_cmd[@]}" --version)"
  printf '{ "name": "consumer-npm%s", "private": true, "type": "commonjs" }\n' "$npmv" > package.json
  cat > tsconfig.json <<'EOF'
{ "compilerOptions": { "strict": true, "noUncheckedIndexedAccess": true, "module": "nodenext", "moduleResolution": "nodenext",
  "target": "es2022", "types": ["node"], "outDir": "out", "skipLibCheck": false }, "files": ["use.mts", "use.cts"] }
EOF
  cp "$repo/scripts/pack-check/use.mts" use.mts
  sed "s#^import \* as ngate from '@ngate/core';#import ngate = require('@ngate/core');#" use.mts > use.cts
  t=$(now)
  "${npm_cmd[@]}" install "${scripts[@]}" --no-audit --no-fund --foreground-scripts "$work/$tarball" typescript@5 @types/node@20 > install.log 2>&1 \
    || { cat install.log; exit 1; }
  echo "install (tarball, typescript, @types/node${scripts:+, --ignore-scripts}): $(since "$t") s"
  grep '@ngate/core' install.log | sed 's/^/  /' || true
  t=$(now)
  npx tsc -p tsconfig.json
  echo "tsc --strict (ESM and CommonJS): $(since "$t") s"
  for m in mjs cjs; do
    t=$(now)
    node "out/use.$m" > "run-$m.json" 2> "run-$m.log" || { cat "run-$m.log"; exit 1; }
    grep '@ngate/core' "run-$m.log" | sed 's/^/  /' || true
    echo "run ($m): $(since "$t") s: $(cat "run-$m.json")"
  done
  cd "$repo"
done
echo "pack-check: passed ($work)"
