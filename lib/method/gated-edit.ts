// gatedEdit (eq. 7): Adam on the FFN weights of the gate's layers, on
// L_sen + α·L_benign, with the gradient from subject positions multiplied by
// the gate (M_l > τ) and the gradient from every other position unchanged.
// `gated: false` is the same edit without the gate: the paper's "w/o gate"
// ablation (DINM, with its own layer, loss and step order, is dinm.ts).
import type { Gate } from '../../types/results';
import type { NativeEditOptions } from '../../types/native';
import { PrivacyPair, preparePairs, toNativeInputs } from '../data/prepare';
import type { ProcessGroup } from '../dist/process-group';
import { NgateError } from '../util/errors';
import type { Model, ProgressCallback } from '../model/model';

export type FfnParam = 'gate_proj' | 'up_proj' | 'down_proj';

export interface GatedEditOptions {
  /** Epochs over the pairs (paper: 10). */
  epochs?: number;
  /** Adam learning rate (paper: 1e-5). */
  lr?: number;
  /** α, the weight of L_benign (paper: 1.25). */
  alpha?: number;
  /** Pairs per Adam step; the loss is their mean. Not given by the paper. */
  batchSize?: number;
  /** FFN weights trained (default all three). */
  params?: FfnParam[];
  /** Apply the gate (default true). */
  gated?: boolean;
  /** Layers to edit; default the gate's layers (required when there is no gate). */
  layers?: number[];
  refusal?: string;
  /**
   * Compute the layers below the first edited layer once per batch for the
   * whole edit instead of at every step (default true). Their weights never
   * change, so the result is the same; false runs the plain full pass, the
   * reference the shortcut is tested against.
   */
  reuseLowerLayers?: boolean;
  /**
   * Data-parallel over this process group: each rank runs its share of every
   * batch, the gradients are summed over the ranks and divided by the batch's
   * pair count, and every rank takes the same Adam step, so every rank ends
   * with the same weights (checked). Every rank passes all the pairs.
   */
  group?: ProcessGroup;
  /** With a group: compare the weights across ranks every this many steps, and after the last (default 50; 0: after the last only). */
  checkEvery?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface EditReport {
  layers: number[];
  params: FfnParam[];
  gated: boolean;
  pairCount: number;
  /** Mean L_sen + α·L_benign over the pairs, per epoch (while training). */
  epochLosses: number[];
  /** Adam steps taken. */
  steps: number;
  /** Hugging Face names of the weights changed. */
  editedTensors: string[];
}

export const EDIT_DEFAULTS = { epochs: 10, lr: 1e-5, alpha: 1.25, batchSize: 8, gated: true, checkEvery: 50 };
const ALL_PARAMS: FfnParam[] = ['gate_proj', 'up_proj', 'down_proj'];

/** The gate's keep vectors for `layers`, in that order. */
function keepFor(gate: Gate, layers: number[], hiddenSize: number): Uint8Array {
  if (gate.hiddenSize !== hiddenSize) {
    throw new NgateError('ERR_INPUT', `the gate has hiddenSize ${gate.hiddenSize}, the model ${hiddenSize}`, { field: 'gate.hiddenSize' });
  }
  // A gate read from elsewhere (not built here) is checked whole: a short keep
  // would be zero-filled, and a value other than 0/1 would scale the gradient.
  if (!(gate.keep instanceof Uint8Array) || gate.keep.length !== gate.layers.length * hiddenSize) {
    throw new NgateError('ERR_INPUT', `keep must be a Uint8Array of layers × hiddenSize = ${gate.layers.length * hiddenSize} values, got ${gate.keep?.length ?? typeof gate.keep}`, { field: 'gate.keep' });
  }
  const bad = gate.keep.findIndex((v) => v !== 0 && v !== 1);
  if (bad >= 0) throw new NgateError('ERR_INPUT', `keep[${bad}] is ${gate.keep[bad]}; the gate is 0 or 1 per dimension (eq. 7)`, { field: 'gate.keep' });
  const out = new Uint8Array(layers.length * hiddenSize);
  layers.forEach((l, i) => {
    const at = gate.layers.indexOf(l);
    if (at < 0) throw new NgateError('ERR_INPUT', `the gate has no layer ${l} (it has ${gate.layers.join(', ')})`, { field: 'layers' });
    out.set(gate.keep.subarray(at * hiddenSize, (at + 1) * hiddenSize), i * hiddenSize);
  });
  return out;
}

export async function gatedEdit(model: Model, pairs: PrivacyPair[], gate: Gate | null, opts: GatedEditOptions = {}): Promise<EditReport> {
  return (await editLoop(model, pairs, gate, opts)).report;
}

/**
 * @internal The edit loop of gatedEdit with settings eq. 7 does not use
 * (DINM's, lib/method/dinm.ts), and the loss of every step. One call on the
 * model from start to end: nothing issued meanwhile lands in the middle.
 */
export function editLoop(model: Model, pairs: PrivacyPair[], gate: Gate | null, opts: GatedEditOptions,
  extra: Partial<NativeEditOptions> = {}, stage = 'gatedEdit'): Promise<{ report: EditReport; stepLosses: Float64Array }> {
  return model.hold(() => editLoopHeld(model, pairs, gate, opts, extra, stage));
}

async function editLoopHeld(model: Model, pairs: PrivacyPair[], gate: Gate | null, opts: GatedEditOptions,
  extra: Partial<NativeEditOptions>, stage: string): Promise<{ report: EditReport; stepLosses: Float64Array }> {
  const o = { ...EDIT_DEFAULTS, ...opts };
  const gated = o.gated !== false;
  if (gated && !gate) throw new NgateError('ERR_INPUT', 'a gate is required unless gated is false', { field: 'gate' });
  const layers = o.layers ?? gate?.layers;
  if (!layers || layers.length === 0) throw new NgateError('ERR_INPUT', 'layers must be given when there is no gate', { field: 'layers' });
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= model.config.numLayers) {
      throw new NgateError('ERR_INPUT', `layer ${l} is not in [0, ${model.config.numLayers})`, { field: 'layers' });
    }
  }
  // A repeated layer or parameter would get its Adam step twice per step.
  if (new Set(layers).size !== layers.length) throw new NgateError('ERR_INPUT', `layers repeat: [${layers.join(', ')}]`, { field: 'layers' });
  const params = o.params ?? ALL_PARAMS;
  if (!Array.isArray(params) || params.length === 0 || params.some((p) => !ALL_PARAMS.includes(p))) {
    throw new NgateError('ERR_INPUT', `params must be a non-empty list of ${ALL_PARAMS.join(', ')}`, { field: 'params' });
  }
  if (new Set(params).size !== params.length) throw new NgateError('ERR_INPUT', `params repeat: [${params.join(', ')}]`, { field: 'params' });
  if (!Number.isInteger(o.checkEvery) || o.checkEvery < 0) {
    throw new NgateError('ERR_INPUT', `checkEvery must be a non-negative integer, got ${o.checkEvery}`, { field: 'checkEvery' });
  }
  for (const [name, v, int] of [['epochs', o.epochs, true], ['batchSize', o.batchSize, true], ['lr', o.lr, false], ['alpha', o.alpha, false]] as const) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (int && (!Number.isInteger(v) || v < 1))) {
      throw new NgateError('ERR_INPUT', `${name} must be a ${int ? 'positive integer' : 'non-negative number'}, got ${v}`, { field: name });
    }
  }
  const keep = gated ? keepFor(gate!, layers, model.config.hiddenSize) : undefined;
  const prepared = await preparePairs(model, pairs, { refusal: opts.refusal, group: opts.group, signal: opts.signal });
  const inputs = await toNativeInputs(model, prepared);
  const onProgress = opts.onProgress;
  const res = await model.runNative(opts.signal, (native, token) => native.gatedEdit(inputs.pairs, {
    layers, params, gated, keep, epochs: o.epochs, lr: o.lr, alpha: o.alpha, batchSize: o.batchSize, padId: model.padTokenId,
    reuseLowerLayers: opts.reuseLowerLayers !== false, checkEvery: o.checkEvery, ...extra,
  }, token, onProgress ? (done, total) => onProgress({ stage, done, total }) : undefined, inputs.images, opts.group?.native));
  const edited = layers.flatMap((l) => params.map((p) => `model.layers.${l}.mlp.${p}.weight`));
  edited.forEach((n) => model.editedTensors.add(n));
  return {
    report: {
      layers: layers.slice(), params: params.slice(), gated, pairCount: pairs.length, epochLosses: res.epochLosses,
      steps: res.stepLosses.length, editedTensors: edited,
    },
    stepLosses: res.stepLosses,
  };
}
