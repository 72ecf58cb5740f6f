// runCompare: the rows of the paper's Tables 1 and 2 on one model and one set
// of PrivacyPairs. Every row starts from the unedited weights (a snapshot of
// the FFN weights any row edits, written back before each row: no reload
// from disk), is edited, and is evaluated on the same sets: PrivacyPair-test
// (EtA) and the benchmarks given (MLLMGuard's RtA, ScienceQA, MME and POPE
// accuracy), every raw answer kept.
import type { Gate, MaskSet } from '../../types/results';
import { fillBenignAnswers, PrivacyPair, validatePairs } from '../data/prepare';
import { dinmEdit, DinmEasyEditSettings, DinmReport, DINM_EASYEDIT_DEFAULTS, locateToxicLayer, ToxicLayerLocation } from '../method/dinm';
import { evaluate, EvaluationReport } from '../method/evaluate';
import { buildGate, DEFAULT_GATE_THRESHOLD } from '../method/gate';
import { EditReport, gatedEdit, GatedEditOptions } from '../method/gated-edit';
import { learnMask, LearnMaskOptions } from '../method/learn-mask';
import { locateLayer, LocateResult } from '../method/locate';
import type { RefusalMatcher } from '../method/refusal';
import type { Model, ProgressCallback } from '../model/model';
import { abortError, NgateError } from '../util/errors';
import { askQuestions, scoreBenchmark } from './benchmark';
import type { BenchmarkItem, BenchmarkKind, BenchmarkScore } from './types';

/** The rows: Table 1's baseline and DINM (two ways), Table 2's four (Neural Gate is its single-layer row with the gate). */
export type RowId = 'baseline' | 'dinm-easyedit' | 'dinm-paper' | 'single-w' | 'single-wo' | 'multi-w' | 'multi-wo';

export const ROWS: Readonly<Record<RowId, { label: string; layer: 'single' | 'multi' | 'dinm' | null; gated: boolean | null }>> = Object.freeze({
  baseline: { label: 'Baseline', layer: null, gated: null },
  'dinm-easyedit': { label: 'DINM (EasyEdit)', layer: 'dinm', gated: false },
  'dinm-paper': { label: "DINM (paper's variant)", layer: 'dinm', gated: false },
  'single-w': { label: 'single-layer, w/ gate', layer: 'single', gated: true },
  'single-wo': { label: 'single-layer, w/o gate', layer: 'single', gated: false },
  'multi-w': { label: 'multi-layer, w/ gate', layer: 'multi', gated: true },
  'multi-wo': { label: 'multi-layer, w/o gate', layer: 'multi', gated: false },
});

export const ROW_IDS = Object.keys(ROWS) as RowId[];

/**
 * One thing every row is evaluated on: PrivacyPairs (EtA), or benchmark
 * questions read once (accuracy, or RtA for 'mllmguard'). `column` puts its
 * score in the tables under Safety or Utility; without it the set is reported
 * but not tabled.
 */
export type EvalSet = {
  name: string;
  column?: { group: 'safety' | 'utility'; label: string };
} & ({ kind: 'pairs'; pairs: PrivacyPair[] } | { kind: BenchmarkKind; items: BenchmarkItem[]; refusal?: Partial<RefusalMatcher>; source?: Record<string, unknown> });

export type SetResult = { kind: 'pairs'; report: EvaluationReport } | { kind: BenchmarkKind; report: BenchmarkScore };

export interface LayerChoice {
  /** The single-layer rows' layer. */
  single: number;
  /** The multi-layer rows' layers (eq. 8). */
  multi: number[];
  /** How they were chosen, in words. */
  how: string;
  /** The appendix 10.1 search, when it ran. */
  locate?: LocateResult;
}

export interface CompareOptions {
  rows?: RowId[];
  /** The pairs every edit is trained on (r_org is generated for those without it, from the unedited model). */
  train: PrivacyPair[];
  sets: EvalSet[];
  /**
   * The layers: given, or found by appendix 10.1's search on `validation`
   * pairs (the single layer: the best of the search; the multi-layer set: a
   * contiguous range of `multiWidth` layers around it).
   */
  layers: { single: number; multi: number[] } | { locate: { validation: PrivacyPair[]; radius?: number; searchLayers?: [number, number] }; multiWidth?: number };
  /** τ (default 0.3). */
  threshold?: number;
  mask?: Omit<LearnMaskOptions, 'layers' | 'signal' | 'onProgress'>;
  /** The edit of the Neural Gate rows and of DINM's paper variant (the same loss, epochs, lr and parameters). */
  edit?: Omit<GatedEditOptions, 'layers' | 'gated' | 'signal' | 'onProgress'>;
  /** EasyEdit's DINM hyper-parameters (DINM_EASYEDIT_DEFAULTS). */
  dinm?: Partial<DinmEasyEditSettings>;
  /** Gates made before (the demo's scan); otherwise masks are learned here. */
  gates?: { single?: Gate; multi?: Gate };
  evaluate?: { maxNewTokens?: number; batchSize?: number; refusal?: Partial<RefusalMatcher> };
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
  log?: (line: string) => void;
}

export interface RowResult {
  id: RowId;
  label: string;
  /** The edit's report; absent for the baseline. */
  edit?: EditReport | DinmReport;
  results: Record<string, SetResult>;
  /** Seconds of the edit and of the evaluations. */
  seconds: { edit: number; evaluate: number };
}

export interface CompareResult {
  rows: RowResult[];
  layers: LayerChoice;
  gates: { single?: Gate; multi?: Gate };
  /** Mean final per-pair losses of the masks behind the gates learned here. */
  maskLosses?: Record<string, { sensitive: number; benign: number; l1: number }>;
  dinmLocation?: ToxicLayerLocation;
  /** The training pairs, with r_org. */
  train: PrivacyPair[];
  settings: Record<string, unknown>;
  /** Seconds per stage. */
  timings: Record<string, number>;
}

/**
 * The multi-layer set of appendix 10.1: a contiguous range of `width` layers
 * around the best single layer (the paper: layers 9–14 around 11 for
 * LLaVA-1.5, 5–9 around 6 for MiniGPT-4), kept inside the model.
 */
export function multiLayerRange(best: number, numLayers: number, width: number): number[] {
  const w = Math.max(1, Math.min(width, numLayers));
  const start = Math.max(0, Math.min(best - Math.floor((w - 1) / 2), numLayers - w));
  return Array.from({ length: w }, (_, i) => start + i);
}

/** The default width of the multi-layer set: about 3/16 of the depth (6 of 32, as LLaVA-1.5's 9–14), at least 3. */
export function defaultMultiWidth(numLayers: number): number {
  return Math.min(numLayers, Math.max(3, Math.round((numLayers * 3) / 16)));
}

function meanLoss(m: MaskSet): { sensitive: number; benign: number; l1: number } {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  return { sensitive: mean(m.losses.map((x) => x.sensitive)), benign: mean(m.losses.map((x) => x.benign)), l1: mean(m.losses.map((x) => x.l1)) };
}

function checkRows(rows: unknown): RowId[] {
  if (!Array.isArray(rows) || rows.length === 0) throw new NgateError('ERR_INPUT', 'must be a non-empty list of rows', { field: 'rows' });
  for (const r of rows) {
    if (!ROW_IDS.includes(r as RowId)) throw new NgateError('ERR_INPUT', `unknown row ${JSON.stringify(r)} (rows: ${ROW_IDS.join(', ')})`, { field: 'rows' });
  }
  if (new Set(rows).size !== rows.length) throw new NgateError('ERR_INPUT', 'names a row twice', { field: 'rows' });
  return rows as RowId[];
}

function checkSets(sets: EvalSet[]): void {
  if (!Array.isArray(sets)) throw new NgateError('ERR_INPUT', 'must be a list of evaluation sets', { field: 'sets' });
  const names = new Set<string>();
  sets.forEach((s, i) => {
    if (typeof s?.name !== 'string' || s.name === '') throw new NgateError('ERR_INPUT', 'must be a non-empty string', { field: `sets[${i}].name` });
    if (names.has(s.name)) throw new NgateError('ERR_INPUT', `the set name ${JSON.stringify(s.name)} is used twice`, { field: `sets[${i}].name` });
    names.add(s.name);
    if (s.kind === 'pairs') validatePairs(s.pairs);
    else if (!Array.isArray(s.items) || s.items.length === 0) throw new NgateError('ERR_INPUT', 'must hold at least one question', { field: `sets[${i}].items` });
  });
}

/** Evaluates the model as it is on every set. */
export async function evaluateSets(model: Model, sets: EvalSet[], opts: CompareOptions['evaluate'] & { signal?: AbortSignal; onProgress?: ProgressCallback; label?: string } = {}): Promise<Record<string, SetResult>> {
  const out: Record<string, SetResult> = {};
  for (const s of sets) {
    const stage = `${opts.label ? `${opts.label}: ` : ''}${s.name}`;
    if (s.kind === 'pairs') {
      out[s.name] = {
        kind: 'pairs',
        report: await evaluate(model, s.pairs, {
          maxNewTokens: opts.maxNewTokens, batchSize: opts.batchSize, refusal: opts.refusal, signal: opts.signal,
          onProgress: opts.onProgress ? (p) => opts.onProgress!({ ...p, stage }) : undefined,
        }),
      };
    } else {
      const { responses, generatedTokens } = await askQuestions(model, s.items, {
        maxNewTokens: opts.maxNewTokens, batchSize: opts.batchSize, signal: opts.signal, onProgress: opts.onProgress, stage, what: s.name,
      });
      const report = scoreBenchmark(s.kind, s.items, responses, { refusal: s.refusal ?? opts.refusal });
      report.outcomes.forEach((o, i) => { o.generatedTokens = generatedTokens[i]; });
      out[s.name] = { kind: s.kind, report };
    }
  }
  return out;
}

export async function runCompare(model: Model, opts: CompareOptions): Promise<CompareResult> {
  const rows = checkRows(opts.rows ?? ROW_IDS);
  validatePairs(opts.train);
  checkSets(opts.sets);
  if (model.editedTensors.size > 0) {
    throw new NgateError('ERR_INPUT', 'runCompare starts every row from the weights it is given, and this model has been edited: load the unedited model', { field: 'model' });
  }
  const log = opts.log ?? (() => undefined);
  const signal = opts.signal;
  const check = () => { if (signal?.aborted) throw abortError(); };
  const timings: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    try { return await f(); } finally { timings[name] = Math.round((Date.now() - t) / 10) / 100 + (timings[name] ?? 0); }
  };
  const progress = (stage: string): ProgressCallback | undefined => (opts.onProgress ? (p) => opts.onProgress!({ ...p, stage }) : undefined);
  const threshold = opts.threshold ?? DEFAULT_GATE_THRESHOLD;
  const L = model.config.numLayers;
  const edit = opts.edit ?? {};

  // r_org, from the unedited model.
  let train = opts.train;
  if (train.some((p) => p.benignAnswer === undefined)) {
    log('generating r_org, the unedited model\'s answers to the benign training queries');
    train = await timed('r_org', () => fillBenignAnswers(model, train, { signal, onProgress: opts.onProgress ? (done, total) => opts.onProgress!({ stage: 'r_org', done, total }) : undefined }));
  }

  const needs = (what: 'single' | 'multi' | 'dinm') => rows.some((r) => ROWS[r].layer === what);
  const checkLayer = (l: unknown, field: string) => {
    if (typeof l !== 'number' || !Number.isInteger(l) || l < 0 || l >= L) throw new NgateError('ERR_INPUT', `layer ${JSON.stringify(l)} is not in [0, ${L})`, { field });
  };

  // The layers: given, or appendix 10.1's search.
  let layers: LayerChoice;
  if ('locate' in opts.layers) {
    const loc = opts.layers.locate;
    validatePairs(loc.validation);
    log('locating the edit layer (appendix 10.1): masks on the search layers, then single-layer edits around the centre');
    const res = await timed('locate', () => locateLayer(model, train, loc.validation, {
      radius: loc.radius, searchLayers: loc.searchLayers, threshold, mask: opts.mask, edit: { ...edit }, evaluate: opts.evaluate, signal, onProgress: progress('locate'),
    }));
    const width = opts.layers.multiWidth ?? defaultMultiWidth(L);
    layers = {
      single: res.best.layer, multi: multiLayerRange(res.best.layer, L, width), locate: res,
      how: `appendix 10.1: centre ${res.centre} (most strongly active neurons), best validation EtA within radius ${res.radius} at layer ${res.best.layer}; the multi-layer set is the ${width} layers around it`,
    };
  } else {
    checkLayer(opts.layers.single, 'layers.single');
    if (!Array.isArray(opts.layers.multi) || opts.layers.multi.length === 0) throw new NgateError('ERR_INPUT', 'must be a non-empty list of layers', { field: 'layers.multi' });
    opts.layers.multi.forEach((l, i) => checkLayer(l, `layers.multi[${i}]`));
    layers = { single: opts.layers.single, multi: opts.layers.multi.slice(), how: 'given' };
  }
  log(`layers: single ${layers.single}, multi ${layers.multi.join(', ')} (${layers.how})`);
  check();

  // The gates of the gated rows: single-layer masks, and masks learned jointly on the multi-layer set (eq. 8).
  const gates: { single?: Gate; multi?: Gate } = { ...(opts.gates ?? {}) };
  const maskLosses: Record<string, { sensitive: number; benign: number; l1: number }> = {};
  const gateFor = async (which: 'single' | 'multi') => {
    const ls = which === 'single' ? [layers.single] : layers.multi;
    const given = gates[which];
    if (given && given.layers.length === ls.length && given.layers.every((l, i) => l === ls[i])) return;
    log(`learning masks on layer${ls.length > 1 ? 's' : ''} ${ls.join(', ')}${ls.length > 1 ? ' jointly (eq. 8)' : ''}`);
    const masks = await timed(`masks ${which}`, () => learnMask(model, train, { ...opts.mask, layers: ls, signal, onProgress: progress(`masks ${which}`) }));
    gates[which] = buildGate(masks, { threshold, onWarning: (w) => log(`warning: ${w.message}`) });
    maskLosses[which] = meanLoss(masks);
  };
  if (rows.includes('single-w')) await gateFor('single');
  if (rows.includes('multi-w')) await gateFor('multi');

  // DINM's layer, once for both variants, from the unedited model.
  let dinmLocation: ToxicLayerLocation | undefined;
  if (needs('dinm')) {
    log('locating DINM\'s toxic layer (the hidden states of the safe and the unsafe answers)');
    dinmLocation = await timed('dinm locate', () => locateToxicLayer(model, train, { refusal: edit.refusal, signal, onProgress: progress('DINM locate') }));
    log(`DINM's layer: ${dinmLocation.layer} (votes ${JSON.stringify(dinmLocation.votes)})`);
  }
  check();

  // One snapshot of every FFN any row edits, written back before each row.
  const touched = [...new Set([
    ...(needs('single') ? [layers.single] : []), ...(needs('multi') ? layers.multi : []), ...(dinmLocation ? [dinmLocation.layer] : []),
  ])].sort((a, b) => a - b);
  const snapshot = touched.length ? await model.runNative(undefined, (n) => n.snapshotFfn(touched)) : null;
  const results: RowResult[] = [];
  try {
    for (const id of rows) {
      check();
      if (snapshot !== null) await model.runNative(undefined, (n) => n.restoreFfn(snapshot, false));
      model.editedTensors.clear();
      const row = ROWS[id];
      const t0 = Date.now();
      let report: EditReport | DinmReport | undefined;
      if (id !== 'baseline') log(`row ${row.label}: editing`);
      const layersOf = row.layer === 'single' ? [layers.single] : layers.multi;
      const stage = `edit ${row.label}`;
      if (row.layer === 'single' || row.layer === 'multi') {
        report = await gatedEdit(model, train, row.gated ? gates[row.layer]! : null, {
          ...edit, layers: layersOf, gated: row.gated!, signal, onProgress: progress(stage),
        });
      } else if (id === 'dinm-easyedit') {
        report = await dinmEdit(model, train, { variant: 'easyedit', location: dinmLocation, easyedit: opts.dinm, refusal: edit.refusal, signal, onProgress: progress(stage) });
      } else if (id === 'dinm-paper') {
        report = await dinmEdit(model, train, { variant: 'paper', location: dinmLocation, edit, refusal: edit.refusal, signal, onProgress: progress(stage) });
      }
      const t1 = Date.now();
      log(`row ${row.label}: evaluating`);
      const res = await evaluateSets(model, opts.sets, { ...opts.evaluate, signal, onProgress: opts.onProgress, label: row.label });
      const t2 = Date.now();
      timings[`row ${id}`] = Math.round((t2 - t0) / 10) / 100;
      results.push({ id, label: row.label, ...(report ? { edit: report } : {}), results: res, seconds: { edit: (t1 - t0) / 1000, evaluate: (t2 - t1) / 1000 } });
    }
  } finally {
    // The model leaves as it came: unedited.
    if (snapshot !== null) await model.runNative(undefined, (n) => n.restoreFfn(snapshot, true));
    model.editedTensors.clear();
  }
  return {
    rows: results, layers, gates, ...(Object.keys(maskLosses).length ? { maskLosses } : {}), ...(dinmLocation ? { dinmLocation } : {}), train,
    settings: {
      rows, threshold, mask: opts.mask ?? {}, edit, dinm: { ...DINM_EASYEDIT_DEFAULTS, ...(opts.dinm ?? {}) }, evaluate: opts.evaluate ?? {},
      sets: opts.sets.map((s) => ({ name: s.name, kind: s.kind, column: s.column ?? null, size: s.kind === 'pairs' ? s.pairs.length : s.items.length,
        ...(s.kind !== 'pairs' && s.source ? { source: s.source } : {}) })),
    },
    timings,
  };
}
