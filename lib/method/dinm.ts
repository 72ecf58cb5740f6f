// DINM (Wang et al. 2024, "Detoxifying Large Language Models via Knowledge
// Editing"), the baseline of the paper's tables, in two forms:
// - 'easyedit': as EasyEdit implements it (models/dinm/dinm_main.py,
//   editors/safety_editor.py, hparams/DINM/llama-7b.yaml). The layer is the
//   one where the hidden states of the safe and the unsafe answer lie furthest
//   apart; its MLP down_proj is trained, one request after another, 10 Adam
//   steps each (a new Adam per request, lr 5e-4), on 0.1·L_sen plus a KL term
//   that keeps the next-token distributions of a "general knowledge" answer
//   where they were. EasyEdit computes that KL term under torch.no_grad, so it
//   shows in the loss and in the stop test (loss < 1e-4) but moves no weight;
//   `klGradient: true` gives it its gradient, as the DINM paper writes the loss.
// - 'paper': the variant the Neural Gate paper ran (appendix 8.1): the same
//   loss as every method (L_sen + α·L_benign), 10 epochs of Adam at 1e-5 and
//   the same number of optimised parameters as Neural Gate, at DINM's layer —
//   so it is the ungated edit, at the layer DINM locates.
import type { PrivacyPair } from '../data/prepare';
import { encodeQuery, validatePairs } from '../data/prepare';
import { defaultRefusalResponse } from '../data/safe-response';
import { NgateError } from '../util/errors';
import type { Model, ProgressCallback } from '../model/model';
import { EDIT_DEFAULTS, EditReport, editLoop, FfnParam, GatedEditOptions } from './gated-edit';

export interface ToxicLayerLocation {
  /** The layer DINM edits: the most frequent of the per-pair layers (ties: the lower layer). */
  layer: number;
  /** Per pair, the layer whose hidden states of the two answers lie furthest apart. */
  perPair: number[];
  /** Per pair, per layer, the Euclidean distance between the two answers' hidden states. */
  distances: number[][];
  /** How many pairs chose each layer. */
  votes: Record<string, number>;
  /** The unsafe answers compared (the unedited model's answers to the sensitive queries). */
  unsafeAnswers: string[];
}

export interface LocateToxicLayerOptions {
  /** The unedited model's answers to the sensitive queries, one per pair; generated when absent. */
  unsafeAnswers?: string[];
  /** r_safe for pairs without their own; default defaultRefusalResponse(). */
  refusal?: string;
  /** New tokens of a generated unsafe answer (default 48, as r_org). */
  maxNewTokens?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

/**
 * The unedited model's greedy answers to the sensitive queries: DINM's
 * "unsafe" responses (EasyEdit's ground_truth). Refused once the model is
 * edited, as r_org is.
 */
export async function generateUnsafeAnswers(model: Model, pairs: PrivacyPair[],
  opts: { maxNewTokens?: number; batchSize?: number; signal?: AbortSignal; onProgress?: ProgressCallback } = {}): Promise<string[]> {
  validatePairs(pairs);
  if (model.editedTensors.size > 0) {
    throw new NgateError('ERR_INPUT', 'the unsafe answers DINM compares must come from the unedited model, and this model has been edited', { field: 'unsafeAnswers' });
  }
  const out: string[] = [];
  const batchSize = opts.batchSize ?? 16;
  for (let k = 0; k < pairs.length; k += batchSize) {
    const chunk = pairs.slice(k, k + batchSize);
    const prompts = await Promise.all(chunk.map(async (p) => (await encodeQuery(model, p.sensitive, p.subject, p.image)).ids));
    const images = chunk.some((p) => p.image !== undefined) ? chunk.map((p) => p.image ?? null) : undefined;
    const gens = await model.generate(prompts, { maxNewTokens: opts.maxNewTokens ?? 48, signal: opts.signal, images });
    out.push(...gens.map((g) => g.text.trim()));
    opts.onProgress?.({ stage: 'unsafe answers', done: Math.min(k + batchSize, pairs.length), total: pairs.length });
  }
  return out;
}

/**
 * DINM's toxic layer (EasyEdit's _locate_toxic_layer): each answer alone, as
 * the tokenizer encodes it (BOS first, no prompt, no chat template), through
 * the model; at every decoder layer the distance between the two answers'
 * hidden states (transformers' hidden_states[l + 1], the last with the final
 * norm); the layer of the largest distance. EasyEdit compares the two padded
 * to one length (the shorter one's padding included); we compare the
 * positions both answers have. EasyEdit's SafetyEditor locates on the first
 * request and keeps that layer for all later ones; over many pairs we take the
 * layer most pairs choose.
 */
export async function locateToxicLayer(model: Model, pairs: PrivacyPair[], opts: LocateToxicLayerOptions = {}): Promise<ToxicLayerLocation> {
  validatePairs(pairs);
  let unsafe = opts.unsafeAnswers;
  if (unsafe !== undefined) {
    if (!Array.isArray(unsafe) || unsafe.length !== pairs.length || unsafe.some((a) => typeof a !== 'string' || a.trim() === '')) {
      throw new NgateError('ERR_INPUT', `must hold one non-empty answer per pair (${pairs.length})`, { field: 'unsafeAnswers' });
    }
  } else {
    unsafe = await generateUnsafeAnswers(model, pairs, { maxNewTokens: opts.maxNewTokens, signal: opts.signal, onProgress: opts.onProgress });
  }
  const encode = async (text: string, what: string): Promise<Int32Array> => {
    const ids = (await model.tokenizer.encode(text)).ids;
    if (ids.length === 0) throw new NgateError('ERR_INPUT', `${what} encodes to no tokens`, { field: 'unsafeAnswers' });
    return Int32Array.from(ids);
  };
  const answers = await Promise.all(pairs.map(async (p, i) => ({
    a: await encode(p.refusal ?? opts.refusal ?? defaultRefusalResponse(), `the safe answer of pair "${p.id}"`),
    // An empty generated answer still has its BOS: nothing to compare but that.
    b: await encode(unsafe![i].length > 0 ? unsafe![i] : ' ', `the unsafe answer of pair "${p.id}"`),
  })));
  const flat = await model.runNative(opts.signal, (native, token) => native.answerDistances(answers, token));
  const L = model.config.numLayers;
  const distances = pairs.map((_, i) => Array.from(flat.subarray(i * L, (i + 1) * L)));
  // Strictly larger wins, as EasyEdit's loop keeps the first maximum.
  const perPair = distances.map((d) => d.reduce((best, v, l) => (v > d[best] ? l : best), 0));
  const votes: Record<string, number> = {};
  for (const l of perPair) votes[l] = (votes[l] ?? 0) + 1;
  let layer = perPair[0];
  for (const [l, n] of Object.entries(votes)) {
    const li = Number(l);
    if (n > votes[layer] || (n === votes[layer] && li < layer)) layer = li;
  }
  return { layer, perPair, distances, votes, unsafeAnswers: unsafe };
}

export type DinmVariant = 'easyedit' | 'paper';

export interface DinmEasyEditSettings {
  steps: number; lr: number; klFactor: number; stopBelow: number; normConstraint: number; params: FfnParam[]; klGradient: boolean;
}

/** hparams/DINM/llama-7b.yaml of EasyEdit. */
export const DINM_EASYEDIT_DEFAULTS: Readonly<DinmEasyEditSettings> = Object.freeze({
  /** num_steps: Adam steps on each request. */
  steps: 10,
  lr: 5e-4,
  /** kl_factor: EasyEdit multiplies the edit loss (L_sen) by it: loss = kl_factor·L_edit + L_KL. */
  klFactor: 0.1,
  /** EasyEdit's loop leaves a request once its loss is below this. */
  stopBelow: 1e-4,
  /** norm_constraint: false in the LLaMA settings; a number clamps each weight to within it of its start. */
  normConstraint: 0,
  /** rewrite_module_tmp: model.layers.{}.mlp.down_proj.weight. */
  params: ['down_proj'] as FfnParam[],
  /** EasyEdit's KL term is computed under torch.no_grad. */
  klGradient: false,
});

export interface DinmOptions {
  /** Default 'easyedit'. */
  variant?: DinmVariant;
  /** The layer to edit; default the toxic layer located here (or `location.layer`). */
  layer?: number;
  /** A location computed before (compare computes it once for both variants). */
  location?: ToxicLayerLocation;
  /** Options of the location when it is computed here. */
  locate?: Omit<LocateToxicLayerOptions, 'signal' | 'onProgress'>;
  /** 'easyedit': EasyEdit's hyper-parameters (DINM_EASYEDIT_DEFAULTS). */
  easyedit?: Partial<DinmEasyEditSettings>;
  /** 'paper': the edit's settings (default the paper's: 10 epochs, lr 1e-5, α 1.25, all three FFN weights). */
  edit?: Omit<GatedEditOptions, 'layers' | 'gated' | 'signal' | 'onProgress'>;
  refusal?: string;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface DinmReport extends EditReport {
  variant: DinmVariant;
  location: ToxicLayerLocation | null;
  /** The settings the edit ran with. */
  settings: Record<string, unknown>;
}

function positive(v: unknown, name: string, integer: boolean): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (integer && (!Number.isInteger(v) || v < 1))) {
    throw new NgateError('ERR_INPUT', `must be a ${integer ? 'positive integer' : 'non-negative number'}, got ${JSON.stringify(v)}`, { field: `easyedit.${name}` });
  }
  return v;
}

/**
 * Edits the model with DINM. Pairs need r_org (benignAnswer) as for
 * gatedEdit: the 'easyedit' variant keeps the distributions of the benign
 * query's answer where they were (its "general knowledge constraint"), the
 * 'paper' variant trains towards it.
 */
export async function dinmEdit(model: Model, pairs: PrivacyPair[], opts: DinmOptions = {}): Promise<DinmReport> {
  const variant = opts.variant ?? 'easyedit';
  if (variant !== 'easyedit' && variant !== 'paper') {
    throw new NgateError('ERR_INPUT', `must be "easyedit" or "paper", got ${JSON.stringify(variant)}`, { field: 'variant' });
  }
  let location = opts.location ?? null;
  let layer = opts.layer ?? location?.layer;
  if (layer === undefined) {
    location = await locateToxicLayer(model, pairs, { ...opts.locate, refusal: opts.locate?.refusal ?? opts.refusal, signal: opts.signal, onProgress: opts.onProgress });
    layer = location.layer;
  }
  if (variant === 'paper') {
    const edit = { ...EDIT_DEFAULTS, ...(opts.edit ?? {}) };
    const { report } = await editLoop(model, pairs, null, {
      ...edit, refusal: opts.refusal, layers: [layer], gated: false, signal: opts.signal, onProgress: opts.onProgress,
    }, {}, 'DINM (paper)');
    return { ...report, variant, location, settings: { ...edit, params: report.params, layer } };
  }
  const e = { ...DINM_EASYEDIT_DEFAULTS, ...(opts.easyedit ?? {}) };
  positive(e.steps, 'steps', true);
  positive(e.lr, 'lr', false);
  positive(e.klFactor, 'klFactor', false);
  positive(e.stopBelow, 'stopBelow', false);
  positive(e.normConstraint, 'normConstraint', false);
  // One request at a time, num_steps Adam steps each, a new Adam per request;
  // the edits stay (EasyEdit's SafetyEditor undoes each after scoring it,
  // which measures single edits; a model edited on a training set keeps them).
  const { report } = await editLoop(model, pairs, null, {
    layers: [layer], params: e.params, gated: false, epochs: 1, batchSize: 1, lr: e.lr, alpha: 1, refusal: opts.refusal,
    signal: opts.signal, onProgress: opts.onProgress,
  }, {
    sensitiveWeight: e.klFactor, benignLoss: 'kl', klGradient: e.klGradient, stepsPerBatch: e.steps,
    freshOptimizerPerBatch: true, stopBelow: e.stopBelow, normConstraint: e.normConstraint,
  }, 'DINM (EasyEdit)');
  return { ...report, variant, location, settings: { ...e, layer } };
}
