#!/usr/bin/env node
'use strict';
// `npm run build:native` (and the setup of `npm test` / `npm run demo`): builds
// the addon against the libtorch scripts/find-libtorch.js picks, unless a build
// for that libtorch and these sources exists. `ngate build` does the same from
// an installed package.
//   node scripts/build-native.js [--libtorch DIR] [--cuda-arch LIST] [--jobs N] [--force]
const { findLibtorch, HOW_TO_GET } = require('./find-libtorch');
const { ensureBuild } = require('./addon');

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main() {
  const torch = findLibtorch({ libtorch: arg('--libtorch'), askPython: true });
  if (!torch) {
    console.error(`@ngate/core: ${HOW_TO_GET}`);
    process.exit(1);
  }
  const what = `libtorch ${torch.version} (${torch.cuda ? `CUDA ${torch.cuda}` : 'CPU'}) from ${torch.source}, ${torch.configDir}`;
  const b = await ensureBuild(torch, {
    force: process.argv.includes('--force'), cudaArchitectures: arg('--cuda-arch'), jobs: arg('--jobs'),
    onLine: (line) => process.stderr.write(line + '\n'),
    onWait: () => process.stderr.write('@ngate/core: waiting for another process that builds the addon\n'),
  });
  console.error(b.built ? `@ngate/core: built ${b.file} against ${what} in ${b.info.seconds} s` : `@ngate/core: up to date: ${b.file} (${what})`);
}

main().catch((e) => {
  console.error(`@ngate/core: ${e.message}`);
  process.exit(1);
});
