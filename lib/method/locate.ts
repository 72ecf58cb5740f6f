// locateLayer (section 3.2.3, appendix 10.1): the search centre o is the layer
// with the largest share of strongly active neurons among layers 3–19 (masks
// learned one layer at a time, as in section 3.2.2); then every layer in
// [o − r, o + r] is edited alone, evaluated on a validation split, and put back.
import type { Gate } from '../../types/results';
import { fillBenignAnswers, validatePairs } from '../data/prepare';
import type { PrivacyPair } from '../data/prepare';
import type { ProcessGroup } from '../dist/process-group';
import { assignUnits, gatherUnitsJson, Parts, partsFor } from '../dist/shards';
import { NgateError } from '../util/errors';
import { evaluate, EvaluateOptions } from './evaluate';
import { DEFAULT_GATE_THRESHOLD, gateFromCounts } from './gate';
import { gatedEdit, GatedEditOptions } from './gated-edit';
import { learnMaskBatch, LearnMaskOptions, maskRunKey, planMaskRun } from './learn-mask';
import type { Model, ProgressCallback } from '../model/model';

export interface LocateOptions {
  /** First and last layer searched for the centre (paper: 3–19 of 32), clamped to the model. */
  searchLayers?: [number, number];
  /** r, the search radius (default 3). */
  radius?: number;
  /** τ of the gate (default 0.3). */
  threshold?: number;
  mask?: Omit<LearnMaskOptions, 'layers' | 'signal' | 'onProgress' | 'group' | 'partsDir'>;
  edit?: Omit<GatedEditOptions, 'layers' | 'signal' | 'onProgress' | 'group'>;
  evaluate?: Omit<EvaluateOptions, 'signal' | 'onProgress' | 'group' | 'partsDir'>;
  /**
   * Spread the search over the ranks of this group: the masks of every
   * searched layer, batch by batch, then the trial edits, a whole layer's
   * edit and evaluation per rank. Every rank returns the whole result.
   */
  group?: ProcessGroup;
  /** Keep each finished batch of masks and each trial edit's scores here; a restarted search takes them from here. */
  partsDir?: string;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface LocateRow {
  layer: number;
  /** Share of strongly active neurons (M_l > τ) at this layer. */
  strongShare: number;
  /** Validation scores of the single-layer edit; null for layers that were not edited. */
  eta: number | null;
  rtaSensitive: number | null;
  nonRefusalBenign: number | null;
}

export interface LocateResult {
  centre: number;
  radius: number;
  table: LocateRow[];
  /** The edited layer with the highest validation EtA (ties: the one nearest the centre). */
  best: { layer: number; eta: number | null };
}

type Scores = Pick<LocateRow, 'eta' | 'rtaSensitive' | 'nonRefusalBenign'>;

export function locateLayer(model: Model, trainPairs: PrivacyPair[], validationPairs: PrivacyPair[],
  opts: LocateOptions = {}): Promise<LocateResult> {
  // One call on the model from start to end: nothing issued meanwhile lands in the middle.
  return model.hold(() => locateLayerHeld(model, trainPairs, validationPairs, opts));
}

async function locateLayerHeld(model: Model, trainPairs: PrivacyPair[], validationPairs: PrivacyPair[],
  opts: LocateOptions = {}): Promise<LocateResult> {
  const n = model.config.numLayers;
  const [lo, hi] = opts.searchLayers ?? [3, 19];
  const first = Math.max(0, Math.min(lo, n - 1)), last = Math.max(first, Math.min(hi, n - 1));
  const radius = opts.radius ?? 3;
  if (!Number.isInteger(radius) || radius < 0) throw new NgateError('ERR_INPUT', `radius must be a non-negative integer, got ${radius}`, { field: 'radius' });
  const threshold = opts.threshold ?? DEFAULT_GATE_THRESHOLD;
  if (typeof threshold !== 'number' || !(threshold >= 0 && threshold <= 1)) {
    throw new NgateError('ERR_INPUT', `τ must be a number in [0, 1], got ${JSON.stringify(threshold)}`, { field: 'threshold' });
  }
  validatePairs(validationPairs);
  const { group, signal } = opts;
  // r_org once, from the unedited model, for every mask and trial edit below.
  const train = trainPairs.some((p) => p.benignAnswer === undefined) ? await fillBenignAnswers(model, trainPairs, { group, signal }) : trainPairs;
  const H = model.config.hiddenSize;
  const run = await planMaskRun(model, train, { ...opts.mask, layers: [first], signal });
  const nb = run.batches.length;
  const parts = partsFor(opts.partsDir, 'locate', model, {
    masks: maskRunKey(run, []), threshold, edit: opts.edit ?? null, evaluate: opts.evaluate ?? null, validation: validationPairs,
  });
  let done = 0, total = 0;
  const tick = () => opts.onProgress?.({ stage: 'locateLayer', done: ++done, total });

  const gates = new Map<number, Gate>();
  const rows = new Map<number, LocateRow>();
  // The gates of `layers`: their single-layer masks as (layer, batch) units
  // spread over the ranks; each unit reduces to per-dimension counts of
  // m < 0, and eq. 6 needs nothing else (the counts add exactly).
  const learnGates = async (layers: number[]) => {
    const unitName = (u: number) => `masks-${layers[Math.floor(u / nb)]}-${u % nb}`;
    const { compute, load } = await assignUnits(layers.length * nb, group, (u) => parts?.has(unitName(u)) ?? false);
    total += compute.length;
    const mine = new Map<number, number[]>();
    for (const u of load) {
      const counts = parts!.readJson<number[]>(unitName(u));
      if (counts && counts.length === H) mine.set(u, counts); else compute.push(u);
    }
    for (const u of compute) {
      const layer = layers[Math.floor(u / nb)], b = u % nb;
      const { masks } = await learnMaskBatch(model, run, b, [layer]);
      const counts = new Array<number>(H).fill(0);
      run.batches[b].forEach((pair, k) => {
        for (let j = 0; j < H; j++) {
          const v = masks[k * H + j];
          if (v < 0) counts[j]++;
          else if (v !== v) throw new NgateError('ERR_INPUT', `pair ${JSON.stringify(train[pair].id)} has NaN at layer ${layer}, dim ${j}`, { field: 'masks' });
        }
      });
      parts?.writeJson(unitName(u), counts);
      mine.set(u, counts);
      tick();
    }
    const all = await gatherUnitsJson(group, mine);
    layers.forEach((layer, li) => {
      const neg = new Uint32Array(H);
      for (let b = 0; b < nb; b++) all.get(li * nb + b)!.forEach((c, j) => { neg[j] += c; });
      const g = gateFromCounts([layer], H, threshold, train.length, neg, train.map((p) => p.id));
      gates.set(layer, g);
      rows.set(layer, { layer, strongShare: g.counts[0].strongShare, eta: null, rtaSensitive: null, nonRefusalBenign: null });
    });
  };

  const searched = Array.from({ length: last - first + 1 }, (_, i) => first + i);
  await learnGates(searched);
  let centre = first;
  for (let l = first; l <= last; l++) if (rows.get(l)!.strongShare > rows.get(centre)!.strongShare) centre = l;
  const edited = Array.from({ length: Math.min(n - 1, centre + radius) - Math.max(0, centre - radius) + 1 }, (_, i) => Math.max(0, centre - radius) + i);
  const unsearched = edited.filter((l) => !gates.has(l));
  if (unsearched.length > 0) await learnGates(unsearched);

  // One trial edit per layer of the radius, each a whole unit on one rank.
  const { compute, load } = await assignUnits(edited.length, group, (j) => parts?.has(`edit-${edited[j]}`) ?? false);
  total += compute.length;
  const scores = new Map<number, Scores>();
  for (const j of load) {
    const s = parts!.readJson<Scores>(`edit-${edited[j]}`);
    if (s) scores.set(j, s); else compute.push(j);
  }
  for (const j of compute) {
    const l = edited[j];
    scores.set(j, await trialEdit(model, train, validationPairs, gates.get(l)!, l, opts, parts));
    tick();
  }
  const all = await gatherUnitsJson(group, scores);
  edited.forEach((l, j) => Object.assign(rows.get(l)!, all.get(j)!));

  const table = [...rows.values()].sort((a, b) => a.layer - b.layer);
  let best: LocateRow | null = null;
  for (const r of table) {
    if (r.eta === null) continue;
    if (!best || r.eta > best.eta! || (r.eta === best.eta && Math.abs(r.layer - centre) < Math.abs(best.layer - centre))) best = r;
  }
  return { centre, radius, table, best: { layer: best ? best.layer : centre, eta: best ? best.eta : null } };
}

/** Edits layer `l` alone, scores it on the validation pairs, and puts the weights back. */
async function trialEdit(model: Model, train: PrivacyPair[], validation: PrivacyPair[], gate: Gate, l: number,
  opts: LocateOptions, parts: Parts | null): Promise<Scores> {
  const snapshot = await model.runNative(undefined, (native) => native.snapshotFfn([l]));
  const before = new Set(model.editedTensors);
  try {
    await gatedEdit(model, train, gate, { ...opts.edit, layers: [l], signal: opts.signal });
    const report = await evaluate(model, validation, { ...opts.evaluate, signal: opts.signal });
    const s: Scores = {
      eta: report.scores.overall.eta, rtaSensitive: report.scores.overall.rtaSensitive, nonRefusalBenign: report.scores.overall.nonRefusalBenign,
    };
    parts?.writeJson(`edit-${l}`, s);
    return s;
  } finally {
    // Every trial edit is undone, also when it fails or is aborted.
    await model.runNative(undefined, (native) => native.restoreFfn(snapshot, true));
    for (const t of [...model.editedTensors]) if (!before.has(t)) model.editedTensors.delete(t);
  }
}
