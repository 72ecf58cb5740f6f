#!/usr/bin/env node
'use strict';
// An estimate on paper, not a measurement: the time of the paper's layer
// localisation (appendix 10.1: 2,640 training pairs, centre searched over
// layers 3–19, radius 3, LLaVA-1.5-7B) with locateLayer on 1, 8 and 64 GPUs,
// from the one GPU throughput this project has measured (benchmarks/RESULTS.md:
// TinyLlama-1.1B shape, bfloat16, H100, forward B=8 T=512) scaled by FLOPs,
// and an assumed NCCL bus bandwidth. Every assumption is an option; the
// defaults are the ones RESULTS.md states.
//
//   node benchmarks/dist-estimate.js [--gpus 1,8,64] [--json]
const { parseArgs } = require('./lib/args');

const a = parseArgs(process.argv.slice(2), ['json']);
const num = (k, d) => (a[k] !== undefined ? Number(a[k]) : d);
const A = {
  // Measured (RESULTS.md): 150,146 tokens/s forward for the 1.1B shape; 2 FLOPs per weight per token.
  measuredTokensPerS: num('tokens-per-s', 150146),
  measuredParams: num('measured-params', 0.969e9),   // TinyLlama-1.1B without embeddings: 22 × 44.0 M
  // LLaVA-1.5-7B's decoder (LLaMA-2-7B): 32 layers of 4·4096² + 3·4096·11008 weights.
  layers: 32, layerParams: 4 * 4096 * 4096 + 3 * 4096 * 11008,
  // The data: 2,640 pairs; 576 image positions and ~74 text positions per query;
  // ~50 positions from the first subject token to the answer's end.
  pairs: num('pairs', 2640), seq: num('seq', 650), suffix: num('suffix', 50),
  search: [3, 19], radius: 3, centre: num('centre', 11),
  maskSteps: 20, maskBatch: 8, editEpochs: 10, editBatch: 8,
  validationPairs: num('val', 264), newTokens: 32, evalBatch: 16,
  // Decoding a batch is bound by weights read and per-layer overhead, not FLOPs:
  // the measured 1.1B decode step (480.8 tokens/s at B=8: 16.6 ms for 22 layers), scaled to 32 layers.
  decodeStepS: num('decode-step-ms', 16.6 * 32 / 22) / 1000,
  // Assumed NCCL all-reduce bus bandwidth (not measured here): NVLink within a node, InfiniBand across.
  busIntraGBs: num('bus-intra', 450), busInterGBs: num('bus-inter', 45), gpusPerNode: 8,
};
const flopsPerS = A.measuredTokensPerS * 2 * A.measuredParams;     // the effective rate the 1.1B forward reached
const fwdPerTokenLayer = 2 * A.layerParams;
const s = (flops) => flops / flopsPerS;

const searched = []; for (let l = A.search[0]; l <= A.search[1]; l++) searched.push(l);
const edited = []; for (let l = A.centre - A.radius; l <= A.centre + A.radius; l++) edited.push(l);
const batches = Math.ceil(A.pairs / A.maskBatch);

// One (layer, batch) unit of masks: per step, both queries' suffix through the layers from l up, forward and
// backward to the activations (weights frozen): 2 × forward; once per batch, the whole sequences forward.
const maskUnitS = (l) => s(A.maskBatch * 2 * (A.maskSteps * A.suffix * (A.layers - l) * fwdPerTokenLayer * 2 + A.seq * A.layers * fwdPerTokenLayer));
// One trial edit: every epoch, both queries' whole sequences through the layers from l up, forward and
// backward (activation gradients, plus the FFN weights of layer l: small); the layers below once.
const editS = (l) => s(A.editEpochs * A.pairs * 2 * A.seq * (A.layers - l) * fwdPerTokenLayer * 2 + A.pairs * 2 * A.seq * l * fwdPerTokenLayer);
const evalS = () => s(2 * A.validationPairs * A.seq * A.layers * fwdPerTokenLayer) + Math.ceil(2 * A.validationPairs / A.evalBatch) * A.newTokens * A.decodeStepS;
const rorgS = () => s(A.pairs * A.seq * A.layers * fwdPerTokenLayer) + Math.ceil(A.pairs / A.evalBatch) * 48 * A.decodeStepS;

function plan(W) {
  // Phase 1: (layer, batch) units dealt out over W ranks; the last one waits at most one unit.
  const units = searched.map((l) => maskUnitS(l)).flatMap((t) => new Array(batches).fill(t));
  const masks = units.reduce((x, y) => x + y, 0) / W + Math.max(...units);
  // Phase 2: one rank per trial layer; W ranks take ceil(7 / W) layers each, the slowest sets the time.
  const trials = edited.map((l) => editS(l) + evalS()).sort((x, y) => y - x);
  let phase2 = 0;
  for (let k = 0; k < trials.length; k += W) phase2 += trials[k];
  const rorg = rorgS() / W;
  return { W, rorgH: rorg / 3600, masksH: masks / 3600, trialsH: phase2 / 3600, totalH: (rorg + masks + phase2) / 3600 };
}

// The data-parallel edit of one layer (ngate edit): bytes per step and the all-reduce time on NCCL's ring.
const stepBytes = 3 * 4096 * 11008 * 4 + 8;
const ring = (W, GBs) => (2 * (W - 1) / W) * stepBytes / (GBs * 1e9);
const out = {
  assumptions: A, effectiveTflops: flopsPerS / 1e12,
  plans: (a.gpus || '1,8,64').split(',').map(Number).map(plan),
  editAllReduce: { bytesPerStep: stepBytes, ms8Nvlink: 1e3 * ring(8, A.busIntraGBs), ms64Ib: 1e3 * ring(64, A.busInterGBs),
    stepsPerEdit: A.editEpochs * Math.ceil(A.pairs / A.editBatch) },
};
if (a.json) { console.log(JSON.stringify(out, null, 2)); process.exit(0); }
console.log(`effective rate assumed for the 7B: ${out.effectiveTflops.toFixed(0)} TFLOP/s (the measured 1.1B forward's)`);
console.log('| GPUs | r_org (h) | masks, layers 3–19 (h) | 7 trial edits + evaluations (h) | total (h) |');
console.log('|---|---|---|---|---|');
for (const p of out.plans) console.log(`| ${p.W} | ${p.rorgH.toFixed(2)} | ${p.masksH.toFixed(2)} | ${p.trialsH.toFixed(2)} | ${p.totalH.toFixed(2)} |`);
console.log(`data-parallel edit: ${(stepBytes / 1e6).toFixed(0)} MB per step; ring all-reduce ≈ ${out.editAllReduce.ms8Nvlink.toFixed(1)} ms on 8 GPUs over NVLink ` +
  `(${A.busIntraGBs} GB/s), ${out.editAllReduce.ms64Ib.toFixed(0)} ms on 64 over InfiniBand (${A.busInterGBs} GB/s); ${out.editAllReduce.stepsPerEdit} steps per edit`);
