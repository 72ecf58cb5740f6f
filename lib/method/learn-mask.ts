// learnMask (eq. 2–5; eq. 8 for several layers): per pair and layer, a vector
// m_l ∈ [-1, 1]^d, initialised to 1, that scales the subject tokens' features;
// learned with the model frozen on L_sen + α·L_benign + λ·‖m − 1‖₁.
import type { MaskSet } from '../../types/results';
import { PreparedPair, PrivacyPair, preparePairs, toNativeInputs } from '../data/prepare';
import type { ProcessGroup } from '../dist/process-group';
import { assignUnits, gatherUnits, partsFor } from '../dist/shards';
import { readSafetensorsHeader, readSafetensorsTensor, writeSafetensorsFile } from '../model/safetensors';
import { NgateError } from '../util/errors';
import { warn, WarningCallback } from '../util/warnings';
import type { Model, ProgressCallback } from '../model/model';

export interface LearnMaskOptions {
  /** Decoder layers to mask; several at once are optimised jointly (eq. 8). */
  layers: number[];
  /** α, the weight of L_benign (paper: 1.25). */
  alpha?: number;
  /** λ, the weight of ‖m − 1‖₁ (summed over dimensions and layers); not given by the paper. */
  l1?: number;
  /** Adam steps per mask; not given by the paper. */
  steps?: number;
  /** Adam learning rate of the masks; not given by the paper. */
  lr?: number;
  /** Pairs learned together in one batched forward/backward (results equal one-pair runs). */
  batchSize?: number;
  /** Where m scales the features: the FFN output f_l (default) or the block output. */
  hookPoint?: 'ffn' | 'block';
  /**
   * Compute the layers below the first masked layer once per batch instead of
   * at every step (default true). They see no mask, so the result is the same;
   * false runs the plain full pass, the reference the shortcut is tested against.
   */
  reuseLowerLayers?: boolean;
  /**
   * Keep the keys and values of the positions before the batch's first subject
   * token (an image in front of the question included) from one pass, and
   * recompute only the positions from there on at every step (default true).
   * The attention is causal and the mask scales subject positions only, so
   * the result is the same; false recomputes every position.
   */
  reusePrefix?: boolean;
  /** Recorded with the result; mask learning itself draws no random numbers. */
  seed?: number;
  /** r_safe for pairs without their own `refusal`. */
  refusal?: string;
  /** Where warnings go (default: Node's process warnings). */
  onWarning?: WarningCallback;
  /**
   * Spread the work over the ranks of this process group: whole batches, rank r
   * taking batches r, r + W, …; every rank returns all the masks, each
   * bit-identical to a one-process run with the same batchSize.
   */
  group?: ProcessGroup;
  /**
   * Write each batch's masks here as it finishes, and take finished batches
   * from here instead of learning them again (a restarted job); not used
   * while the model holds edits made in this process. The folder is the
   * caller's to remove once the result is saved.
   */
  partsDir?: string;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export const MASK_DEFAULTS = { alpha: 1.25, l1: 1e-4, steps: 20, lr: 0.05, batchSize: 8, hookPoint: 'ffn' as const };

function checkLayers(model: Model, layers: unknown): number[] {
  if (!Array.isArray(layers) || layers.length === 0) {
    throw new NgateError('ERR_INPUT', 'layers must be a non-empty array of layer indices', { field: 'layers' });
  }
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= model.config.numLayers) {
      throw new NgateError('ERR_INPUT', `layer ${l} is not in [0, ${model.config.numLayers})`, { field: 'layers' });
    }
  }
  if (new Set(layers).size !== layers.length) throw new NgateError('ERR_INPUT', 'layers repeat', { field: 'layers' });
  return layers as number[];
}

function positive(name: string, v: number, integer: boolean): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (integer && (!Number.isInteger(v) || v < 1))) {
    throw new NgateError('ERR_INPUT', `${name} must be a ${integer ? 'positive integer' : 'non-negative number'}, got ${v}`, { field: name });
  }
  return v;
}

/**
 * The order pairs are batched in: by the position of their first subject token
 * (the earliest of the two queries; the first answer token's when a query has
 * none) when the prefix is reused, so that each batch keeps a longer prefix;
 * else as given. Stable, so equal positions keep the caller's order. A pair's
 * masks do not depend on its batch, so the order changes speed, not results;
 * every run with the same batchSize forms the same batches.
 */
export function maskBatchOrder(prepared: PreparedPair[], reusePrefix: boolean): number[] {
  const order = prepared.map((_, i) => i);
  if (!reusePrefix) return order;
  const first = (s: PreparedPair['sensitive']) => (s.subjectPositions.length === 0 ? s.answerStart - 1 : Math.min(...s.subjectPositions));
  const key = prepared.map((p) => Math.min(first(p.sensitive), first(p.benign)));
  return order.sort((a, b) => key[a] - key[b] || a - b);
}

interface MaskRun {
  layers: number[];
  o: Omit<typeof MASK_DEFAULTS, 'hookPoint'> & LearnMaskOptions & { hookPoint: 'ffn' | 'block' };
  prepared: PreparedPair[];
  /** Pair indices (the caller's order) of each batch. */
  batches: number[][];
}

/** Pairs prepared once and split into the batches of a one-process run. */
export async function planMaskRun(model: Model, pairs: PrivacyPair[], opts: LearnMaskOptions): Promise<MaskRun> {
  const layers = checkLayers(model, opts?.layers);
  const o = { ...MASK_DEFAULTS, ...opts };
  positive('alpha', o.alpha, false);
  positive('l1', o.l1, false);
  positive('lr', o.lr, false);
  positive('steps', o.steps, true);
  positive('batchSize', o.batchSize, true);
  if (o.hookPoint !== 'ffn' && o.hookPoint !== 'block') {
    throw new NgateError('ERR_INPUT', `hookPoint must be 'ffn' or 'block', got ${String(o.hookPoint)}`, { field: 'hookPoint' });
  }
  const prepared = await preparePairs(model, pairs, { refusal: opts.refusal, group: opts.group, signal: opts.signal });
  const order = maskBatchOrder(prepared, opts.reusePrefix !== false);
  const batches: number[][] = [];
  for (let k = 0; k < order.length; k += o.batchSize) batches.push(order.slice(k, k + o.batchSize));
  return { layers, o, prepared, batches };
}

/** One batch's masks [n, layers, hiddenSize] and raw losses [n, 3] (L_sen, L_benign, ‖m − 1‖₁), n = its pairs. */
export interface BatchMasks { masks: Float32Array; rawLosses: Float32Array }

/**
 * Learns one batch on `layers` (default the run's). Each batch is one native
 * call, in the one-process run as in a sharded one, so both run the same
 * computation on the same rows.
 */
export async function learnMaskBatch(model: Model, run: MaskRun, b: number, layers = run.layers,
  onSteps?: (done: number) => void): Promise<BatchMasks> {
  const { o } = run;
  const inputs = await toNativeInputs(model, run.batches[b].map((i) => run.prepared[i]));
  const res = await model.runNative(o.signal, (native, token) => native.learnMasks(inputs.pairs, {
    layers, hookPoint: o.hookPoint, alpha: o.alpha, l1: o.l1, lr: o.lr, steps: o.steps, batchSize: o.batchSize,
    padId: model.padTokenId, reuseLowerLayers: o.reuseLowerLayers !== false, reusePrefix: o.reusePrefix !== false,
  }, token, onSteps ? (done) => onSteps(done) : undefined, inputs.images));
  return { masks: res.masks, rawLosses: res.losses };
}

/** What a batch's masks depend on besides the model, for the name of its parts folder. */
export function maskRunKey(run: MaskRun, layers = run.layers): unknown {
  const { o } = run;
  return {
    layers,
    options: [o.alpha, o.l1, o.steps, o.lr, o.batchSize, o.hookPoint, o.reuseLowerLayers !== false, o.reusePrefix !== false],
    pairs: run.prepared.map((p) => [p.id, p.sensitive.ids, p.sensitive.subjectPositions, p.benign.ids, p.benign.subjectPositions,
      p.sensitive.image ?? null]),
  };
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** A finished batch as a part: masks and raw losses, with the pair ids to check it against. */
export function writeBatchPart(file: string, ids: string[], layers: number, hidden: number, m: BatchMasks): void {
  writeSafetensorsFile(file, [
    { name: 'masks', dtype: 'F32', shape: [ids.length, layers, hidden], data: bytesOf(m.masks) },
    { name: 'losses', dtype: 'F32', shape: [ids.length, 3], data: bytesOf(m.rawLosses) },
  ], { pairIds: JSON.stringify(ids) });
}

export function readBatchPart(file: string, ids: string[], layers: number, hidden: number): BatchMasks {
  const header = readSafetensorsHeader(file);
  const read = (name: string, n: number) => {
    const e = header.tensors.get(name);
    if (!e || e.dtype !== 'F32' || e.end - e.begin !== 4 * n) {
      throw new NgateError('ERR_MASK_FILE', `tensor ${name} is not F32 of ${n} values; remove the file to learn this batch again`, { file });
    }
    const bytes = readSafetensorsTensor(file, e);
    return new Float32Array(bytes.byteOffset === 0 ? bytes.buffer : bytes.slice().buffer, 0, n);
  };
  if (header.metadata.pairIds !== JSON.stringify(ids)) {
    throw new NgateError('ERR_MASK_FILE', 'holds other pairs than this batch; remove the file to learn this batch again', { file });
  }
  return { masks: read('masks', ids.length * layers * hidden), rawLosses: read('losses', ids.length * 3) };
}

/** Both arrays of a batch in one buffer, to gather; and back. */
export function packBatch(m: BatchMasks): Uint8Array {
  const out = new Uint8Array(m.masks.byteLength + m.rawLosses.byteLength);
  out.set(bytesOf(m.masks), 0);
  out.set(bytesOf(m.rawLosses), m.masks.byteLength);
  return out;
}

export function unpackBatch(bytes: Uint8Array, n: number, layers: number, hidden: number): BatchMasks {
  const copy = bytes.slice();  // aligned, and owned
  const m = n * layers * hidden;
  return { masks: new Float32Array(copy.buffer, 0, m), rawLosses: new Float32Array(copy.buffer, 4 * m, 3 * n) };
}

export function learnMask(model: Model, pairs: PrivacyPair[], opts: LearnMaskOptions): Promise<MaskSet> {
  // One call on the model from start to end: nothing issued meanwhile lands in the middle.
  return model.hold(() => learnMaskHeld(model, pairs, opts));
}

async function learnMaskHeld(model: Model, pairs: PrivacyPair[], opts: LearnMaskOptions): Promise<MaskSet> {
  const run = await planMaskRun(model, pairs, opts);
  const { layers, o, batches } = run;
  const last = model.config.numLayers - 1;
  if (layers.includes(last)) {
    // The mask scales the subject positions' features after the layer's attention has run, and no layer
    // after it lets later positions read them: the answer's logits cannot depend on the mask (eq. 5).
    warn(opts.onWarning, 'NGATE_LAST_LAYER_MASK', `layer ${last} is the model's last: a mask there scales subject positions that no later attention reads, ` +
      'so it cannot change the answer\'s logits and learns only from the L1 term; mask an earlier layer');
  }
  const H = model.config.hiddenSize, L = layers.length, N = pairs.length;
  const parts = partsFor(opts.partsDir, 'learn-mask', model, maskRunKey(run));
  const ids = (b: number) => batches[b].map((i) => pairs[i].id);
  const { compute, load } = await assignUnits(batches.length, opts.group, (b) => parts?.has(b, 'safetensors') ?? false);
  const mine = new Map<number, Uint8Array>();
  for (const b of load) mine.set(b, packBatch(readBatchPart(parts!.file(b, 'safetensors'), ids(b), L, H)));
  const total = compute.length * o.steps;
  let done = 0;
  for (const b of compute) {
    const m = await learnMaskBatch(model, run, b, layers,
      opts.onProgress ? (d) => opts.onProgress!({ stage: 'learnMask', done: done + d, total }) : undefined);
    done += o.steps;
    if (parts) {
      parts.ensure();
      writeBatchPart(parts.file(b, 'safetensors'), ids(b), L, H, m);
    }
    mine.set(b, packBatch(m));
  }
  const all = await gatherUnits(opts.group, mine);
  const masks = new Float32Array(N * L * H);
  const raw = new Float32Array(N * 3);
  batches.forEach((rows, b) => {
    const m = unpackBatch(all.get(b)!, rows.length, L, H);
    rows.forEach((i, k) => {
      masks.set(m.masks.subarray(k * L * H, (k + 1) * L * H), i * L * H);
      raw.set(m.rawLosses.subarray(3 * k, 3 * k + 3), 3 * i);
    });
  });
  const losses = pairs.map((_, i) => ({ sensitive: raw[i * 3], benign: raw[i * 3 + 1], l1: o.l1 * raw[i * 3 + 2] }));
  return {
    layers: layers.slice(),
    hiddenSize: H,
    pairIds: pairs.map((p) => p.id),
    masks,
    losses,
    hookPoint: o.hookPoint,
    options: { alpha: o.alpha, l1: o.l1, steps: o.steps, lr: o.lr, batchSize: o.batchSize, seed: o.seed ?? null },
  };
}
