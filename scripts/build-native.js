#!/usr/bin/env node
'use strict';
// Builds the addon from source with cmake-js against the libtorch that
// scripts/find-libtorch.js finds. With --prebuild, also copies the result to
// prebuilds/<platform>-<arch>/, named after the libtorch it links, where the
// loader (lib/model/native.ts) looks for it.
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { findLibtorch, HOW_TO_GET } = require('./find-libtorch');

const root = path.resolve(__dirname, '..');
const torch = findLibtorch();
if (!torch) {
  console.error(`@ngate/core: ${HOW_TO_GET}`);
  process.exit(1);
}
console.error(`@ngate/core: building the addon against libtorch from ${torch.source} (${torch.configDir})${torch.cuda ? ' with CUDA' : ''}`);

const args = [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--directory', root,
  `--CDCMAKE_PREFIX_PATH=${torch.cmakePrefix}`];
const jobs = process.env.NGATE_BUILD_JOBS || String(Math.max(1, require('os').cpus().length));
args.push('--parallel', jobs);
if (torch.cuda) {
  // CMake's CUDA checks in TorchConfig want an architecture; no kernels of ours depend on it.
  args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.NGATE_CUDA_ARCHITECTURES || 'native'}`);
}
if (process.env.NGATE_DEBUG_BUILD) args.push('--debug');
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
if (r.status !== 0) {
  console.error('@ngate/core: the addon build failed (see the compiler output above).');
  process.exit(r.status || 1);
}

const built = path.join(root, 'build', 'Release', 'ngate.node');
if (process.argv.includes('--prebuild')) {
  const version = (/(\d+\.\d+)/.exec(fs.readFileSync(path.join(torch.configDir, 'TorchConfigVersion.cmake'), 'utf8')) || [])[1] || 'unknown';
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  fs.mkdirSync(dir, { recursive: true });
  const dest = path.join(dir, `ngate.torch${version}-${torch.cuda ? 'cuda' : 'cpu'}.napi.node`);
  fs.copyFileSync(built, dest);
  console.error(`@ngate/core: prebuild written to ${path.relative(root, dest)}`);
}
