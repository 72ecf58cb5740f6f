#!/usr/bin/env node
'use strict';
// Compares @ngate/core's LLaVA with the transformers reference that
// scripts/gpu/make_llava_reference.py wrote into a checkpoint folder.
//
//   node scripts/gpu/compare_llava.js DIR [--device cuda|cpu] [--dtype D] [--primary sdpa|eager]
//
// Per case (an image at the tower's size, an image that needs a resize, a
// text-only prompt): our preprocessing against CLIPImageProcessor's
// pixel_values, forward() logits against LlavaForConditionalGeneration's for
// the same image and prompt, and greedy generate() tokens. One JSON line per
// case, then a summary line with the largest |Δlogit|. Exit code 0 whatever
// the numbers are; non-zero only when something crashed.
const fs = require('fs');
const path = require('path');

const { lib, parseArgs, readF32, argmax, emit } = require('./compare');

function maxAbs(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Positions (of T) where both [T, V] logit arrays pick the same token. */
function argmaxAgree(a, b, T, V) {
  let agree = 0;
  for (let t = 0; t < T; t++) if (argmax(a, t * V, V) === argmax(b, t * V, V)) agree++;
  return `${agree}/${T}`;
}

async function compareDir(dir, args) {
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8'));
  const device = args.device ?? 'cuda';
  const dtype = args.dtype ?? ref.dtype;
  const primary = args.primary ?? (ref.impls.includes('sdpa') ? 'sdpa' : ref.impls[0]);
  const base = { dir: path.basename(path.resolve(dir)), device, dtype };
  const model = await lib.loadModel(dir, { device, dtype });
  const V = model.config.vocabSize;
  emit({ ...base, case: 'load', image_tokens: model.llava.imageTokens, ref_image_tokens: ref.image_tokens,
    ref_transformers: ref.transformers, ref_torch: ref.torch, torch: (await lib.nativeInfo()).torchVersion,
    keys_sample: [...lib.readSafetensorsHeader(path.join(dir, 'model.safetensors')).tensors.keys()].slice(0, 4) });
  const summary = { ...base, summary: true, primary, max_abs_logit: 0, max_abs_logit_exact_image: 0, max_abs_pixel: {}, generate: {} };
  for (const c of ref.cases) {
    const image = c.image ? path.join(dir, c.image) : null;
    const out = { ...base, case: c.name };
    if (image) {
      const ours = await lib.preprocessImage(image, model.imagePreprocessing, c.name);
      out.max_abs_pixel = maxAbs(ours, readF32(dir, c.pixel_values));
      summary.max_abs_pixel[c.name] = out.max_abs_pixel;
    }
    const r = await model.forward([c.prompt], image ? { images: [image] } : {});
    out.vs = {};
    for (const impl of ref.impls) {
      const theirs = readF32(dir, c.logits[impl].file);
      const [T] = c.logits[impl].shape;
      out.vs[impl] = { max_abs: maxAbs(r.logits, theirs), argmax_agree: argmaxAgree(r.logits, theirs, T, V) };
    }
    const d = out.vs[primary].max_abs;
    summary.max_abs_logit = Math.max(summary.max_abs_logit, d);
    if (c.name !== 'resized') summary.max_abs_logit_exact_image = Math.max(summary.max_abs_logit_exact_image, d);
    const [g] = await model.generate([c.prompt], { maxNewTokens: ref.max_new_tokens, ...(image ? { images: [image] } : {}) });
    out.generated = g.ids;
    out.generate_agree = Object.fromEntries(ref.impls.map((impl) => [impl, JSON.stringify(g.ids) === JSON.stringify(c.generated[impl])]));
    summary.generate[c.name] = out.generate_agree[primary] ? 'agree' : 'differ';
    emit(out);
  }
  summary.hf_eager_vs_sdpa = ref.eager_vs_sdpa;
  model.dispose();
  emit(summary);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.dirs.length === 0) {
    console.error('usage: compare_llava.js DIR [DIR...] [--device cuda|cpu] [--dtype float32|bfloat16] [--primary sdpa|eager]');
    process.exit(2);
  }
  for (const dir of args.dirs) await compareDir(dir, args);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
