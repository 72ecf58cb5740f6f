#!/usr/bin/env node
'use strict';
// Whether the addon can be built with torch's distributed engine (c10d), and
// how: the Gloo backend needs libtorch's ProcessGroupGloo.hpp and Gloo's own
// headers (gloo/algorithm.h: Debian's libgloo-dev; not pulled in by
// libtorch-dev, nor shipped in every libtorch); NCCL needs a CUDA libtorch and
// nccl.h. Both classes hide behind USE_C10D_GLOO / USE_C10D_NCCL, which the
// consumer must define. CMakeLists.txt and binding.gyp both ask this script.
//
//   node scripts/find-dist.js --defines [--cmake] [--cuda] [include dirs…]
//   node scripts/find-dist.js --include [--cmake] [--cuda] [include dirs…]
//   node scripts/find-dist.js            (a JSON description)
//
// Without include dirs, libtorch's are taken from scripts/find-libtorch.js.
const fs = require('fs');
const path = require('path');

function firstWith(dirs, file) {
  return dirs.find((d) => d && fs.existsSync(path.join(d, file))) || null;
}

function probe(torchIncludes, cuda) {
  const system = ['/usr/include', '/usr/local/include'];
  const c10dDir = firstWith(torchIncludes, 'torch/csrc/distributed/c10d/ProcessGroup.hpp');
  const glooHeader = firstWith(torchIncludes, 'torch/csrc/distributed/c10d/ProcessGroupGloo.hpp');
  const glooDir = firstWith([process.env.GLOO_INCLUDE_DIR, ...torchIncludes, ...system], 'gloo/algorithm.h');
  const ncclHeader = firstWith(torchIncludes, 'torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp');
  // A Python torch keeps nccl.h in the nvidia-nccl wheel beside it (site-packages/nvidia/nccl/include).
  const besideTorch = torchIncludes.map((d) => path.resolve(d, '..', '..', 'nvidia', 'nccl', 'include'));
  const ncclDir = cuda ? firstWith([process.env.NCCL_INCLUDE_DIR, ...torchIncludes, ...besideTorch,
    process.env.CUDA_HOME && path.join(process.env.CUDA_HOME, 'include'), '/usr/local/cuda/include', ...system], 'nccl.h') : null;
  const gloo = !!(c10dDir && glooHeader && glooDir);
  const nccl = !!(c10dDir && ncclHeader && ncclDir);
  const defines = [];
  const includes = [];
  if (gloo) {
    defines.push('USE_C10D_GLOO', 'NGATE_HAS_GLOO');
    if (!torchIncludes.includes(glooDir)) includes.push(glooDir);
  }
  if (nccl) {
    defines.push('USE_C10D_NCCL', 'NGATE_HAS_NCCL');
    if (!torchIncludes.includes(ncclDir) && !includes.includes(ncclDir)) includes.push(ncclDir);
  }
  const missing = [];
  if (!c10dDir) missing.push('libtorch without c10d headers (torch/csrc/distributed/c10d)');
  if (c10dDir && !glooDir) missing.push('gloo/algorithm.h (Debian: apt-get install libgloo-dev; or set GLOO_INCLUDE_DIR)');
  if (cuda && c10dDir && !ncclDir) missing.push('nccl.h (set NCCL_INCLUDE_DIR)');
  return { gloo, nccl, defines, includes, missing };
}

module.exports = { probe };

if (require.main === module) {
  const args = process.argv.slice(2);
  const flags = new Set(args.filter((a) => a.startsWith('--')));
  let dirs = args.filter((a) => !a.startsWith('--')).flatMap((a) => a.split(';')).filter(Boolean);
  let cuda = flags.has('--cuda');
  if (dirs.length === 0) {
    const torch = require('./find-libtorch').findLibtorch();
    if (!torch) { console.error('libtorch was not found (see scripts/find-libtorch.js)'); process.exit(1); }
    dirs = torch.includeDirs;
    cuda = cuda || torch.cuda;
  }
  const found = probe(dirs, cuda);
  const sep = flags.has('--cmake') ? ';' : ' ';
  if (flags.has('--defines')) process.stdout.write(found.defines.join(sep));
  else if (flags.has('--include')) process.stdout.write(found.includes.join(sep));
  else console.log(JSON.stringify(found, null, 2));
}
