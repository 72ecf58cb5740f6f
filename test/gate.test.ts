import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { NgateError } from '../lib/util/errors';
import { buildGate, gateSummaryFile, loadGate, loadMasks, mergeGates, saveGate, saveMasks } from '../lib/method/gate';
import { readSafetensorsHeader, writeSafetensorsFile } from '../lib/model/safetensors';
import type { Gate, MaskLoss, MaskSet } from '../types/results';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngate-gate-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });
let counter = 0;
const tmpFile = (ext = '.safetensors') => path.join(dir, `f${counter++}${ext}`);

function errorOf(fn: () => unknown): NgateError {
  try {
    fn();
  } catch (e) {
    if (e instanceof NgateError) return e;
    throw e;
  }
  throw new Error('expected an NgateError, but nothing was thrown');
}

const loss = (i: number): MaskLoss => ({ sensitive: Math.fround(1 + i / 8), benign: Math.fround(0.5 / (i + 1)), l1: Math.fround(i * 0.01) });

/** A MaskSet from rows written as masks[pair][layer][dim]. */
function maskSet(layers: number[], rows: number[][][], ids?: string[]): MaskSet {
  const hiddenSize = rows[0]?.[0]?.length ?? 1;
  const pairIds = ids ?? rows.map((_, i) => `p${i}`);
  return { layers, hiddenSize, pairIds, masks: Float32Array.from(rows.flat(2)), losses: pairIds.map((_, i) => loss(i)) };
}

/**
 * 4 pairs, 1 layer, 5 dims (columns). Per column, the pairs with m < 0:
 *   d0: none — 0 and -0 are not negative                → M = 0    inactive
 *   d1: one                                              → M = 0.25 weak (≤ 0.3)
 *   d2: two                                              → M = 0.5  strong
 *   d3: three, one of them barely (-1e-6), one at 0      → M = 0.75 strong
 *   d4: all four                                         → M = 1    strong
 */
const HAND = maskSet([11], [
  [[1, -0.2, -1, -1e-6, -1]],
  [[0, 1, -0.5, -1, -1]],
  [[0.5, 1, 0.3, -1, -0.01]],
  [[-0, 1, 1, 0, -1]],
]);

describe('buildGate (eq. 6)', () => {
  test('M_l[j] is the share of pairs with m_l[j] < 0, and m = 0 does not count', () => {
    const g = buildGate(HAND);
    expect(Array.from(g.share)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(Array.from(g.negativeCounts!)).toEqual([0, 1, 2, 3, 4]);
    expect(g.pairCount).toBe(4);
    expect(g.threshold).toBe(0.3);
    expect(g.pairIds).toEqual(['p0', 'p1', 'p2', 'p3']);
  });

  test('inactive (M = 0), weak (0 < M ≤ τ) and strong (M > τ) dimensions are counted per layer', () => {
    const g = buildGate(HAND);
    expect(Array.from(g.keep)).toEqual([0, 0, 1, 1, 1]);
    expect(g.counts).toEqual([{ layer: 11, inactive: 1, weak: 1, strong: 3, inactiveShare: 0.2, weakShare: 0.2, strongShare: 0.6 }]);
  });

  test('M exactly τ is weak, not strong (the threshold is strict)', () => {
    // With τ = 0.25, d1 (M = 0.25) sits exactly on τ; with τ = 0.5, so does d2.
    const at25 = buildGate(HAND, { threshold: 0.25 });
    expect(Array.from(at25.keep)).toEqual([0, 0, 1, 1, 1]);
    expect(at25.counts[0]).toMatchObject({ inactive: 1, weak: 1, strong: 3 });
    const at50 = buildGate(HAND, { threshold: 0.5 });
    expect(Array.from(at50.keep)).toEqual([0, 0, 0, 1, 1]);
    expect(at50.counts[0]).toMatchObject({ inactive: 1, weak: 2, strong: 2 });
  });

  test('3 of 10 pairs is M = 0.3 = τ exactly: weak, although the float32 share is a hair above 0.3', () => {
    // dim 0: 3 negatives; dim 1: 4 negatives.
    const rows = Array.from({ length: 10 }, (_, i) => [[i < 3 ? -1 : 1, i < 4 ? -1 : 1]]);
    const g = buildGate(maskSet([0], rows));
    expect(g.share[0]).toBe(Math.fround(0.3));
    expect(g.share[0]).toBeGreaterThan(0.3);
    expect(Array.from(g.keep)).toEqual([0, 1]);
    expect(g.counts[0]).toMatchObject({ inactive: 0, weak: 1, strong: 1 });
  });

  test('τ = 0 makes every dimension touched by any pair strong, and none weak', () => {
    const g = buildGate(HAND, { threshold: 0 });
    expect(g.counts[0]).toMatchObject({ inactive: 1, weak: 0, strong: 4 });
  });

  test('several layers get one gate row and one count entry each, in the given layer order', () => {
    // 2 pairs, layers [7, 5], 3 dims.
    //   layer 7: d0 both negative (1.0), d1 one (0.5), d2 none
    //   layer 5: d0 none, d1 none, d2 one (0.5)
    const g = buildGate(maskSet([7, 5], [
      [[-1, -1, 1], [1, 1, -0.5]],
      [[-0.1, 0.2, 1], [0, 1, 1]],
    ]));
    expect(g.layers).toEqual([7, 5]);
    expect(Array.from(g.share)).toEqual([1, 0.5, 0, 0, 0, 0.5]);
    expect(Array.from(g.keep)).toEqual([1, 1, 0, 0, 0, 1]);
    expect(g.counts.map((c) => [c.layer, c.inactive, c.weak, c.strong])).toEqual([[7, 1, 0, 2], [5, 2, 0, 1]]);
    expect(g.counts[1].strongShare).toBeCloseTo(1 / 3, 15);
  });

  test('MaskSets from sharded runs pool into the same gate as one MaskSet of all pairs', () => {
    const row = (i: number) => [Array.from(HAND.masks.subarray(i * 5, i * 5 + 5))];
    const a = maskSet([11], [row(0)], ['p0']);
    const b = maskSet([11], [row(1), row(2), row(3)], ['p1', 'p2', 'p3']);
    expect(buildGate([a, b])).toEqual(buildGate(HAND));
  });

  describe('rejects', () => {
    const other = maskSet([11], [[[1, 1, 1, 1, 1]]], ['q0']);

    test('MaskSets with different layers, naming the field', () => {
      const e = errorOf(() => buildGate([HAND, { ...other, layers: [12] }]));
      expect(e.code).toBe('ERR_INPUT');
      expect(e.field).toBe('masks[1].layers');
    });

    test('MaskSets with different hiddenSize', () => {
      const e = errorOf(() => buildGate([HAND, maskSet([11], [[[1, 1, 1, 1]]], ['q0'])]));
      expect(e.code).toBe('ERR_INPUT');
      expect(e.field).toBe('masks[1].hiddenSize');
    });

    test('a pair id that repeats across MaskSets', () => {
      const e = errorOf(() => buildGate([HAND, { ...other, pairIds: ['p2'] }]));
      expect(e.code).toBe('ERR_INPUT');
      expect(e.field).toBe('masks[1].pairIds');
      expect(e.message).toMatch(/"p2".*masks\[0\]/);
    });

    test('a pair id that repeats inside one MaskSet', () => {
      expect(errorOf(() => buildGate({ ...HAND, pairIds: ['a', 'b', 'a', 'c'] })).field).toBe('pairIds');
    });

    test('masks whose length does not match [pairs, layers, hiddenSize]', () => {
      expect(errorOf(() => buildGate({ ...HAND, masks: new Float32Array(19) })).field).toBe('masks');
    });

    test('NaN in a mask, which has no sign', () => {
      const masks = Float32Array.from(HAND.masks);
      masks[7] = NaN;
      const e = errorOf(() => buildGate({ ...HAND, masks }));
      expect(e.field).toBe('masks');
      expect(e.message).toMatch(/"p1".*layer 11, dim 2/);
    });

    test('no MaskSets, no pairs, or τ outside [0, 1]', () => {
      expect(errorOf(() => buildGate([])).field).toBe('masks');
      expect(errorOf(() => buildGate({ ...HAND, pairIds: [], masks: new Float32Array(0), losses: [] })).code).toBe('ERR_INPUT');
      expect(errorOf(() => buildGate(HAND, { threshold: 1.5 })).field).toBe('threshold');
      expect(errorOf(() => buildGate(HAND, { threshold: NaN })).field).toBe('threshold');
    });
  });
});

/** Deterministic PRNG (mulberry32), so the random masks are the same on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random masks in [-1, 1] with some exact zeros and a per-dimension bias, so all three neuron classes occur. */
function randomMasks(seed: number, pairs: number, layers: number[], d: number, idPrefix: string): MaskSet {
  const r = rng(seed);
  const bias = Array.from({ length: layers.length * d }, (_, k) => (k % 3 === 0 ? 1 : r() * 2));
  const masks = new Float32Array(pairs * layers.length * d);
  for (let i = 0; i < masks.length; i++) {
    const u = r();
    masks[i] = u < 0.1 ? 0 : Math.max(-1, Math.min(1, r() * 2 - 1 + bias[i % bias.length] * 0.6));
  }
  const pairIds = Array.from({ length: pairs }, (_, i) => `${idPrefix}${i}`);
  return { layers, hiddenSize: d, pairIds, masks, losses: pairIds.map((_, i) => loss(i)) };
}

/** One MaskSet holding the pairs of several, in order. */
function concatMaskSets(sets: MaskSet[]): MaskSet {
  const masks = new Float32Array(sets.reduce((n, s) => n + s.masks.length, 0));
  let at = 0;
  for (const s of sets) { masks.set(s.masks, at); at += s.masks.length; }
  return { layers: sets[0].layers, hiddenSize: sets[0].hiddenSize, pairIds: sets.flatMap((s) => s.pairIds), masks, losses: sets.flatMap((s) => s.losses) };
}

function expectSameBits(a: Gate, b: Gate): void {
  expect(Buffer.from(a.share.buffer, a.share.byteOffset, a.share.byteLength).equals(Buffer.from(b.share.buffer, b.share.byteOffset, b.share.byteLength))).toBe(true);
  expect(Buffer.from(a.keep).equals(Buffer.from(b.keep))).toBe(true);
  expect(Array.from(a.negativeCounts!)).toEqual(Array.from(b.negativeCounts!));
  expect(a).toEqual(b);
}

describe('mergeGates', () => {
  const layers = [2, 3, 4];
  const d = 97;
  const shards = [randomMasks(1, 5, layers, d, 'a'), randomMasks(2, 8, layers, d, 'b'), randomMasks(3, 1, layers, d, 'c'), randomMasks(4, 13, layers, d, 'd')];

  test('merging the gates of sharded mask runs equals building one gate from all masks, bit for bit', () => {
    const whole = buildGate(concatMaskSets(shards));
    const merged = mergeGates(shards.map((s) => buildGate(s)));
    expect(merged.pairCount).toBe(27);
    expectSameBits(merged, whole);
    // The random masks do produce every class, so the check is not vacuous.
    for (const c of whole.counts) {
      expect(c.inactive).toBeGreaterThan(0);
      expect(c.weak).toBeGreaterThan(0);
      expect(c.strong).toBeGreaterThan(0);
    }
  });

  test('merging is associative: merging merged gates gives the same gate', () => {
    const gates = shards.map((s) => buildGate(s));
    expectSameBits(mergeGates([mergeGates(gates.slice(0, 2)), mergeGates(gates.slice(2))]), mergeGates(gates));
  });

  test('shares are pooled by pair counts, not averaged: 1 of 1 and 0 of 3 is 1/4 (weak), not 1/2', () => {
    const one = buildGate(maskSet([0], [[[-1]]], ['x']));
    const three = buildGate(maskSet([0], [[[1]], [[1]], [[1]]], ['y', 'z', 'w']));
    const g = mergeGates([one, three]);
    expect(g.share[0]).toBe(0.25);
    expect(g.keep[0]).toBe(0);
    expect(g.counts[0]).toMatchObject({ weak: 1, strong: 0 });
  });

  test('a gate without negativeCounts is merged from share × pairCount, with the same result', () => {
    const gates = shards.map((s) => buildGate(s));
    const bare = gates.map(({ negativeCounts: _drop, ...rest }) => rest as Gate);
    expectSameBits(mergeGates(bare), mergeGates(gates));
  });

  test('rejects a share that is not a count out of pairCount when there are no negativeCounts', () => {
    const { negativeCounts: _drop, ...g } = buildGate(HAND);
    const share = Float32Array.from(g.share);
    share[1] = 0.3;
    const e = errorOf(() => mergeGates([{ ...g, share } as Gate]));
    expect(e.field).toBe('gates[0].negativeCounts');
  });

  test('rejects gates with different τ, layers or hiddenSize, naming the field', () => {
    const a = buildGate(shards[0]);
    expect(errorOf(() => mergeGates([a, buildGate(shards[1], { threshold: 0.2 })])).field).toBe('gates[1].threshold');
    expect(errorOf(() => mergeGates([a, buildGate(randomMasks(5, 2, [2, 3], d, 'e'))])).field).toBe('gates[1].layers');
    expect(errorOf(() => mergeGates([a, buildGate(randomMasks(5, 2, layers, 96, 'e'))])).field).toBe('gates[1].hiddenSize');
    expect(errorOf(() => mergeGates([])).field).toBe('gates');
  });

  test('rejects merging a gate with itself, which would count its pairs twice', () => {
    const a = buildGate(shards[0]);
    const e = errorOf(() => mergeGates([a, a]));
    expect(e.field).toBe('gates[1].pairIds');
  });
});

describe('saveGate / loadGate', () => {
  const gate = buildGate(randomMasks(9, 6, [8, 9], 33, 'g'));

  test('round trip is exact, and the file holds share F32, keep U8, negative_counts I32 [L, d] with JSON metadata', () => {
    const file = tmpFile();
    saveGate(gate, file);
    const back = loadGate(file);
    expectSameBits(back, gate);

    const h = readSafetensorsHeader(file);
    expect(h.tensors.get('share')).toMatchObject({ dtype: 'F32', shape: [2, 33] });
    expect(h.tensors.get('keep')).toMatchObject({ dtype: 'U8', shape: [2, 33] });
    expect(h.tensors.get('negative_counts')).toMatchObject({ dtype: 'I32', shape: [2, 33] });
    expect(JSON.parse(h.metadata.layers)).toEqual([8, 9]);
    expect(JSON.parse(h.metadata.threshold)).toBe(0.3);
    expect(JSON.parse(h.metadata.pairCount)).toBe(6);
    expect(JSON.parse(h.metadata.hiddenSize)).toBe(33);
  });

  test('a JSON summary with layers, threshold, pairCount and counts is written next to it', () => {
    const file = tmpFile();
    saveGate(buildGate(HAND), file);
    const summaryFile = file.replace(/\.safetensors$/, '.json');
    expect(gateSummaryFile(file)).toBe(summaryFile);
    const summary = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));
    expect(summary).toMatchObject({
      layers: [11], threshold: 0.3, pairCount: 4, hiddenSize: 5,
      counts: [{ layer: 11, inactive: 1, weak: 1, strong: 3, inactiveShare: 0.2, weakShare: 0.2, strongShare: 0.6 }],
    });
  });

  test('a file name without .safetensors gets <file>.json as its summary', () => {
    const file = tmpFile('.gate');
    saveGate(gate, file);
    expect(fs.existsSync(file + '.json')).toBe(true);
    expect(loadGate(file)).toEqual(gate);
  });

  test('a missing file is an error naming it', () => {
    const file = path.join(dir, 'nope.safetensors');
    const e = errorOf(() => loadGate(file));
    expect(e.code).toBe('ERR_MISSING_FILE');
    expect(e.file).toBe(file);
  });

  test('a file that is not safetensors is an error naming it', () => {
    const file = tmpFile();
    fs.writeFileSync(file, 'this is not a gate');
    const e = errorOf(() => loadGate(file));
    expect(e.code).toBe('ERR_SAFETENSORS');
    expect(e.file).toBe(file);
  });

  test('a masks file is not taken for a gate', () => {
    const file = tmpFile();
    saveMasks(HAND, file);
    const e = errorOf(() => loadGate(file));
    expect(e).toMatchObject({ code: 'ERR_GATE_FILE', file, field: 'format' });
  });

  test('a missing tensor, missing metadata or bad metadata JSON is an error naming the field', () => {
    const L = 1, d = 2;
    const share = { name: 'share', dtype: 'F32' as const, shape: [L, d], data: new Uint8Array(8) };
    const keep = { name: 'keep', dtype: 'U8' as const, shape: [L, d], data: new Uint8Array(2) };
    const meta = { layers: '[0]', threshold: '0.3', pairCount: '1', hiddenSize: '2' };

    const noCounts = tmpFile();
    writeSafetensorsFile(noCounts, [share, keep], meta);
    expect(errorOf(() => loadGate(noCounts))).toMatchObject({ code: 'ERR_GATE_FILE', file: noCounts, field: 'negative_counts' });

    const counts = { name: 'negative_counts', dtype: 'I32' as const, shape: [L, d], data: new Uint8Array(8) };
    const noLayers = tmpFile();
    const { layers: _drop, ...withoutLayers } = meta;
    writeSafetensorsFile(noLayers, [share, keep, counts], withoutLayers);
    expect(errorOf(() => loadGate(noLayers))).toMatchObject({ code: 'ERR_GATE_FILE', field: 'layers' });

    const badJson = tmpFile();
    writeSafetensorsFile(badJson, [share, keep, counts], { ...meta, threshold: 'zero point three' });
    expect(errorOf(() => loadGate(badJson))).toMatchObject({ code: 'ERR_GATE_FILE', field: 'threshold' });

    const wrongShape = tmpFile();
    writeSafetensorsFile(wrongShape, [share, keep, counts], { ...meta, hiddenSize: '3' });
    expect(errorOf(() => loadGate(wrongShape))).toMatchObject({ code: 'ERR_GATE_FILE', field: 'share' });
    expect(errorOf(() => loadGate(wrongShape)).message).toMatch(/shape is \[1, 2\], expected \[1, 3\]/);
  });

  test('a keep byte that disagrees with the counts is caught as corruption', () => {
    const file = tmpFile();
    saveGate(buildGate(HAND), file);
    const keep = readSafetensorsHeader(file).tensors.get('keep')!;
    const bytes = fs.readFileSync(file);
    bytes[keep.begin + 1] = 1; // d1 is weak, so keep must be 0
    fs.writeFileSync(file, bytes);
    const e = errorOf(() => loadGate(file));
    expect(e).toMatchObject({ code: 'ERR_GATE_FILE', field: 'keep' });
    expect(e.message).toMatch(/layer 11, dim 1/);
  });

  test('saveGate refuses a gate whose keep does not follow from its share', () => {
    const g = buildGate(HAND);
    const keep = Uint8Array.from(g.keep);
    keep[0] = 1;
    expect(errorOf(() => saveGate({ ...g, keep }, tmpFile())).field).toBe('keep');
  });
});

describe('saveMasks / loadMasks', () => {
  test('round trip is exact, with hookPoint and options', () => {
    const ms: MaskSet = { ...randomMasks(21, 4, [3, 5, 6], 17, 'm'), hookPoint: 'block', options: { steps: 30, lr: 0.05, lambda: 1e-3, tags: ['x', null] } };
    const file = tmpFile();
    saveMasks(ms, file);
    const back = loadMasks(file);
    expect(back).toEqual(ms);
    expect(Buffer.from(back.masks.buffer, back.masks.byteOffset, back.masks.byteLength)
      .equals(Buffer.from(ms.masks.buffer, ms.masks.byteOffset, ms.masks.byteLength))).toBe(true);

    const h = readSafetensorsHeader(file);
    expect(h.tensors.get('masks')).toMatchObject({ dtype: 'F32', shape: [4, 3, 17] });
    expect(h.tensors.get('losses')).toMatchObject({ dtype: 'F32', shape: [4, 3] });
    expect(JSON.parse(h.metadata.pairIds)).toEqual(['m0', 'm1', 'm2', 'm3']);
  });

  test('without hookPoint and options, none come back', () => {
    const file = tmpFile();
    saveMasks(HAND, file);
    const back = loadMasks(file);
    expect(back).toEqual(HAND);
    expect('hookPoint' in back).toBe(false);
    expect('options' in back).toBe(false);
  });

  test('masks saved and loaded build the same gate', () => {
    const ms = randomMasks(22, 9, [1, 2], 40, 'r');
    const file = tmpFile();
    saveMasks(ms, file);
    expectSameBits(buildGate(loadMasks(file)), buildGate(ms));
  });

  test('a gate file is not taken for masks, and a missing file is named', () => {
    const file = tmpFile();
    saveGate(buildGate(HAND), file);
    expect(errorOf(() => loadMasks(file))).toMatchObject({ code: 'ERR_MASK_FILE', file, field: 'format' });
    const missing = path.join(dir, 'missing-masks.safetensors');
    expect(errorOf(() => loadMasks(missing))).toMatchObject({ code: 'ERR_MISSING_FILE', file: missing });
  });

  test('options that cannot be JSON are refused before anything is written', () => {
    const file = tmpFile();
    const e = errorOf(() => saveMasks({ ...HAND, options: { big: BigInt(1) } }, file));
    expect(e.field).toBe('options');
    expect(fs.existsSync(file)).toBe(false);
  });
});
