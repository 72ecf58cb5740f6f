#!/usr/bin/env node
'use strict';
// Folds the JSON lines that benchmarks/gpu.sh collected into one summary.json.
//   node benchmarks/lib/summarize.js OUTDIR [steps.tsv]
// Reads the JSON lines of OUTDIR/compare-*.log and OUTDIR/bench-*.log and the step table
// (name, exit code, seconds) that gpu.sh keeps; writes OUTDIR/summary.json and
// prints it.
const fs = require('fs');
const path = require('path');

const { jsonLines } = require('./stats');

const outDir = process.argv[2];
if (!outDir) {
  console.error('usage: summarize.js OUTDIR [steps.tsv]');
  process.exit(2);
}
const stepsFile = process.argv[3] || path.join(outDir, 'steps.tsv');
const files = fs.readdirSync(outDir).sort();

const summary = { steps: [], parity: [], benchmark: { ngate: [], hf: [] }, speedup: [] };
if (fs.existsSync(stepsFile)) {
  for (const line of fs.readFileSync(stepsFile, 'utf8').split('\n')) {
    const [name, rc, seconds] = line.split('\t');
    if (name) summary.steps.push({ name, rc: Number(rc), seconds: Number(seconds) });
  }
}

for (const f of files.filter((n) => /^compare-.*\.log$/.test(n))) {
  const lines = jsonLines(path.join(outDir, f));
  const s = lines.find((l) => l.summary);
  if (!s) {
    summary.parity.push({ case: f.replace(/^compare-|\.log$/g, ''), error: 'no summary line (crashed? see the .log)' });
    continue;
  }
  const load = lines.find((l) => l.case === 'load') || {};
  summary.parity.push({
    case: f.replace(/^compare-|\.log$/g, ''),
    dtype: s.dtype,
    vs: s.primary,
    forward_max_abs: s.forward.max_abs,
    forward_max_rel: s.forward.max_rel,
    forward_argmax_all_agree: s.forward.argmax_all,
    forward_batch_max_abs: s.forward_batch.max_abs,
    hf_eager_vs_sdpa_max_abs: s.hf_eager_vs_sdpa,
    generate: s.generate,
    generate_batch: s.generate_batch,
    generate_agree_any_impl: s.generate_agree_any_impl,
    generate_batch_agree_any_impl: s.generate_batch_agree_any_impl,
    fused_attention: load.fused_attention,
    ref: `torch ${load.ref_torch}, transformers ${load.ref_transformers}`,
  });
}

const keyOf = (r) => (r.what === 'forward' ? `forward B=${r.batch} T=${r.seq} logits=${r.logits}`
  : r.what === 'generate' ? `generate B=${r.batch} T=${r.prompt_len} N=${r.new_tokens}` : null);
for (const f of files.filter((n) => /^bench-.*\.log$/.test(n))) {
  for (const r of jsonLines(path.join(outDir, f))) {
    if (r.bench !== 'ngate' && r.bench !== 'hf') continue;
    const slim = { what: r.what, model: r.model, device: r.device, dtype: r.dtype };
    for (const k of ['batch', 'seq', 'prompt_len', 'new_tokens', 'logits', 'median_s', 'tokens_per_s', 'new_tokens_per_s',
      'decode_ms_per_step', 'decode_tokens_per_s', 'first_token_s', 'full_length', 'load_s', 'attn', 'gpu', 'torch', 'transformers']) {
      if (r[k] !== undefined) slim[k] = r[k];
    }
    summary.benchmark[r.bench].push(slim);
  }
}
// ngate / hf throughput for each measurement both sides made (> 1: ngate faster).
for (const a of summary.benchmark.ngate) {
  const k = keyOf(a);
  if (!k) continue;
  const b = summary.benchmark.hf.find((x) => keyOf(x) === k && x.model === a.model);
  if (!b) continue;
  const rate = (r) => r.tokens_per_s ?? r.new_tokens_per_s;
  const row = { case: k, model: a.model, ngate: rate(a), hf: rate(b), ratio: Math.round((rate(a) / rate(b)) * 100) / 100 };
  if (a.decode_ms_per_step !== undefined && b.decode_ms_per_step !== undefined) {
    row.decode_ms_per_step = { ngate: a.decode_ms_per_step, hf: b.decode_ms_per_step };
  }
  summary.speedup.push(row);
}

const text = JSON.stringify(summary, null, 2) + '\n';
fs.writeFileSync(path.join(outDir, 'summary.json'), text);
process.stdout.write(text);
