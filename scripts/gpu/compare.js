#!/usr/bin/env node
'use strict';
// Compares @ngate/core with the transformers reference that
// scripts/gpu/make_reference.py wrote into a checkpoint folder.
//
//   node scripts/gpu/compare.js DIR [DIR...] [--device cuda|cpu] [--dtype D] [--primary sdpa|eager] [--tag TEXT]
//
// For every prompt of DIR/reference.json: forward() alone and all prompts in
// one padded batch, logits against transformers' (eager and sdpa); greedy
// generate() alone and batched, tokens against transformers' generate().
// One JSON line per case, then one summary line per DIR ("summary": true).
// Exit code 0 whatever the numbers are; non-zero only when something crashed.
const fs = require('fs');
const path = require('path');

const lib = require(process.env.NGATE_DIST || path.join(__dirname, '..', '..', 'dist'));

function parseArgs(argv) {
  const out = { dirs: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dir') out.dirs.push(argv[++i]);
    else if (a.startsWith('--')) out[a.slice(2)] = argv[++i];
    else out.dirs.push(a);
  }
  return out;
}

/** A float32 little-endian file the reference script wrote. */
function readF32(dir, file) {
  const buf = fs.readFileSync(path.join(dir, file));
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

function readLogits(dir, entry) {
  const [T, V] = entry.shape;
  const data = entry.data ? Float32Array.from(entry.data) : readF32(dir, entry.file);
  if (data.length !== T * V) throw new Error(`${entry.file || 'inline logits'}: ${data.length} values, shape says ${T}x${V}`);
  return { T, V, data };
}

/** ours[offset + t*V + v] against ref[t*V + v] for t < T. */
function diffStats(ours, offset, ref, T, V) {
  let maxAbs = 0, sumAbs = 0, refMax = 0, argmaxAgree = 0, nonFinite = 0;
  let worst = { pos: 0, tok: 0 };
  for (let k = 0; k < T * V; k++) refMax = Math.max(refMax, Math.abs(ref[k]));
  const floor = 1e-2 * refMax; // elementwise relative difference, floored at 1% of max |ref| so near-zero logits do not dominate
  let maxElemRel = 0;
  for (let t = 0; t < T; t++) {
    let am = 0, bm = 0;
    for (let v = 0; v < V; v++) {
      const a = ours[offset + t * V + v], b = ref[t * V + v];
      if (!Number.isFinite(a)) { nonFinite++; continue; }
      const d = Math.abs(a - b);
      sumAbs += d;
      if (d > maxAbs) { maxAbs = d; worst = { pos: t, tok: v }; }
      const rel = d / Math.max(Math.abs(b), floor);
      if (rel > maxElemRel) maxElemRel = rel;
      if (a > ours[offset + t * V + am]) am = v;
      if (b > ref[t * V + bm]) bm = v;
    }
    if (am === bm) argmaxAgree++;
  }
  return {
    max_abs: maxAbs,
    mean_abs: sumAbs / (T * V),
    ref_max_abs: refMax,
    max_rel: refMax > 0 ? maxAbs / refMax : 0, // max |ours - ref| / max |ref|
    max_elem_rel: maxElemRel,
    argmax_agree: `${argmaxAgree}/${T}`,
    argmax_agree_all: argmaxAgree === T,
    worst_at: worst,
    non_finite: nonFinite,
  };
}

function margin(logits, offset, V) {
  let a = -Infinity, b = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = logits[offset + v];
    if (x > a) { b = a; a = x; } else if (x > b) b = x;
  }
  return a - b;
}

function argmax(logits, offset, V) {
  let m = 0;
  for (let v = 1; v < V; v++) if (logits[offset + v] > logits[offset + m]) m = v;
  return m;
}

/** Our generated ids (with the EOS that stopped decoding, if any) against each reference. */
function genCase(g, ref, i, V) {
  const ours = g.ids.slice();
  if (g.finishReason === 'eos' && g.logits) ours.push(argmax(g.logits, g.ids.length * V, V));
  const out = { ours, finish_reason: g.finishReason, vs: {} };
  for (const impl of ref.impls) {
    const theirs = ref.generated[impl][i];
    let k = 0;
    while (k < ours.length && k < theirs.length && ours[k] === theirs[k]) k++;
    const agree = k === theirs.length && ours.length === theirs.length;
    const r = { agree, matching_prefix: k };
    if (!agree) {
      r.first_divergence = k;
      r.ours_token = ours[k] ?? null;
      r.ref_token = theirs[k] ?? null;
      const rm = ref.gen_margins?.[impl]?.[i]?.[k];
      if (rm !== undefined) r.ref_top2_margin = rm; // a small margin: a near tie, flipped by rounding
      if (g.logits && k < g.logits.length / V) r.ours_top2_margin = margin(g.logits, k * V, V);
    }
    out.vs[impl] = r;
  }
  return out;
}

/** 'agree', or where the first token differs and how close transformers' top two logits were there. */
function verdict(v) {
  if (v.agree) return 'agree';
  const m = v.ref_top2_margin !== undefined ? ` (ref top-2 margin ${Number(v.ref_top2_margin.toPrecision(3))})` : '';
  return `diverge@${v.first_divergence}${m}`;
}

const round = (x) => (typeof x === 'number' ? Number(x.toPrecision(4)) : x);
function roundDeep(o) {
  if (Array.isArray(o)) return o.map(roundDeep);
  if (o && typeof o === 'object') return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, roundDeep(v)]));
  return round(o);
}
const emit = (o) => console.log(JSON.stringify(roundDeep(o)));

async function compareDir(dir, args) {
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8'));
  const device = args.device ?? 'cuda';
  const dtype = args.dtype ?? ref.dtype;
  const primary = args.primary ?? (ref.impls.includes('sdpa') ? 'sdpa' : ref.impls[0]);
  const name = path.basename(path.resolve(dir));
  const base = { dir: name, device, dtype };
  if (args.tag) base.tag = args.tag;
  const t0 = Date.now();
  const model = await lib.loadModel(dir, { device, dtype });
  const info = await lib.nativeInfo();
  const V = model.config.vocabSize;
  emit({ ...base, case: 'load', load_s: (Date.now() - t0) / 1000, torch: info.torchVersion, fused_attention: info.fusedAttention,
    ref_device: ref.device, ref_torch: ref.torch, ref_transformers: ref.transformers, eos_ids: model.eosTokenIds,
    prompt_lens: ref.prompts.map((p) => p.length) });

  const refLogits = {};
  for (const impl of ref.impls) refLogits[impl] = ref.logits[impl].map((e) => readLogits(dir, e));
  const summary = { ...base, summary: true, primary, forward: { max_abs: 0, max_rel: 0, argmax_all: true },
    forward_batch: { max_abs: 0, max_rel: 0, argmax_all: true }, generate: [], generate_batch: [], hf_eager_vs_sdpa: ref.eager_vs_sdpa?.max_abs };
  const fold = (acc, st) => {
    acc.max_abs = Math.max(acc.max_abs, st.max_abs);
    acc.max_rel = Math.max(acc.max_rel, st.max_rel);
    acc.argmax_all = acc.argmax_all && st.argmax_agree_all;
  };

  // forward, each prompt alone
  for (const [i, ids] of ref.prompts.entries()) {
    const r = await model.forward([ids]);
    const vs = {};
    for (const impl of ref.impls) {
      const { T, data } = refLogits[impl][i];
      vs[impl] = diffStats(r.logits, 0, data, T, V);
    }
    fold(summary.forward, vs[primary]);
    emit({ ...base, case: 'forward', prompt: i, len: ids.length, vs });
  }

  // forward, all prompts in one right-padded batch
  {
    const r = await model.forward(ref.prompts);
    const Tmax = r.shape[1];
    for (const [i, ids] of ref.prompts.entries()) {
      const vs = {};
      for (const impl of ref.impls) {
        const { T, data } = refLogits[impl][i];
        vs[impl] = diffStats(r.logits, i * Tmax * V, data, T, V);
      }
      fold(summary.forward_batch, vs[primary]);
      emit({ ...base, case: 'forward_batch', prompt: i, len: ids.length, batch: ref.prompts.length, vs });
    }
  }

  const N = ref.max_new_tokens;
  let eitherAlone = 0, eitherBatch = 0; // prompts whose tokens equal those of at least one transformers attention
  // greedy generation, each prompt alone
  for (const [i, ids] of ref.prompts.entries()) {
    const [g] = await model.generate([ids], { maxNewTokens: N, returnLogits: true });
    const c = genCase(g, ref, i, V);
    summary.generate.push(verdict(c.vs[primary]));
    if (Object.values(c.vs).some((v) => v.agree)) eitherAlone++;
    emit({ ...base, case: 'generate', prompt: i, len: ids.length, ...c });
  }
  // greedy generation, all prompts batched (left/right padding is the library's business)
  {
    const gs = await model.generate(ref.prompts, { maxNewTokens: N, returnLogits: true });
    for (const [i, g] of gs.entries()) {
      const c = genCase(g, ref, i, V);
      summary.generate_batch.push(verdict(c.vs[primary]));
      if (Object.values(c.vs).some((v) => v.agree)) eitherBatch++;
      emit({ ...base, case: 'generate_batch', prompt: i, len: ref.prompts[i].length, ...c });
    }
  }
  model.dispose();
  summary.generate_agree_any_impl = `${eitherAlone}/${ref.prompts.length}`;
  summary.generate_batch_agree_any_impl = `${eitherBatch}/${ref.prompts.length}`;
  summary.generate_agree = `${summary.generate.filter((x) => x === 'agree').length}/${summary.generate.length}`; // prompts alone
  summary.generate_batch_agree = `${summary.generate_batch.filter((x) => x === 'agree').length}/${summary.generate_batch.length}`;
  emit(summary);
  return summary;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.dirs.length === 0) {
    console.error('usage: compare.js DIR [DIR...] [--device cuda|cpu] [--dtype float32|bfloat16|float16] [--primary sdpa|eager]');
    process.exit(2);
  }
  for (const dir of args.dirs) await compareDir(dir, args);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  });
}

// scripts/gpu/compare_llava.js reads and reports the same way.
module.exports = { lib, parseArgs, readF32, argmax, emit };
