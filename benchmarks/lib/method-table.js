#!/usr/bin/env node
'use strict';
// Folds the JSON lines of benchmarks/method.js (sides "ngate" and "plain") and
// benchmarks/method_hf.py (side "transformers") into one Markdown table:
// medians over repeated runs, per case (the `tag` field) and task, with the
// ratios of ours to each alternative, then the largest mask differences seen.
//
//   node benchmarks/lib/method-table.js FILE.jsonl...
//
// method_hf.py's lines carry no side or tag: cpu-method.sh and gpu-method.sh
// add them ({"side":"transformers","tag":CASE}) when they collect its output.
const { jsonLines, median } = require('./stats');

const TASKS = [
  // kind, field, label, higher is better
  ['learnMask', 'masksPerSecond', 'learnMask (masks/s)', true],
  ['gatedEdit', 'secondsPerEpoch', 'gatedEdit (s/epoch)', false],
  ['evaluate', 'tokensPerSecond', 'evaluate (generated tokens/s)', true],
];
const SIDES = ['ngate', 'plain', 'transformers'];

function fmt(x) {
  if (x === undefined) return '—';
  if (x >= 100) return Math.round(x).toLocaleString('en-US');
  return Number(x.toPrecision(3)).toString();
}

function ratio(ours, other, higherIsBetter) {
  if (ours === undefined || other === undefined) return '—';
  return `${(higherIsBetter ? ours / other : other / ours).toFixed(2)}×`;
}

function table(rows) {
  const cases = [...new Set(rows.filter((r) => r.tag).map((r) => r.tag))];
  const out = [
    '| case | task | ours (defaults) | ours, plain loop | transformers | ours ÷ transformers | ours ÷ plain | runs |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const tag of cases) {
    for (const [kind, field, label, up] of TASKS) {
      const med = {};
      let runs = 0;
      for (const side of SIDES) {
        const xs = rows.filter((r) => r.tag === tag && r.kind === kind && r.side === side && typeof r[field] === 'number').map((r) => r[field]);
        if (xs.length) med[side] = median(xs);
        runs = Math.max(runs, xs.length);
      }
      if (!runs) continue;
      out.push(`| ${tag} | ${label} | ${fmt(med.ngate)} | ${fmt(med.plain)} | ${fmt(med.transformers)} | ` +
        `${ratio(med.ngate, med.transformers, up)} | ${ratio(med.ngate, med.plain, up)} | ${runs} |`);
    }
  }
  const diffs = {};
  for (const r of rows.filter((x) => x.kind === 'summary')) {
    for (const k of ['maxAbsMaskDiffNgateVsPlain', 'maxAbsMaskDiffVsBaseline']) {
      if (typeof r[k] === 'number') diffs[`${r.tag} ${k}`] = Math.max(diffs[`${r.tag} ${k}`] || 0, r[k]);
    }
  }
  if (Object.keys(diffs).length) {
    out.push('', 'Largest mask differences over all runs:', '');
    for (const [k, v] of Object.entries(diffs)) out.push(`- ${k}: ${v.toExponential(1)}`);
  }
  return out.join('\n');
}

if (require.main === module) {
  const files = process.argv.slice(2);
  if (!files.length) {
    console.error('usage: node benchmarks/lib/method-table.js FILE.jsonl...');
    process.exit(2);
  }
  console.log(table(files.flatMap(jsonLines)));
}

module.exports = { table };
