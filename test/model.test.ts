// The LLaMA model through the addon: logits against an independent
// JavaScript reference, and the invariants the rest of the library relies on.
import * as fs from 'fs';
import * as path from 'path';
import * as v8 from 'v8';
import * as vm from 'vm';
import { loadModel, Model } from '../lib';
import { loadAddon } from '../lib/model/native';
import { makeTempDir, TinyLlama, writeTinyLlama } from './fixtures/checkpoint';
import { referenceLogits } from './reference/llama-ref';

// NGATE_TEST_DEVICE=cuda and NGATE_TEST_DTYPE=bfloat16 rerun this file on a GPU.
const device = process.env.NGATE_TEST_DEVICE ?? 'cpu';
const dtype = (process.env.NGATE_TEST_DTYPE ?? 'float32') as 'float32' | 'bfloat16';
// float32 agrees with the float64 reference to rounding; bfloat16 keeps ~3 significant digits.
const tol = dtype === 'float32' ? 2e-4 : 6e-2;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function row(logits: Float32Array, V: number, T: number, b: number, t: number): Float32Array {
  return logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
}

const prompts = ['What is the passport number shown in the image?', 'What is the passport type?', 'Hello'];

describe.each([
  ['single file, multi-head attention, untied', {}],
  ['sharded, grouped-query attention', { numHeads: 4, numKvHeads: 2, shards: 3 }],
  ['tied embeddings, explicit head_dim, transformers-5 config', { tieWordEmbeddings: true, headDim: 16, configStyle: 'v5' as const }],
  ['bfloat16 checkpoint', { dtype: 'bfloat16' as const, numKvHeads: 1 }],
])('%s', (_name, opts) => {
  let fx: TinyLlama;
  let model: Model;
  beforeAll(async () => {
    fx = writeTinyLlama(makeTempDir(), { seed: 7, ...opts });
    model = await loadModel(fx.dir, { device, dtype });
  });
  afterAll(() => model?.dispose());

  test('logits match the JavaScript reference forward pass', async () => {
    const ids = (await model.tokenizer.encode(prompts[0])).ids;
    const { logits, shape } = await model.forward([ids]);
    expect(shape).toEqual([1, ids.length, model.config.vocabSize]);
    expect(maxAbsDiff(logits, referenceLogits(fx, ids))).toBeLessThan(tol);
  });

  test('a padded batch gives each sequence the logits it has alone', async () => {
    const batch = await Promise.all(prompts.map(async (p) => (await model.tokenizer.encode(p)).ids));
    const V = model.config.vocabSize;
    const all = await model.forward(batch);
    const T = all.shape[1];
    for (const [b, ids] of batch.entries()) {
      const alone = await model.forward([ids]);
      for (let t = 0; t < ids.length; t++) {
        expect(maxAbsDiff(row(all.logits, V, T, b, t), row(alone.logits, V, ids.length, 0, t))).toBeLessThan(tol / 4);
      }
    }
  });

  test('decoding with the KV cache gives the logits of a full recompute', async () => {
    const gens = await model.generate(prompts, { maxNewTokens: 6, returnLogits: true });
    const V = model.config.vocabSize;
    for (const g of gens) {
      const full = [...g.promptIds, ...g.ids];
      const { logits } = await model.forward([full]);
      const steps = g.logits!.length / V;
      expect(steps).toBeGreaterThan(0);
      for (let s = 0; s < Math.min(steps, g.ids.length + 1) && g.promptIds.length - 1 + s < full.length; s++) {
        const cached = g.logits!.subarray(s * V, (s + 1) * V);
        const recomputed = row(logits, V, full.length, 0, g.promptIds.length - 1 + s);
        expect(maxAbsDiff(cached, recomputed)).toBeLessThan(tol / 4);
        // Greedy: the token chosen at step s is the argmax of that step's logits.
        if (s < g.ids.length) {
          let arg = 0;
          for (let v = 1; v < V; v++) if (cached[v] > cached[arg]) arg = v;
          expect(g.ids[s]).toBe(arg);
        }
      }
    }
  });

  // libtorch 1.13 (Debian) has no fused kernel: this runs where libtorch ≥ 2 is linked (the GPU build).
  (loadAddon().info().fusedAttention ? test : test.skip)('the fused attention kernel gives the logits of the explicit softmax(QKᵀ/√d)V', async () => {
    const batch = await Promise.all(prompts.map(async (p) => (await model.tokenizer.encode(p)).ids));
    const addon = loadAddon();
    const fused = await model.forward(batch);
    const fusedGen = await model.generate(prompts, { maxNewTokens: 4, returnLogits: true });
    addon.setAttentionKernel('explicit');
    try {
      const explicit = await model.forward(batch);
      expect(maxAbsDiff(fused.logits, explicit.logits)).toBeLessThan(tol / 4);
      const explicitGen = await model.generate(prompts, { maxNewTokens: 4, returnLogits: true });
      for (let i = 0; i < prompts.length; i++) {
        const n = Math.min(fusedGen[i].logits!.length, explicitGen[i].logits!.length);
        expect(maxAbsDiff(fusedGen[i].logits!.subarray(0, n), explicitGen[i].logits!.subarray(0, n))).toBeLessThan(tol / 4);
      }
    } finally {
      addon.setAttentionKernel('auto');
    }
  });

  test('the explicit attention computed a row at a time gives the numbers of the whole batch at once', async () => {
    const batch = await Promise.all(prompts.map(async (p) => (await model.tokenizer.encode(p)).ids));
    const addon = loadAddon();
    addon.setAttentionKernel('explicit');
    try {
      addon.setAttentionChunkBytes(0);
      const whole = await model.forward(batch);
      const wholeGen = await model.generate(prompts, { maxNewTokens: 4, returnLogits: true });
      addon.setAttentionChunkBytes(1);  // below one row's scores: one row per piece
      const split = await model.forward(batch);
      expect(maxAbsDiff(split.logits, whole.logits)).toBeLessThan(1e-6 * (dtype === 'float32' ? 1 : 1e4));
      const splitGen = await model.generate(prompts, { maxNewTokens: 4, returnLogits: true });
      for (let i = 0; i < prompts.length; i++) {
        expect(splitGen[i].ids).toEqual(wholeGen[i].ids);
        expect(maxAbsDiff(splitGen[i].logits!, wholeGen[i].logits!)).toBeLessThan(1e-6 * (dtype === 'float32' ? 1 : 1e4));
      }
    } finally {
      addon.setAttentionChunkBytes(16 << 20);
      addon.setAttentionKernel('auto');
    }
  });

  test('save → load gives the same logits, and the saved files have the source dtypes', async () => {
    const out = path.join(makeTempDir(), 'saved');
    await model.save(out);
    const again = await loadModel(out, { device, dtype });
    try {
      const ids = (await model.tokenizer.encode(prompts[1])).ids;
      const a = await model.forward([ids]);
      const b = await again.forward([ids]);
      expect(maxAbsDiff(a.logits, b.logits)).toBe(0);
      expect(fs.existsSync(path.join(out, 'tokenizer.json'))).toBe(true);
      const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      expect(cfg.model_type).toBe('llama');
    } finally {
      again.dispose();
    }
  });
});

describe('model lifecycle', () => {
  let dir: string;
  beforeAll(() => { dir = writeTinyLlama(makeTempDir(), { seed: 3 }).dir; });

  test('dispose frees the weights at once and later calls reject with ERR_DISPOSED', async () => {
    const live = loadAddon().liveModels();
    const model = await loadModel(dir, { device, dtype });
    expect(model.parameterBytes).toBeGreaterThan(0);
    expect(loadAddon().liveModels()).toBe(live + 1);
    model.dispose();
    expect(loadAddon().liveModels()).toBe(live);
    expect(model.disposed).toBe(true);
    await expect(model.forward([[1, 2, 3]])).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });

  test('a model nobody disposes is freed by its finaliser', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const addon = loadAddon();
    const before = addon.liveModels();
    await (async () => {
      const forgotten = await loadModel(dir, { device, dtype });
      await forgotten.forward([[1, 2, 3]]);
    })();
    expect(addon.liveModels()).toBe(before + 1);
    for (let i = 0; i < 50 && addon.liveModels() > before; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(addon.liveModels()).toBe(before);
  });

  test('the event loop keeps running while a long generation works', async () => {
    const model = await loadModel(dir, { device, dtype });
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 1);
    const t0 = Date.now();
    await model.generate(['Hello there'], { maxNewTokens: 400 });
    const elapsed = Date.now() - t0;
    clearInterval(timer);
    // Timers fire during the call (not all queued behind it).
    expect(ticks).toBeGreaterThan(Math.min(5, elapsed / 4));
    model.dispose();
  });

  test('operations on one model run one after another', async () => {
    const model = await loadModel(dir, { device, dtype });
    const order: string[] = [];
    const a = model.generate(['Hello'], { maxNewTokens: 8 }).then(() => order.push('generate'));
    const b = model.forward([[1, 5, 9]]).then(() => order.push('forward'));
    await Promise.all([a, b]);
    expect(order).toEqual(['generate', 'forward']);
    model.dispose();
  });

  test('an aborted generation rejects with an AbortError and the model still works', async () => {
    const model = await loadModel(dir, { device, dtype });
    const ac = new AbortController();
    let steps = 0;
    const p = model.generate(['Hello there'], {
      maxNewTokens: 200,
      signal: ac.signal,
      onProgress: () => { if (++steps === 2) ac.abort(); },
    });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    const ok = await model.forward([[1, 2]]);
    expect(ok.shape[1]).toBe(2);
    model.dispose();
  });

  test('an already-aborted signal rejects with its own reason before any work', async () => {
    const model = await loadModel(dir, { device, dtype });
    const ac = new AbortController();
    const reason = new Error('stopped by the caller');
    ac.abort(reason);
    await expect(model.forward([[1]], { signal: ac.signal })).rejects.toBe(reason);
    model.dispose();
  });

  test('a timeout signal rejects as a TimeoutError, mid-generation', async () => {
    const model = await loadModel(dir, { device, dtype });
    const ac = new AbortController();
    let steps = 0;
    const p = model.generate(['Hello there'], {
      maxNewTokens: 200, signal: ac.signal,
      onProgress: () => { if (++steps === 2) ac.abort(new DOMException('The operation timed out.', 'TimeoutError')); },
    });
    await expect(p).rejects.toMatchObject({ name: 'TimeoutError' });
    const timedOut = AbortSignal.timeout(1);
    await new Promise((r) => setTimeout(r, 30));
    await expect(model.generate(['Hi'], { maxNewTokens: 2, signal: timedOut })).rejects.toMatchObject({ name: 'TimeoutError' });
    model.dispose();
  });

  test('save refuses the source folder and non-empty targets', async () => {
    const model = await loadModel(dir, { device, dtype });
    await expect(model.save(dir)).rejects.toMatchObject({ code: 'ERR_SAVE' });
    const other = makeTempDir();
    fs.writeFileSync(path.join(other, 'keep.txt'), 'user data');
    await expect(model.save(other)).rejects.toMatchObject({ code: 'ERR_SAVE' });
    expect(fs.readFileSync(path.join(other, 'keep.txt'), 'utf8')).toBe('user data');
    model.dispose();
  });

  test('load reports progress and token ids outside the vocabulary are refused', async () => {
    const seen: number[] = [];
    const model = await loadModel(dir, { device, dtype, onProgress: (p) => seen.push(p.done) });
    expect(seen.length).toBeGreaterThan(0);
    await expect(model.forward([[model.config.vocabSize]])).rejects.toMatchObject({ code: 'ERR_INPUT' });
    model.dispose();
  });
});
