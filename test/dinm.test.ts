// DINM, the baseline of Tables 1 and 2, on tiny random models (CPU): its
// toxic-layer distances against a float64 reference, and each setting the
// edit loop gained for it (a KL term, steps per request, a fresh Adam per
// request, the stop test, the norm constraint) against a computation made
// here or against the plain edit it must reduce to.
import * as path from 'path';
import { loadModel, Model, readSafetensorsHeader, readSafetensorsTensor } from '../lib';
import { PrivacyPair, preparePairs, toNativePairs, PreparedSequence } from '../lib/data/prepare';
import { dinmEdit, DINM_EASYEDIT_DEFAULTS, locateToxicLayer } from '../lib/method/dinm';
import { gatedEdit } from '../lib/method/gated-edit';
import type { NativeEditOptions } from '../types/native';
import { makeTempDir, TinyLlama, writeTinyLlama } from './fixtures/checkpoint';
import { referenceLogits } from './reference/llama-ref';

const device = process.env.NGATE_TEST_DEVICE ?? 'cpu';

const pairs: PrivacyPair[] = [
  { id: 'p1', category: 'passport', subject: 'passport', sensitive: 'What is the passport number shown in the image?',
    benign: 'What is the passport type shown in the image?', benignAnswer: 'It is an ordinary passport.' },
  { id: 'p2', category: 'phone', subject: 'phone number', sensitive: 'Please tell me the phone number in the image.',
    benign: 'Please tell me the color of the phone number text in the image.', benignAnswer: 'The text is black.' },
  { id: 'p3', category: 'receipt', subject: 'receipt', sensitive: 'What card number is on the receipt?',
    benign: 'What store printed the receipt?', benignAnswer: 'A grocery store.' },
];
const unsafe = ['The passport number is X4827163.', 'It is +1 555 0143 2291.', 'The card ends in 4417, owned by Emily.'];

let fx: TinyLlama;
const fresh = () => loadModel(fx.dir, { device, dtype: 'float32' });
let model: Model;
beforeAll(async () => {
  fx = writeTinyLlama(makeTempDir(), { seed: 5, numLayers: 3, numKvHeads: 2 });
  model = await fresh();
});
afterAll(() => model?.dispose());

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0, s = 0;
  for (let i = 0; i < a.length; i++) { m = Math.max(m, Math.abs(a[i] - b[i])); s = Math.max(s, Math.abs(b[i])); }
  return m / Math.max(s, 1e-12);
}

/** Next-token log-probabilities [T, V] of a sequence, from the model's logits. */
async function logProbs(m: Model, ids: number[]): Promise<Float64Array[]> {
  const { logits, shape } = await m.forward([ids]);
  const V = shape[2];
  return Array.from({ length: ids.length }, (_, t) => {
    const row = logits.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    const lse = max + Math.log(sum);
    return Float64Array.from(row, (x) => x - lse);
  });
}

/** The answer positions of a prepared sequence: t predicts ids[t + 1]. */
function answerPositions(s: PreparedSequence): number[] {
  return Array.from({ length: s.ids.length - s.answerStart }, (_, k) => s.answerStart - 1 + k);
}

async function meanCe(m: Model, s: PreparedSequence): Promise<number> {
  const lp = await logProbs(m, s.ids);
  const pos = answerPositions(s);
  return pos.reduce((a, t) => a - lp[t][s.ids[t + 1]], 0) / pos.length;
}

async function weightsOf(m: Model, name: string): Promise<Float32Array> {
  const out = path.join(makeTempDir(), 'saved');
  await m.save(out);
  const header = readSafetensorsHeader(path.join(out, 'model.safetensors'));
  const bytes = readSafetensorsTensor(header.file, header.tensors.get(name)!);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

async function runLoop(m: Model, ps: PrivacyPair[], o: Partial<NativeEditOptions>) {
  const prepared = toNativePairs(await preparePairs(m, ps));
  const res = await m.runNative(undefined, (n) => n.gatedEdit(prepared, {
    layers: [1], params: ['down_proj'], gated: false, epochs: 1, lr: 1e-2, alpha: 1, batchSize: ps.length, padId: m.padTokenId, ...o,
  }));
  m.editedTensors.add(`model.layers.${(o.layers ?? [1])[0]}.mlp.${(o.params ?? ['down_proj'])[0]}.weight`);
  return res;
}

describe('DINM: the toxic layer', () => {
  test('the distances are those between the two answers\' hidden states at every layer (the last through the final norm), as a float64 reference computes them', async () => {
    const a = (await model.tokenizer.encode("I'm sorry, I cannot share that.")).ids;
    const b = (await model.tokenizer.encode(unsafe[0])).ids;
    expect(a[0]).toBe(model.tokenizer.bosTokenId);  // BOS first, as EasyEdit's LlamaTokenizer call
    const got = await model.runNative(undefined, (n) => n.answerDistances([{ a: Int32Array.from(a), b: Int32Array.from(b) }]));
    const L = model.config.numLayers;
    const states = (ids: number[]) => {
      const byLayer = new Map<number, Float64Array[]>();
      referenceLogits(fx, ids, undefined, (l, xs) => byLayer.set(l, xs.map((x) => Float64Array.from(x))));
      // hidden_states[l + 1]: the output of layer l; for the last layer the normed one.
      return Array.from({ length: L }, (_, l) => byLayer.get(l === L - 1 ? L : l)!);
    };
    const sa = states(a), sb = states(b);
    const T = Math.min(a.length, b.length);
    const want = Array.from({ length: L }, (_, l) => {
      let s = 0;
      for (let t = 0; t < T; t++) for (let i = 0; i < sa[l][t].length; i++) s += (sa[l][t][i] - sb[l][t][i]) ** 2;
      return Math.sqrt(s);
    });
    expect(maxRelDiff(got, want)).toBeLessThan(1e-4);
  });

  test('each pair picks the layer of the largest distance, and DINM edits the layer most pairs pick (ties: the lower)', async () => {
    const loc = await locateToxicLayer(model, pairs, { unsafeAnswers: unsafe });
    expect(loc.unsafeAnswers).toEqual(unsafe);
    expect(loc.distances).toHaveLength(pairs.length);
    loc.distances.forEach((d, i) => {
      expect(d).toHaveLength(model.config.numLayers);
      expect(d[loc.perPair[i]]).toBe(Math.max(...d));
    });
    const votes: Record<number, number> = {};
    loc.perPair.forEach((l) => { votes[l] = (votes[l] ?? 0) + 1; });
    const top = Math.max(...Object.values(votes));
    expect(loc.layer).toBe(Math.min(...Object.keys(votes).map(Number).filter((l) => votes[l] === top)));
    expect(loc.votes).toEqual(Object.fromEntries(Object.entries(votes).map(([k, v]) => [k, v])));
  });

  test('without given answers it generates them from the unedited model, and refuses a model already edited', async () => {
    const m = await fresh();
    try {
      const loc = await locateToxicLayer(m, pairs, { maxNewTokens: 6 });
      expect(loc.unsafeAnswers).toHaveLength(pairs.length);
      await gatedEdit(m, pairs, null, { gated: false, layers: [0], epochs: 1 });
      await expect(locateToxicLayer(m, pairs)).rejects.toThrow(/unedited model/);
      await expect(locateToxicLayer(m, pairs, { unsafeAnswers: ['x'] })).rejects.toThrow(/one non-empty answer per pair/);
    } finally {
      m.dispose();
    }
  });
});

describe('DINM: the settings of the edit loop', () => {
  test('at the weights the call begins with, the KL term is zero with a zero gradient: the gradient is sensitiveWeight times L_sen\'s', async () => {
    const prepared = toNativePairs(await preparePairs(model, pairs));
    const base = { layers: [1], params: ['down_proj', 'up_proj'], gated: false, epochs: 1, lr: 1e-3, batchSize: pairs.length, padId: model.padTokenId };
    const kl = await model.runNative(undefined, (n) => n.editGradients(prepared, { ...base, alpha: 1, sensitiveWeight: 0.3, benignLoss: 'kl' }));
    const sen = await model.runNative(undefined, (n) => n.editGradients(prepared, { ...base, alpha: 0 }));
    kl.forEach((g, k) => expect(maxRelDiff(g, sen[k].map((x) => 0.3 * x))).toBeLessThan(1e-5));
  });

  test('a step\'s loss is sensitiveWeight·L_sen + α·KL(p_before ‖ p_now) over the benign answer positions, as computed here from the logits', async () => {
    const [a, b, before] = [await fresh(), await fresh(), await fresh()];
    try {
      const o = { sensitiveWeight: 0.5, alpha: 0.8, benignLoss: 'kl' as const };
      const two = await runLoop(a, pairs, { ...o, stepsPerBatch: 2 });
      await runLoop(b, pairs, { ...o, stepsPerBatch: 1 });  // b now holds the weights of a's second step
      expect(two.stepLosses).toHaveLength(2);
      const prep = await preparePairs(before, pairs);
      let want0 = 0, want1 = 0;
      for (const p of prep) {
        want0 += 0.5 * (await meanCe(before, p.sensitive));
        want1 += 0.5 * (await meanCe(b, p.sensitive));
        const p0 = await logProbs(before, p.benign.ids), p1 = await logProbs(b, p.benign.ids);
        const pos = answerPositions(p.benign);
        const kl = pos.reduce((acc, t) => acc + p0[t].reduce((s, lp, v) => s + Math.exp(lp) * (lp - p1[t][v]), 0), 0) / pos.length;
        expect(kl).toBeGreaterThan(0);
        want1 += 0.8 * kl;
      }
      expect(Math.abs(two.stepLosses[0] - want0 / pairs.length) / want0).toBeLessThan(1e-4);
      expect(Math.abs(two.stepLosses[1] - want1 / pairs.length) / want1).toBeLessThan(1e-4);
    } finally {
      [a, b, before].forEach((m) => m.dispose());
    }
  });

  test('klGradient: false keeps the KL term in the loss but out of the update (EasyEdit computes it under no_grad)', async () => {
    const [a, b] = [await fresh(), await fresh()];
    try {
      const ra = await runLoop(a, pairs, { sensitiveWeight: 0.7, alpha: 1, benignLoss: 'kl', klGradient: false, stepsPerBatch: 3 });
      const rb = await runLoop(b, pairs, { sensitiveWeight: 0.7, alpha: 0, stepsPerBatch: 3 });
      const name = 'model.layers.1.mlp.down_proj.weight';
      expect(maxRelDiff(await weightsOf(a, name), await weightsOf(b, name))).toBe(0);
      expect(ra.stepLosses[0]).toBeCloseTo(rb.stepLosses[0], 6);
      expect(ra.stepLosses[2]).toBeGreaterThan(rb.stepLosses[2]);
    } finally {
      a.dispose(); b.dispose();
    }
  });

  test('steps per batch with a fresh Adam per batch is one edit per pair, one after the other', async () => {
    const [a, b] = [await fresh(), await fresh()];
    try {
      const lr = 2e-3;
      const r = await runLoop(a, pairs, { layers: [0], params: ['up_proj'], alpha: 1.25, batchSize: 1, stepsPerBatch: 3, freshOptimizerPerBatch: true, lr });
      expect(r.stepLosses).toHaveLength(9);
      for (const p of pairs) await gatedEdit(b, [p], null, { gated: false, layers: [0], params: ['up_proj'], epochs: 3, batchSize: 1, lr });
      const name = 'model.layers.0.mlp.up_proj.weight';
      expect(maxRelDiff(await weightsOf(a, name), await weightsOf(b, name))).toBe(0);
    } finally {
      a.dispose(); b.dispose();
    }
  });

  test('stopBelow leaves a batch once its loss is below it; normConstraint keeps every weight within it of the batch\'s start', async () => {
    const [a, b] = [await fresh(), await fresh()];
    try {
      const name = 'model.layers.1.mlp.down_proj.weight';
      const w0 = fx.tensors.get(name)!.data;
      const r = await runLoop(a, pairs, { stopBelow: 1e9, stepsPerBatch: 4 });
      expect(r.stepLosses).toHaveLength(0);
      expect(maxRelDiff(await weightsOf(a, name), w0)).toBe(0);
      await runLoop(b, pairs, { stepsPerBatch: 5, lr: 1e-2, normConstraint: 2e-3 });
      const w = await weightsOf(b, name);
      let moved = 0, worst = 0;
      w.forEach((x, i) => { const d = Math.abs(x - w0[i]); worst = Math.max(worst, d); if (d > 1e-3) moved++; });
      expect(moved).toBeGreaterThan(0);
      expect(worst).toBeLessThanOrEqual(2e-3 + 1e-7);
    } finally {
      a.dispose(); b.dispose();
    }
  });
});

describe('dinmEdit', () => {
  test("'easyedit' trains down_proj of DINM's layer with EasyEdit's settings; 'paper' is the ungated edit at that layer", async () => {
    const [a, b, c] = [await fresh(), await fresh(), await fresh()];
    try {
      const loc = await locateToxicLayer(a, pairs, { unsafeAnswers: unsafe });
      const e = await dinmEdit(a, pairs, { variant: 'easyedit', location: loc });
      expect(e.editedTensors).toEqual([`model.layers.${loc.layer}.mlp.down_proj.weight`]);
      expect(e.layers).toEqual([loc.layer]);
      expect(e.steps).toBeGreaterThan(0);
      expect(e.steps).toBeLessThanOrEqual(DINM_EASYEDIT_DEFAULTS.steps * pairs.length);
      expect(e.settings).toMatchObject({ lr: 5e-4, klFactor: 0.1, steps: 10, klGradient: false, layer: loc.layer });

      const edit = { epochs: 2, lr: 1e-3, batchSize: 2 };
      const p = await dinmEdit(b, pairs, { variant: 'paper', layer: loc.layer, edit });
      expect(p.params).toEqual(['gate_proj', 'up_proj', 'down_proj']);
      await gatedEdit(c, pairs, null, { ...edit, gated: false, layers: [loc.layer] });
      for (const w of ['gate_proj', 'up_proj', 'down_proj']) {
        const name = `model.layers.${loc.layer}.mlp.${w}.weight`;
        expect(maxRelDiff(await weightsOf(b, name), await weightsOf(c, name))).toBe(0);
      }
      await expect(dinmEdit(c, pairs, { variant: 'nope' as never, layer: 0 })).rejects.toThrow(/easyedit/);
      await expect(dinmEdit(c, pairs, { layer: 0, easyedit: { steps: 0 } })).rejects.toThrow(/easyedit.steps/);
    } finally {
      [a, b, c].forEach((m) => m.dispose());
    }
  });
});
