#!/usr/bin/env node
'use strict';
// The method's speed through the TypeScript API: learnMask (masks per second),
// gatedEdit (seconds per epoch over a fixed set of pairs) and evaluate
// (generated tokens per second), on one checkpoint, for two sides in one run:
//
//   ngate  the library's defaults: pairs batched, the layers below the first
//          masked/edited layer computed once, the keys and values before the
//          first subject token kept (learnMask);
//   plain  the same engine doing what the straightforward loop does: masks one
//          pair at a time with every layer and position recomputed at every
//          step (reuseLowerLayers: false, reusePrefix: false, batch 1); the edit
//          with the same batches but every layer recomputed every epoch;
//          generation one query at a time.
//
// It checks that both sides learn the same masks (max |Δm|) and can export the
// exact token ids, subject positions and answer targets it used (--export), so
// that benchmarks/method_hf.py runs the transformers baseline on the same data
// and compares its masks (--compare FILE).
//
//   node benchmarks/method.js [--model DIR] [--device cpu|cuda] [--dtype float32|bfloat16]
//     [--pairs 32] [--layer 3] [--steps 20] [--lr 0.1] [--batch 8] [--epochs 2] [--edit-batch 8]
//     [--eval-pairs 16] [--new-tokens 32] [--sides ngate,plain] [--plain-pairs N]
//     [--tasks mask,edit,eval] [--image FILE] [--export FILE] [--compare FILE] [--threads N] [--tag TEXT]
//     [--peak-tflops 790]
//
// Defaults: the embedded demo model on the CPU. Prints one JSON line per
// measurement; the last line is a summary.
const fs = require('fs');
const path = require('path');

const { applyThreads, parseArgs } = require('./lib/args');

applyThreads();
const lib = require(process.env.NGATE_DIST || path.join(__dirname, '..', 'dist'));

const now = () => Number(process.hrtime.bigint()) / 1e9;
const emit = (o) => console.log(JSON.stringify(o));

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The first n pairs, round-robin over the categories. */
function balanced(pairs, n) {
  const by = new Map();
  for (const p of pairs) by.set(p.category, [...(by.get(p.category) || []), p]);
  const queues = [...by.values()];
  const out = [];
  for (let r = 0; out.length < n && queues.some((q) => q.length > r); r++) {
    for (const q of queues) if (r < q.length && out.length < n) out.push(q[r]);
  }
  return out;
}

/**
 * The FLOPs one mask step must do at the least, summed over the pairs: for each
 * sequence, from its own first subject token on, the forward pass and the
 * backward pass to the activations (weights are frozen, so no weight
 * gradients) through the layers from the masked one up, 2 + 2 FLOPs per
 * weight per token, and the LM head at the answer positions. Attention-score
 * products are left out, so this is a lower bound.
 */
function usefulMaskFlops(c, prepared, layer) {
  const hd = c.headDim || c.hiddenSize / c.numHeads;
  const perLayer = c.hiddenSize * (c.numHeads * hd) * 2 + c.hiddenSize * (c.numKvHeads * hd) * 2 + 3 * c.hiddenSize * c.intermediateSize;
  let total = 0;
  for (const p of prepared) {
    for (const s of [p.sensitive, p.benign]) {
      const fromSubject = s.ids.length - s.subjectPositions[0];
      const answer = s.ids.length - s.answerStart;
      total += 4 * perLayer * (c.numLayers - layer) * fromSubject + 4 * c.hiddenSize * c.vocabSize * answer;
    }
  }
  return total;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const modelDir = path.resolve(a.model || lib.demoModelDir());
  const device = a.device || 'cpu';
  const dtype = a.dtype || (device === 'cpu' ? 'float32' : 'bfloat16');
  const nPairs = Number(a.pairs || 32);
  const layer = Number(a.layer || 3);
  const steps = Number(a.steps || 20);
  const lr = Number(a.lr || 0.1);
  const batch = Number(a.batch || lib.MASK_DEFAULTS.batchSize);
  const epochs = Number(a.epochs || 2);
  const editBatch = Number(a['edit-batch'] || 8);
  const evalPairs = Number(a['eval-pairs'] || 16);
  const newTokens = Number(a['new-tokens'] || 32);
  const sides = (a.sides || 'ngate,plain').split(',');
  const tasks = new Set((a.tasks || 'mask,edit,eval').split(','));
  const tag = a.tag || '';
  // bfloat16 dense peak of the GPU the share is reported against (about 790 TFLOP/s for an H100, as issue 6 puts it).
  const peakTflops = Number(a['peak-tflops'] || 790);

  const t0 = now();
  const model = await lib.loadModel(modelDir, { device, dtype });
  emit({ kind: 'load', modelDir, device, dtype, seconds: now() - t0, layers: model.config.numLayers, hidden: model.config.hiddenSize, tag });

  let pairs = balanced(lib.buildPrivacyPairs({ seed: 0 }).train, nPairs);
  if (a.image) pairs = pairs.map((p) => ({ ...p, image: path.resolve(a.image) }));
  pairs = await lib.fillBenignAnswers(model, pairs, { maxNewTokens: 24 });

  const prepared = await lib.preparePairs(model, pairs);
  const tokens = prepared.reduce((s, p) => s + p.sensitive.ids.length + p.benign.ids.length, 0);
  const suffix = prepared.reduce((s, p) => {
    const first = Math.min(p.sensitive.subjectPositions[0], p.benign.subjectPositions[0]);
    return s + (p.sensitive.ids.length - first) + (p.benign.ids.length - first);
  }, 0);
  emit({ kind: 'data', pairs: pairs.length, meanSequenceTokens: tokens / (2 * pairs.length), meanTokensFromFirstSubject: suffix / (2 * pairs.length), tag });
  if (a.export) {
    // What the baseline needs to run the same objective on the same tokens.
    const doc = {
      model: modelDir, layer, steps, lr, alpha: lib.MASK_DEFAULTS.alpha, l1: lib.MASK_DEFAULTS.l1, epochs,
      editLr: 1e-5, editBatch, newTokens, evalPairs,
      pairs: prepared.map((p) => ({
        id: p.id,
        sensitive: { ids: p.sensitive.ids, subjectPositions: p.sensitive.subjectPositions, answerStart: p.sensitive.answerStart, image: p.sensitive.image || null },
        benign: { ids: p.benign.ids, subjectPositions: p.benign.subjectPositions, answerStart: p.benign.answerStart, image: p.benign.image || null },
      })),
    };
    fs.writeFileSync(a.export, JSON.stringify(doc));
    emit({ kind: 'export', file: a.export });
  }

  const results = {};
  // --plain-pairs shortens only the plain side's masks (the slow part); both
  // sides edit and evaluate the same pairs, so seconds per epoch compare.
  const plainPairs = Number(a['plain-pairs'] || pairs.length);
  let gate = null;
  for (const side of sides) {
    const opts = side === 'plain' ? { reuseLowerLayers: false, reusePrefix: false, batchSize: 1 } : { batchSize: batch };
    const sidePairs = side === 'plain' ? pairs.slice(0, plainPairs) : pairs;
    const r = (results[side] = {});
    if (tasks.has('mask')) {
      const s = now();
      const masks = await lib.learnMask(model, sidePairs, { layers: [layer], steps, lr, ...opts });
      const seconds = now() - s;
      r.masks = masks;
      const flops = usefulMaskFlops(model.config, prepared.slice(0, sidePairs.length), layer) * steps;
      emit({
        kind: 'learnMask', side, pairs: sidePairs.length, steps, seconds, masksPerSecond: sidePairs.length / seconds,
        usefulTflopPerSecond: flops / seconds / 1e12, shareOfPeak: flops / seconds / (peakTflops * 1e12), tag,
      });
    }
    if (tasks.has('edit')) {
      // One gate for every side (from the first side's masks): the edit's cost does not depend on it.
      gate = gate || lib.buildGate(r.masks || (await lib.learnMask(model, pairs.slice(0, 2), { layers: [layer], steps: 1 })));
      // The FFN weights as they were, restored after the measurement so that every side edits the same model.
      const snapshot = await model.runNative(undefined, (n) => n.snapshotFfn([layer]));
      const s = now();
      // The same batches on both sides (a batch is one Adam step); only the reuse differs.
      const rep = await lib.gatedEdit(model, pairs, gate, { epochs, lr: 1e-5, batchSize: editBatch, reuseLowerLayers: side !== 'plain' });
      const seconds = now() - s;
      emit({ kind: 'gatedEdit', side, pairs: pairs.length, epochs, seconds, secondsPerEpoch: seconds / epochs, lastLoss: rep.epochLosses.at(-1), tag });
      await model.runNative(undefined, (n) => n.restoreFfn(snapshot, true));
    }
    if (tasks.has('eval')) {
      const evalSet = pairs.slice(0, evalPairs);
      const s = now();
      const rep = await lib.evaluate(model, evalSet, { maxNewTokens: newTokens, batchSize: side === 'plain' ? 1 : 16 });
      const seconds = now() - s;
      const total = rep.outcomes.reduce((x, o) => x + o.generatedTokens, 0);
      emit({ kind: 'evaluate', side, queries: rep.outcomes.length, seconds, generatedTokens: total, tokensPerSecond: total / seconds, tag });
    }
  }

  const summary = { kind: 'summary', tag };
  if (results.ngate?.masks && results.plain?.masks) {
    const n = results.plain.masks.pairIds.length * results.plain.masks.hiddenSize;
    summary.maxAbsMaskDiffNgateVsPlain = maxAbsDiff(results.ngate.masks.masks.subarray(0, n), results.plain.masks.masks);
  }
  if (a.compare && results.ngate?.masks) {
    const ref = JSON.parse(fs.readFileSync(a.compare, 'utf8'));
    const H = results.ngate.masks.hiddenSize;
    const n = ref.masks.length;
    summary.baselineMasks = ref.masks.length / H;
    summary.maxAbsMaskDiffVsBaseline = maxAbsDiff(results.ngate.masks.masks.subarray(0, n), ref.masks);
  }
  emit(summary);
  model.dispose();
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
