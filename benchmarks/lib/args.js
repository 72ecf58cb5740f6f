'use strict';
// What every benchmark script does first: --threads N reaches OpenMP before
// libtorch loads (the addon loads lazily, on first use), then "--key value"
// arguments (and bare --flags from `flags`) become an object.

function applyThreads(argv = process.argv) {
  const i = argv.indexOf('--threads');
  if (i > 0 && argv[i + 1]) {
    process.env.OMP_NUM_THREADS = argv[i + 1];
    process.env.MKL_NUM_THREADS = argv[i + 1];
  }
}

function parseArgs(argv, flags = []) {
  const bare = new Set(flags);
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    if (bare.has(key)) { out[key] = true; continue; }
    if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
    out[key] = argv[++i];
  }
  return out;
}

module.exports = { applyThreads, parseArgs };
