#!/usr/bin/env node
'use strict';
// Makes models/demo, the embedded demo model: `npm run train:demo`
// (which builds dist/ first). Seeded: the same libtorch build gives the same
// files. Options: --out DIR (default models/demo), --epochs N, --seed N.
const path = require('path');
const { trainDemoModel } = require('../dist/index.js');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

async function main() {
  const out = path.resolve(arg('--out', path.join(__dirname, '..', 'models', 'demo')));
  const epochs = arg('--epochs') === undefined ? undefined : Number(arg('--epochs'));
  const seed = arg('--seed') === undefined ? undefined : Number(arg('--seed'));
  let last = -1;
  const res = await trainDemoModel(out, {
    epochs, seed, overwrite: true,
    log: (l) => console.log(l),
    onProgress: ({ done, total }) => {
      const pct = Math.floor((100 * done) / total);
      if (pct !== last && pct % 5 === 0) { last = pct; console.log(`train ${done}/${total} steps`); }
    },
  });
  const tail = res.losses.slice(-20);
  console.log(`done in ${res.seconds.toFixed(0)} s: ${res.steps} steps, ${res.examples} examples, ${res.tokens} tokens;`
    + ` loss ${res.losses[0].toFixed(3)} -> ${(tail.reduce((a, b) => a + b, 0) / tail.length).toFixed(3)} (mean of the last 20 steps)`);
  console.log(`written to ${out}`);
}

main().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
