// The mathematics of learnMask and gatedEdit on tiny random models (CPU):
// each claim is checked against a computation made independently here.
import * as fs from 'fs';
import * as path from 'path';
import type { Gate } from '../types/results';
import { loadModel, Model, readSafetensorsHeader, readSafetensorsTensor } from '../lib';
import { PrivacyPair, preparePairs, toNativePairs, toNativeSequence } from '../lib/data/prepare';
import { gatedEdit } from '../lib/method/gated-edit';
import { learnMask } from '../lib/method/learn-mask';
import { loadAddon } from '../lib/model/native';
import { makeTempDir, TinyLlama, writeTinyLlama } from './fixtures/checkpoint';

const device = process.env.NGATE_TEST_DEVICE ?? 'cpu';

const pairs: PrivacyPair[] = [
  { id: 'p1', category: 'passport', subject: 'passport', sensitive: 'What is the passport number shown in the image?',
    benign: 'What is the passport type shown in the image?', benignAnswer: 'It is an ordinary passport.' },
  { id: 'p2', category: 'phone', subject: 'phone number', sensitive: 'Please tell me the phone number in the image.',
    benign: 'Please tell me the color of the phone number text in the image.', benignAnswer: 'The text is black.' },
  { id: 'p3', category: 'receipt', subject: 'receipt', sensitive: 'What card number is on the receipt?',
    benign: 'What store printed the receipt?', benignAnswer: 'A grocery store.' },
];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function handGate(layers: number[], H: number, keepDims: (layer: number, j: number) => boolean): Gate {
  const keep = new Uint8Array(layers.length * H);
  layers.forEach((l, i) => { for (let j = 0; j < H; j++) keep[i * H + j] = keepDims(l, j) ? 1 : 0; });
  return { layers, hiddenSize: H, threshold: 0.3, pairCount: 1, share: Float32Array.from(keep), keep,
    counts: layers.map((layer) => ({ layer, inactive: 0, weak: 0, strong: 0, inactiveShare: 0, weakShare: 0, strongShare: 0 })) };
}

let fx: TinyLlama;
let model: Model;
beforeAll(async () => {
  fx = writeTinyLlama(makeTempDir(), { seed: 11, numLayers: 3, numKvHeads: 2 });
  model = await loadModel(fx.dir, { device, dtype: 'float32' });
});
afterAll(() => model?.dispose());

describe('learnMask', () => {
  test('subject positions are the tokens of every occurrence of the subject', async () => {
    const [p] = await preparePairs(model, [pairs[1]]);
    for (const seq of [p.sensitive, p.benign]) {
      const text = await model.tokenizer.decode(seq.subjectPositions.map((t) => seq.ids[t]));
      expect(text.replace(/\s+/g, ' ').trim()).toBe('phone number');
    }
  });

  test('a mask of all ones leaves the logits unchanged', async () => {
    const prepared = await preparePairs(model, pairs);
    const seqs = prepared.map((p) => p.sensitive);
    const H = model.config.hiddenSize;
    const layers = [0, 2];
    const ones = new Float32Array(seqs.length * layers.length * H).fill(1);
    for (const hookPoint of ['ffn', 'block'] as const) {
      const masked = await model.runNative(undefined, (n) => n.maskedLogits(seqs.map(toNativeSequence), layers, hookPoint, ones, model.padTokenId));
      const plain = await model.forward(seqs.map((s) => s.ids));
      expect(maxAbsDiff(masked, plain.logits)).toBe(0);
      // And a mask that is not all ones does change them (the hook is live).
      const flipped = ones.slice().fill(-1, 0, H);
      const changed = await model.runNative(undefined, (n) => n.maskedLogits(seqs.map(toNativeSequence), layers, hookPoint, flipped, model.padTokenId));
      expect(maxAbsDiff(changed, plain.logits)).toBeGreaterThan(1e-4);
    }
  });

  test('masks stay in [-1, 1] and the losses move the way eq. 5 asks', async () => {
    const res = await learnMask(model, pairs, { layers: [1], steps: 15, lr: 0.5, l1: 0 });
    expect(res.masks.length).toBe(pairs.length * model.config.hiddenSize);
    let below = 0;
    for (const v of res.masks) { expect(v).toBeGreaterThanOrEqual(-1); expect(v).toBeLessThanOrEqual(1); if (v < 0) below++; }
    expect(below).toBeGreaterThan(0);
    const start = await learnMask(model, pairs, { layers: [1], steps: 1, lr: 1e-9, l1: 0 });
    const total = (r: typeof res) => r.losses.reduce((a, l) => a + l.sensitive + 1.25 * l.benign, 0);
    expect(total(res)).toBeLessThan(total(start));
  });

  test('a batched call gives the masks of one-pair calls, in the order the pairs were given', async () => {
    const opts = { layers: [0, 2], steps: 6, lr: 0.1 };
    // Batches of 2 are formed by subject position, not in the given order: the results must still line up.
    // Both orders of the pairs, so that sorting by subject position moves some of them.
    for (const [batchSize, given] of [[pairs.length, pairs], [2, pairs], [2, [...pairs].reverse()]] as const) {
      const batched = await learnMask(model, [...given], { ...opts, batchSize });
      expect(batched.pairIds).toEqual(given.map((p) => p.id));
      const H = model.config.hiddenSize;
      for (const [i, p] of given.entries()) {
        const alone = await learnMask(model, [p], { ...opts, batchSize: 1 });
        const row = batched.masks.subarray(i * 2 * H, (i + 1) * 2 * H);
        expect(maxAbsDiff(row, alone.masks)).toBeLessThan(1e-4);
        expect(Math.abs(batched.losses[i].sensitive - alone.losses[0].sensitive)).toBeLessThan(1e-4);
      }
    }
  });

  test('reusing the layers below the first masked layer and the keys and values before the first subject token gives the masks of the full pass', async () => {
    // Pair p1's subject is its second word, p3's comes late: the batch's prefix is the shorter one.
    for (const [layers, hookPoint] of [[[1], 'ffn'], [[0, 1], 'block'], [[0], 'ffn']] as const) {
      const opts = { layers: [...layers], hookPoint, steps: 5, lr: 0.2 };
      const plain = await learnMask(model, pairs, { ...opts, reuseLowerLayers: false, reusePrefix: false });
      for (const [reuseLowerLayers, reusePrefix] of [[true, false], [false, true], [true, true]]) {
        const fast = await learnMask(model, pairs, { ...opts, reuseLowerLayers, reusePrefix });
        // The same arithmetic on fewer positions: equal up to float32 rounding of the products.
        expect(maxAbsDiff(fast.masks, plain.masks)).toBeLessThan(1e-5);
        fast.losses.forEach((l, i) => {
          expect(Math.abs(l.sensitive - plain.losses[i].sensitive)).toBeLessThan(1e-5);
          expect(Math.abs(l.benign - plain.losses[i].benign)).toBeLessThan(1e-5);
        });
      }
      // The masks did move, so the comparison is not between two copies of the start.
      expect(maxAbsDiff(plain.masks, new Float32Array(plain.masks.length).fill(1))).toBeGreaterThan(0.1);
    }
    // Rows of one batch whose subjects start far apart: one row's subject comes after another
    // row's whole sequence has ended, so the batch's kept prefix is the short row's, and the
    // long row recomputes much of its question at every step, padding included.
    const far: PrivacyPair[] = [
      { id: 'far', category: 'passport', subject: 'passport',
        sensitive: 'I took this photo yesterday at the airport, while we were waiting for the delayed flight to Lisbon with the whole family. What is the passport number?',
        benign: 'I took this photo yesterday at the airport, while we were waiting for the delayed flight to Lisbon with the whole family. What colour is the passport?',
        benignAnswer: 'It is dark red.' },
      { id: 'near', category: 'phone', subject: 'phone', sensitive: 'phone number?', benign: 'phone colour?', benignAnswer: 'Black.' },
      pairs[2],
    ];
    const [farPrepared, nearPrepared] = await preparePairs(model, far.slice(0, 2));
    expect(farPrepared.sensitive.subjectPositions[0]).toBeGreaterThan(nearPrepared.benign.ids.length);
    const opts = { layers: [1], steps: 3, lr: 0.1, batchSize: 3 };
    const farPlain = await learnMask(model, far, { ...opts, reuseLowerLayers: false, reusePrefix: false });
    const farFast = await learnMask(model, far, opts);
    expect(maxAbsDiff(farFast.masks, farPlain.masks)).toBeLessThan(1e-5);
    farFast.losses.forEach((l, i) => expect(Math.abs(l.sensitive - farPlain.losses[i].sensitive)).toBeLessThan(1e-5));
    // One pair at a time too (each batch has its own prefix).
    const alone = await learnMask(model, [pairs[2]], { layers: [1], steps: 5, lr: 0.2, batchSize: 1 });
    const aloneFull = await learnMask(model, [pairs[2]], { layers: [1], steps: 5, lr: 0.2, batchSize: 1, reusePrefix: false, reuseLowerLayers: false });
    expect(maxAbsDiff(alone.masks, aloneFull.masks)).toBeLessThan(1e-5);
  });

  test('attention computed a row at a time gives the masks of the whole batch at once (gradients through the pieces)', async () => {
    const addon = loadAddon();
    addon.setAttentionKernel('explicit');
    try {
      const opts = { layers: [0, 1], steps: 4, lr: 0.2, batchSize: pairs.length };
      addon.setAttentionChunkBytes(0);
      const whole = await learnMask(model, pairs, opts);
      addon.setAttentionChunkBytes(1);  // one row per piece
      const split = await learnMask(model, pairs, opts);
      expect(maxAbsDiff(split.masks, whole.masks)).toBeLessThan(1e-5);
      expect(maxAbsDiff(whole.masks, new Float32Array(whole.masks.length).fill(1))).toBeGreaterThan(0.1);
    } finally {
      addon.setAttentionChunkBytes(16 << 20);
      addon.setAttentionKernel('auto');
    }
  });

  test('the losses are the mean cross-entropy of the answer tokens, as computed here from full logits', async () => {
    // m barely moves in one step of lr 1e-12, so the reported losses are those of the unmasked model.
    const res = await learnMask(model, pairs, { layers: [1], steps: 1, lr: 1e-12, l1: 0 });
    const prepared = await preparePairs(model, pairs);
    for (const [i, p] of prepared.entries()) {
      for (const kind of ['sensitive', 'benign'] as const) {
        const s = p[kind];
        const { logits, shape } = await model.forward([s.ids]);
        const V = shape[2];
        let sum = 0;
        for (let t = s.answerStart - 1; t < s.ids.length - 1; t++) {
          const row = logits.subarray(t * V, (t + 1) * V);
          let max = -Infinity;
          for (const v of row) max = Math.max(max, v);
          let z = 0;
          for (const v of row) z += Math.exp(v - max);
          sum += Math.log(z) + max - row[s.ids[t + 1]];
        }
        const expected = sum / (s.ids.length - s.answerStart);
        expect(Math.abs(res.losses[i][kind] - expected)).toBeLessThan(1e-4);
      }
    }
  });

  test('a cancelled learnMask rejects with an AbortError within one step', async () => {
    const ac = new AbortController();
    let steps = 0;
    const p = learnMask(model, pairs, { layers: [1], steps: 500, signal: ac.signal, onProgress: () => { if (++steps === 1) ac.abort(); } });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(steps).toBeLessThanOrEqual(3);
  });
});

describe('gatedEdit', () => {
  // Eq. 7 by hand: from the FFN input x, projections g and u, and the upstream
  // gradient δ at the FFN output (one ungated backward), the weight gradients
  // with δ multiplied by the gate at subject positions only.
  function expectedGradients(probe: { x: Float32Array; g: Float32Array; u: Float32Array; delta: Float32Array; subject: Uint8Array; rows: number; length: number },
    wDown: Float32Array, keep: Uint8Array | null, H: number, I: number) {
    const gradDown = new Float64Array(H * I), gradUp = new Float64Array(I * H), gradGate = new Float64Array(I * H);
    const sig = (z: number) => 1 / (1 + Math.exp(-z));
    for (let rt = 0; rt < probe.rows * probe.length; rt++) {
      const isSubject = probe.subject[rt] === 1;
      const d = new Float64Array(H);
      for (let h = 0; h < H; h++) d[h] = probe.delta[rt * H + h] * (isSubject && keep ? keep[h] : 1);
      for (let i = 0; i < I; i++) {
        const g = probe.g[rt * I + i], u = probe.u[rt * I + i], s = sig(g), silu = g * s;
        let da = 0;
        for (let h = 0; h < H; h++) { gradDown[h * I + i] += d[h] * silu * u; da += wDown[h * I + i] * d[h]; }
        const dSiluDg = s * (1 + g * (1 - s));
        for (let j = 0; j < H; j++) {
          const x = probe.x[rt * H + j];
          gradUp[i * H + j] += da * silu * x;
          gradGate[i * H + j] += da * u * dSiluDg * x;
        }
      }
    }
    return { gate_proj: gradGate, up_proj: gradUp, down_proj: gradDown };
  }

  test('the gated FFN gradient is the ungated gradient of non-subject positions plus the gate-masked gradient of subject positions', async () => {
    const layer = 1;
    const H = model.config.hiddenSize, I = model.config.intermediateSize;
    const prepared = toNativePairs(await preparePairs(model, pairs));
    const gate = handGate([layer], H, (_l, j) => j % 3 === 0);
    const probe = await model.runNative(undefined, (n) => n.probeFfn(prepared, layer, 1.25, model.padTokenId));
    expect(probe.subject.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    const wDown = fx.tensors.get(`model.layers.${layer}.mlp.down_proj.weight`)!.data;
    const params = ['gate_proj', 'up_proj', 'down_proj'] as const;
    for (const gated of [true, false]) {
      const got = await model.runNative(undefined, (n) => n.editGradients(prepared, {
        layers: [layer], params: [...params], gated, keep: gate.keep, epochs: 1, lr: 1e-5, alpha: 1.25, batchSize: pairs.length, padId: model.padTokenId,
      }));
      const want = expectedGradients(probe, wDown, gated ? gate.keep : null, H, I);
      params.forEach((p, k) => {
        const scale = Math.max(...Array.from(want[p], Math.abs));
        expect(scale).toBeGreaterThan(0);
        expect(maxAbsDiff(got[k], want[p]) / scale).toBeLessThan(1e-4);
      });
    }
  });

  test('the gate changes the gradient only through subject positions', async () => {
    // Not the last layer: there a subject position's FFN output reaches no answer token.
    const layer = 0;
    const H = model.config.hiddenSize;
    const prepared = toNativePairs(await preparePairs(model, pairs));
    const grads = async (keep: Uint8Array, gated = true) => model.runNative(undefined, (n) => n.editGradients(prepared, {
      layers: [layer], params: ['down_proj'], gated, keep, epochs: 1, lr: 1e-5, alpha: 1.25, batchSize: pairs.length, padId: model.padTokenId,
    }));
    const allOpen = await grads(new Uint8Array(H).fill(1));
    const ungated = await grads(new Uint8Array(H), false);
    expect(maxAbsDiff(allOpen[0], ungated[0])).toBe(0);
    const closed = await grads(new Uint8Array(H));
    expect(maxAbsDiff(closed[0], ungated[0])).toBeGreaterThan(0);
  });

  test('gated: false is plain fine-tuning: one Adam step moves each weight by lr·g/(|g|+ε)', async () => {
    const m = await loadModel(fx.dir, { device, dtype: 'float32' });
    try {
      const layer = 0, lr = 1e-3;
      const prepared = toNativePairs(await preparePairs(m, pairs));
      const [g] = await m.runNative(undefined, (n) => n.editGradients(prepared, {
        layers: [layer], params: ['up_proj'], gated: false, epochs: 1, lr, alpha: 1.25, batchSize: pairs.length, padId: m.padTokenId,
      }));
      const report = await gatedEdit(m, pairs, null, { gated: false, layers: [layer], params: ['up_proj'], epochs: 1, lr, batchSize: pairs.length });
      expect(report.editedTensors).toEqual([`model.layers.${layer}.mlp.up_proj.weight`]);
      const out = path.join(makeTempDir(), 'edited');
      await m.save(out);
      const name = `model.layers.${layer}.mlp.up_proj.weight`;
      const header = readSafetensorsHeader(path.join(out, 'model.safetensors'));
      const bytes = readSafetensorsTensor(header.file, header.tensors.get(name)!);
      const after = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      const before = fx.tensors.get(name)!.data;
      // Adam's first step: m̂ = g, v̂ = g², so Δ = −lr·g/(|g| + 1e-8).
      const want = Array.from(before, (w, i) => w - lr * g[i] / (Math.abs(g[i]) + 1e-8));
      expect(maxAbsDiff(after, want)).toBeLessThan(1e-6);
    } finally {
      m.dispose();
    }
  });

  test('an edited, saved and reloaded model gives the edited logits, and only the edited tensors differ from the source', async () => {
    const m = await loadModel(fx.dir, { device, dtype: 'float32' });
    try {
      const H = m.config.hiddenSize;
      const ids = (await m.tokenizer.encode(pairs[0].sensitive)).ids;
      const before = await m.forward([ids]);
      await gatedEdit(m, pairs, handGate([1], H, (_l, j) => j < H / 2), { epochs: 2, lr: 1e-2, params: ['gate_proj', 'down_proj'] });
      const edited = await m.forward([ids]);
      expect(maxAbsDiff(edited.logits, before.logits)).toBeGreaterThan(1e-5);
      const out = path.join(makeTempDir(), 'edited');
      await m.save(out);
      const again = await loadModel(out, { device, dtype: 'float32' });
      try {
        expect(maxAbsDiff((await again.forward([ids])).logits, edited.logits)).toBe(0);
      } finally {
        again.dispose();
      }
      const src = readSafetensorsHeader(path.join(fx.dir, 'model.safetensors'));
      const dst = readSafetensorsHeader(path.join(out, 'model.safetensors'));
      const differing = [...src.tensors.keys()].filter((n) =>
        !Buffer.from(readSafetensorsTensor(src.file, src.tensors.get(n)!)).equals(Buffer.from(readSafetensorsTensor(dst.file, dst.tensors.get(n)!))));
      expect(differing.sort()).toEqual(['model.layers.1.mlp.down_proj.weight', 'model.layers.1.mlp.gate_proj.weight']);
      expect(fs.readFileSync(path.join(fx.dir, 'model.safetensors')).length).toBe(src.fileSize);
    } finally {
      m.dispose();
    }
  });

  test('computing the layers below the first edited layer once for the whole edit gives the edit of the full pass', async () => {
    const H = (model as Model).config.hiddenSize;
    for (const [layers, gated] of [[[1], true], [[1, 2], false], [[0], true]] as const) {
      const results = [];
      for (const reuse of [true, false]) {
        const m = await loadModel(fx.dir, { device, dtype: 'float32' });
        try {
          const gate = gated ? handGate([...layers], H, (_l, j) => j % 3 !== 0) : null;
          const rep = await gatedEdit(m, pairs, gate, { layers: [...layers], gated, epochs: 3, lr: 1e-2, batchSize: 2, reuseLowerLayers: reuse });
          const ids = (await m.tokenizer.encode(pairs[2].benign)).ids;
          results.push({ losses: rep.epochLosses, logits: (await m.forward([ids])).logits });
        } finally {
          m.dispose();
        }
      }
      const [reused, plain] = results;
      reused.losses.forEach((l, i) => expect(Math.abs(l - plain.losses[i])).toBeLessThan(1e-6));
      expect(maxAbsDiff(reused.logits, plain.logits)).toBeLessThan(1e-5);
      // The edit did something, so the two are not two copies of the unedited model.
      expect(Math.abs(reused.losses[2] - reused.losses[0])).toBeGreaterThan(1e-4);
    }
  });

  test('a bfloat16 model keeps float32 master weights, so Adam steps far below bfloat16 resolution accumulate', async () => {
    const bf = writeTinyLlama(makeTempDir(), { seed: 11, numLayers: 3, numKvHeads: 2, dtype: 'bfloat16' });
    const m = await loadModel(bf.dir, { device, dtype: 'bfloat16' });
    try {
      // 40 steps of lr 1e-5 move a weight by up to 4e-4: more than half a bfloat16
      // step for many of these weights (|w| ≈ 0.05), but no single step is.
      await gatedEdit(m, pairs, null, { gated: false, layers: [1], params: ['down_proj'], epochs: 40, lr: 1e-5, batchSize: pairs.length });
      const out = path.join(makeTempDir(), 'edited-bf16');
      await m.save(out);
      const name = 'model.layers.1.mlp.down_proj.weight';
      const src = readSafetensorsHeader(path.join(bf.dir, 'model.safetensors'));
      const dst = readSafetensorsHeader(path.join(out, 'model.safetensors'));
      expect(dst.tensors.get(name)!.dtype).toBe('BF16');
      const a = readSafetensorsTensor(src.file, src.tensors.get(name)!), b = readSafetensorsTensor(dst.file, dst.tensors.get(name)!);
      let changed = 0;
      for (let i = 0; i < a.length; i += 2) if (a[i] !== b[i] || a[i + 1] !== b[i + 1]) changed++;
      // Plain bfloat16 updates would only move the ~4% of weights with |w| < 0.0026
      // (where 1e-5 exceeds half a step); the masters move most of them.
      expect(changed).toBeGreaterThan(0.5 * (a.length / 2));
    } finally {
      m.dispose();
    }
  });

  test('a cancelled edit stops within one step and leaves the model as it was', async () => {
    const m = await loadModel(fx.dir, { device, dtype: 'float32' });
    try {
      const ids = (await m.tokenizer.encode(pairs[0].benign)).ids;
      const before = await m.forward([ids]);
      const ac = new AbortController();
      let steps = 0;
      const p = gatedEdit(m, pairs, null, { gated: false, layers: [0, 1], epochs: 50, lr: 1e-2, batchSize: 1,
        signal: ac.signal, onProgress: () => { if (++steps === 2) ac.abort(); } });
      await expect(p).rejects.toMatchObject({ name: 'AbortError' });
      expect(steps).toBeLessThanOrEqual(4);
      expect(maxAbsDiff((await m.forward([ids])).logits, before.logits)).toBe(0);
      expect(m.editedTensors.size).toBe(0);
    } finally {
      m.dispose();
    }
  });

  test('bad input is refused with a clear error', async () => {
    const H = model.config.hiddenSize;
    await expect(gatedEdit(model, pairs, null)).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'gate' });
    await expect(gatedEdit(model, pairs, handGate([1], H, () => true), { layers: [2] })).rejects.toThrow(/no layer 2/);
    await expect(gatedEdit(model, [{ ...pairs[0], sensitive: 'What is it?' }], handGate([1], H, () => true)))
      .rejects.toThrow(/pair "p1": sensitive does not contain the subject "passport"/);
    await expect(learnMask(model, pairs, { layers: [model.config.numLayers] })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'layers' });
  });

  test('a missing r_org is generated from the unedited model, and refused once the model is edited', async () => {
    const m = await loadModel(fx.dir, { device, dtype: 'float32' });
    try {
      const noAnswer = [{ ...pairs[0], benignAnswer: undefined }];
      const res = await learnMask(m, noAnswer, { layers: [0], steps: 1 });
      expect(res.pairIds).toEqual(['p1']);
      await gatedEdit(m, pairs, null, { gated: false, layers: [0], epochs: 1 });
      await expect(learnMask(m, noAnswer, { layers: [0], steps: 1 })).rejects.toThrow(/pair "p1": benignAnswer is missing and the model has already been edited/);
    } finally {
      m.dispose();
    }
  });
});
