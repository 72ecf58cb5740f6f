// learnMask (eq. 2–5; eq. 8 for several layers): per pair and layer, a vector
// m_l ∈ [-1, 1]^d, initialised to 1, that scales the subject tokens' features;
// learned with the model frozen on L_sen + α·L_benign + λ·‖m − 1‖₁.
import type { MaskSet } from '../../types/results';
import { PrivacyPair, preparePairs, toNativeInputs } from '../data/prepare';
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

export async function learnMask(model: Model, pairs: PrivacyPair[], opts: LearnMaskOptions): Promise<MaskSet> {
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
  const last = model.config.numLayers - 1;
  if (layers.includes(last)) {
    // The mask scales the subject positions' features after the layer's attention has run, and no layer
    // after it lets later positions read them: the answer's logits cannot depend on the mask (eq. 5).
    warn(opts.onWarning, 'NGATE_LAST_LAYER_MASK', `layer ${last} is the model's last: a mask there scales subject positions that no later attention reads, ` +
      'so it cannot change the answer\'s logits and learns only from the L1 term; mask an earlier layer');
  }
  const prepared = await preparePairs(model, pairs, { refusal: opts.refusal });
  const inputs = await toNativeInputs(model, prepared);
  const onProgress = opts.onProgress;
  const res = await model.runNative(opts.signal, (native, token) => native.learnMasks(inputs.pairs, {
    layers, hookPoint: o.hookPoint, alpha: o.alpha, l1: o.l1, lr: o.lr, steps: o.steps, batchSize: o.batchSize,
    padId: model.padTokenId, reuseLowerLayers: opts.reuseLowerLayers !== false, reusePrefix: opts.reusePrefix !== false,
  }, token, onProgress ? (done, total) => onProgress({ stage: 'learnMask', done, total }) : undefined, inputs.images));
  const losses = pairs.map((_, i) => ({
    sensitive: res.losses[i * 3], benign: res.losses[i * 3 + 1], l1: o.l1 * res.losses[i * 3 + 2],
  }));
  return {
    layers: layers.slice(),
    hiddenSize: model.config.hiddenSize,
    pairIds: pairs.map((p) => p.id),
    masks: res.masks,
    losses,
    hookPoint: o.hookPoint,
    options: { alpha: o.alpha, l1: o.l1, steps: o.steps, lr: o.lr, batchSize: o.batchSize, seed: o.seed ?? null },
  };
}
