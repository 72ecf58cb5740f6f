#!/usr/bin/env node
'use strict';
// Forward and greedy-generation throughput of @ngate/core on one checkpoint.
// Prints one JSON line per measurement (see benchmarks/README.md).
//
//   node benchmarks/run.js --shape tiny|small|1b|7b [--device cpu|cuda] [--dtype float32|bfloat16|float16]
//   node benchmarks/run.js --model DIR ...
//   common: --batch 1,4 --seq 128 --new-tokens 32 --repeats 5 --warmup 1 --logits last|all
//           [--threads N] [--gen-batch LIST] [--gen-seq LIST] [--no-forward] [--no-generate] [--work DIR] [--tag TEXT]
const path = require('path');
const os = require('os');
const { SHAPES, ensureCheckpoint, promptIds, paramCount } = require('./lib/checkpoint');
const { applyThreads, parseArgs: parseArgList } = require('./lib/args');
const { median } = require('./lib/stats');

applyThreads();
const lib = require(process.env.NGATE_DIST || path.join(__dirname, '..', 'dist'));

const parseArgs = (argv) => parseArgList(argv, ['no-forward', 'no-generate', 'tie', 'help']);

const ints = (s) => String(s).split(',').map((x) => {
  const n = Number(x);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`not a positive integer: ${x}`);
  return n;
});


const now = () => Number(process.hrtime.bigint()) / 1e9;

async function timeIt(fn, warmup, repeats) {
  for (let i = 0; i < warmup; i++) await fn();
  const times = [];
  let last;
  for (let i = 0; i < repeats; i++) {
    const t0 = now();
    last = await fn();
    times.push(now() - t0);
  }
  return { times, median: median(times), min: Math.min(...times), last };
}

const r4 = (x) => Math.round(x * 1e4) / 1e4;
const r1 = (x) => Math.round(x * 10) / 10;

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    console.log('see the header of benchmarks/run.js and benchmarks/README.md');
    return;
  }
  const device = args.device ?? 'cpu';
  const dtype = args.dtype ?? (device === 'cpu' ? 'float32' : 'bfloat16');
  const repeats = ints(args.repeats ?? 5)[0];
  const warmup = args.warmup !== undefined ? Number(args.warmup) : 1;
  const batches = ints(args.batch ?? 1);
  const seqs = ints(args.seq ?? 128);
  const genBatches = args['gen-batch'] ? ints(args['gen-batch']) : batches;
  const genSeqs = args['gen-seq'] ? ints(args['gen-seq']) : seqs;
  const newTokens = ints(args['new-tokens'] ?? 32)[0];
  const logitsMode = args.logits ?? 'last';
  if (!['last', 'all'].includes(logitsMode)) throw new Error('--logits must be last or all');

  let dir = args.model;
  let modelName = dir ? path.basename(path.resolve(dir)) : null;
  let writeS = null;
  if (!dir) {
    const shape = args.shape ?? 'tiny';
    if (!SHAPES[shape]) throw new Error(`unknown --shape ${shape} (expected ${Object.keys(SHAPES).join(', ')})`);
    // Stored in the checkpoint dtype, so loading casts nothing (float16 weights are fine for any compute dtype).
    const work = args.work ?? path.join(__dirname, '..', '.bench');
    dir = path.join(work, `random-${shape}-${dtype}`);
    const t0 = now();
    const r = ensureCheckpoint(lib, dir, shape, { dtype, tie: args.tie ? true : undefined });
    writeS = r.reused ? null : now() - t0;
    modelName = `random-${shape}`;
    if (!r.reused) process.stderr.write(`wrote ${dir} in ${writeS.toFixed(1)} s\n`);
  }

  const info = await lib.nativeInfo();
  const t0 = now();
  const model = await lib.loadModel(dir, { device, dtype });
  const loadS = now() - t0;
  const c = model.config;
  const base = {
    bench: 'ngate',
    model: modelName,
    params: paramCount({ hidden: c.hiddenSize, heads: c.numHeads, kvHeads: c.numKvHeads, intermediate: c.intermediateSize,
      layers: c.numLayers, vocab: c.vocabSize, tie: c.tieWordEmbeddings }),
    device,
    dtype,
    torch: info.torchVersion,
    threads: info.threads,
    fused_attention: info.fusedAttention,
    host: `${os.cpus().length} cpus`,
  };
  if (args.tag) base.tag = args.tag;
  console.log(JSON.stringify({ ...base, what: 'load', load_s: r4(loadS), write_s: writeS === null ? undefined : r4(writeS),
    parameter_bytes: model.parameterBytes, eos_ids: model.eosTokenIds }));

  const V = c.vocabSize;
  if (!args['no-forward']) {
    for (const B of batches) {
      for (const T of seqs) {
        const ids = promptIds(B, T, V);
        const r = await timeIt(() => model.forward(ids, { lastOnly: logitsMode === 'last' }), warmup, repeats);
        console.log(JSON.stringify({ ...base, what: 'forward', batch: B, seq: T, logits: logitsMode, repeats, warmup,
          median_s: r4(r.median), min_s: r4(r.min), tokens_per_s: r1((B * T) / r.median) }));
      }
    }
  }

  if (!args['no-generate']) {
    for (const B of genBatches) {
      for (const T of genSeqs) {
        const prompts = promptIds(B, T, V, 1);
        const gen = (n) => () => model.generate(prompts, { maxNewTokens: n });
        const full = await timeIt(gen(newTokens), warmup, repeats);
        // One-token runs: prefill plus the first token; the difference is the decode loop alone.
        const one = newTokens > 1 ? await timeIt(gen(1), warmup, repeats) : null;
        const produced = full.last.reduce((a, g) => a + g.ids.length, 0);
        const rec = { ...base, what: 'generate', batch: B, prompt_len: T, new_tokens: newTokens, repeats, warmup,
          median_s: r4(full.median), min_s: r4(full.min), new_tokens_per_s: r1(produced / full.median),
          generated_tokens: produced, full_length: produced === B * newTokens };
        if (one) {
          const decodeS = full.median - one.median;
          Object.assign(rec, { first_token_s: r4(one.median), decode_ms_per_step: r4((decodeS / (newTokens - 1)) * 1000),
            decode_tokens_per_s: r1((B * (newTokens - 1)) / decodeS) });
        }
        if (!rec.full_length) rec.note = 'some prompt stopped at EOS: rates count the tokens actually generated';
        console.log(JSON.stringify(rec));
      }
    }
  }
  model.dispose();
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
