// locateLayer (section 3.2.3, appendix 10.1): the search centre o is the layer
// with the largest share of strongly active neurons among layers 3–19 (masks
// learned one layer at a time, as in section 3.2.2); then every layer in
// [o − r, o + r] is edited alone, evaluated on a validation split, and put back.
import type { Gate } from '../../types/results';
import type { PrivacyPair } from '../data/prepare';
import { NgateError } from '../util/errors';
import { evaluate, EvaluateOptions } from './evaluate';
import { buildGate } from './gate';
import { gatedEdit, GatedEditOptions } from './gated-edit';
import { learnMask, LearnMaskOptions } from './learn-mask';
import type { Model, ProgressCallback } from '../model/model';

export interface LocateOptions {
  /** First and last layer searched for the centre (paper: 3–19 of 32), clamped to the model. */
  searchLayers?: [number, number];
  /** r, the search radius (default 3). */
  radius?: number;
  /** τ of the gate (default 0.3). */
  threshold?: number;
  mask?: Omit<LearnMaskOptions, 'layers' | 'signal' | 'onProgress'>;
  edit?: Omit<GatedEditOptions, 'layers' | 'signal' | 'onProgress'>;
  evaluate?: Omit<EvaluateOptions, 'signal' | 'onProgress'>;
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

export async function locateLayer(model: Model, trainPairs: PrivacyPair[], validationPairs: PrivacyPair[],
  opts: LocateOptions = {}): Promise<LocateResult> {
  const n = model.config.numLayers;
  const [lo, hi] = opts.searchLayers ?? [3, 19];
  const first = Math.max(0, Math.min(lo, n - 1)), last = Math.max(first, Math.min(hi, n - 1));
  const radius = opts.radius ?? 3;
  if (!Number.isInteger(radius) || radius < 0) throw new NgateError('ERR_INPUT', `radius must be a non-negative integer, got ${radius}`, { field: 'radius' });
  const gates = new Map<number, Gate>();
  const rows = new Map<number, LocateRow>();
  const editLayersMax = 2 * radius + 1;
  const totalSteps = (last - first + 1) + editLayersMax;
  let done = 0;
  const tick = () => opts.onProgress?.({ stage: 'locateLayer', done: ++done, total: totalSteps });
  const gateOf = async (layer: number): Promise<Gate> => {
    let g = gates.get(layer);
    if (!g) {
      const masks = await learnMask(model, trainPairs, { ...opts.mask, layers: [layer], signal: opts.signal });
      g = buildGate(masks, { threshold: opts.threshold, onWarning: () => undefined });  // the table shows each layer's strong share
      gates.set(layer, g);
      rows.set(layer, { layer, strongShare: g.counts[0].strongShare, eta: null, rtaSensitive: null, nonRefusalBenign: null });
    }
    return g;
  };
  for (let l = first; l <= last; l++) { await gateOf(l); tick(); }
  let centre = first;
  for (let l = first; l <= last; l++) if (rows.get(l)!.strongShare > rows.get(centre)!.strongShare) centre = l;

  for (let l = Math.max(0, centre - radius); l <= Math.min(n - 1, centre + radius); l++) {
    const gate = await gateOf(l);
    const snapshot = await model.runNative(undefined, (native) => native.snapshotFfn([l]));
    const before = new Set(model.editedTensors);
    try {
      await gatedEdit(model, trainPairs, gate, { ...opts.edit, layers: [l], signal: opts.signal });
      const report = await evaluate(model, validationPairs, { ...opts.evaluate, signal: opts.signal });
      const row = rows.get(l)!;
      row.eta = report.scores.overall.eta;
      row.rtaSensitive = report.scores.overall.rtaSensitive;
      row.nonRefusalBenign = report.scores.overall.nonRefusalBenign;
    } finally {
      // Every trial edit is undone, also when it fails or is aborted.
      await model.runNative(undefined, (native) => native.restoreFfn(snapshot, true));
      for (const t of [...model.editedTensors]) if (!before.has(t)) model.editedTensors.delete(t);
    }
    tick();
  }
  const table = [...rows.values()].sort((a, b) => a.layer - b.layer);
  let best: LocateRow | null = null;
  for (const r of table) {
    if (r.eta === null) continue;
    if (!best || r.eta > best.eta! || (r.eta === best.eta && Math.abs(r.layer - centre) < Math.abs(best.layer - centre))) best = r;
  }
  return { centre, radius, table, best: { layer: best ? best.layer : centre, eta: best ? best.eta : null } };
}
