// runDemo: the paper's protocol on the embedded demo model, small enough to
// finish in under two minutes on two CPU cores — pairs and r_org;
// single-layer masks over the layers (figures 2c, 2d) and the single layer
// they point to; then the rows of Tables 1 and 2 (the unedited model, DINM as
// EasyEdit implements it and as the paper ran it, single- and multi-layer
// editing with and without the gate), each from the unedited weights and
// evaluated on PrivacyPair-test, the demo's generalisation set (standing in
// for MLLMGuard), its utility facts (standing in for ScienceQA, MME and POPE)
// and the seen and held-out pairs; optionally figure 4's α sweep; then the
// report folder (report.json, summary.md, mask-share.svg, strong-share.svg).
import * as path from 'path';
import type { Gate, GateLayerCounts } from '../../types/results';
import type { ModelDtype } from '../model/config';
import { fillBenignAnswers, PrivacyPair } from '../data/prepare';
import { NgateError, abortError } from '../util/errors';
import { defined } from '../util/defined';
import { DINM_EASYEDIT_DEFAULTS, DinmEasyEditSettings } from '../method/dinm';
import { buildGate, DEFAULT_GATE_THRESHOLD } from '../method/gate';
import type { GatedEditOptions } from '../method/gated-edit';
import { learnMask, LearnMaskOptions } from '../method/learn-mask';
import { loadModel, ProgressCallback } from '../model/model';
import { packageRoot } from '../model/native';
import { buildPrivacyPairs, takeBalanced } from '../data/privacy-pair';
import { defaultMultiWidth, EvalSet, multiLayerRange, ROW_IDS, RowId, runCompare } from '../eval/compare';
import { DemoReport, REPORT_FORMAT, REPORT_VERSION, ReportLayer, ReportSet } from '../report/format';
import { protocolTable, protocolText } from '../report/tables';
import { writeReport } from '../report/folder';
import { generalizationItems, utilityChoiceItems, utilityYesNoItems } from './demo-sets';

export interface DemoOptions {
  /** Checkpoint folder; default the embedded models/demo. */
  modelDir?: string;
  /** Report folder (made if missing; report files in it are replaced). */
  outDir: string;
  /** Seed of the pair builder. */
  seed?: number;
  device?: string;
  dtype?: ModelDtype;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
  /** One line per stage, for a person watching. */
  log?: (line: string) => void;
  /** Training pairs (every edit's), PrivacyPair-test pairs and held-out pairs, taken evenly across categories. */
  trainPairs?: number;
  testPairs?: number;
  heldOutPairs?: number;
  /** Pairs to use instead of building them. */
  pairs?: { train: PrivacyPair[]; test: PrivacyPair[]; heldOut?: PrivacyPair[] };
  /** The rows to run (default all: the baseline, DINM both ways, the four of Table 2). */
  rows?: RowId[];
  /** The single-layer rows' layer; default the scanned layer with the most strongly active neurons. */
  singleLayer?: number;
  /** The multi-layer rows' layers; default the `multiWidth` layers around the single layer. */
  multiLayers?: number[];
  multiWidth?: number;
  /**
   * Layers given single-layer masks for figure 2(d) and the choice of the single layer;
   * default every layer of a model of ≤ 16 layers, else the paper's 3–19. false: none.
   */
  scan?: number[] | false;
  /** Include the demo's generalisation and utility sets (default true). */
  standIns?: boolean;
  /** Figure 4: also run the gated rows with masks and edit at each α, scored on PrivacyPair-test. */
  alphas?: number[];
  threshold?: number;
  mask?: Partial<Omit<LearnMaskOptions, 'layers' | 'signal' | 'onProgress'>>;
  edit?: Partial<Omit<GatedEditOptions, 'layers' | 'gated' | 'signal' | 'onProgress'>>;
  /** EasyEdit's DINM hyper-parameters (DINM_EASYEDIT_DEFAULTS). */
  dinm?: Partial<DinmEasyEditSettings>;
  maxNewTokens?: number;
}

export interface DemoResult {
  report: DemoReport;
  files: { json: string; summary: string; maskShare: string; strongShare: string };
  /** Tables 1 and 2 as printed by `ngate demo`. */
  table: string;
}

/**
 * Defaults sized for the embedded model (2.3M parameters, 8 layers) and for
 * two minutes on two CPU cores; measured, not from the paper.
 * - 24 training, 24 test and 24 held-out pairs: four per category.
 * - Masks: 15 Adam steps at lr 0.1. Starting from m = 1, Adam moves an entry
 *   by at most about lr per step, so m < 0 (what eq. 6 counts) needs
 *   lr × steps ≥ 1; the library's 0.05 × 20 = 1 only just reaches it. The
 *   per-layer scan of figure 2 is the demo's largest cost, hence 15 steps.
 * - Edit (Neural Gate rows and DINM's paper variant): a model trained from
 *   scratch at this size has weights far larger relative to a 1e-5 step than a
 *   7B model does; the paper's lr leaves it unchanged in 10 epochs. With 4
 *   pairs per step, 5e-3 moved about two thirds of the sensitive test answers
 *   to refusals; 3e-3 moved about half, and 1e-2 made the single-layer gated
 *   edit refuse three benign questions in four.
 * - DINM (EasyEdit): EasyEdit's own hyper-parameters, unchanged.
 * - 24 new tokens per answer: refusals and answers show in the first words.
 */
export const DEMO_DEFAULTS = {
  seed: 0,
  trainPairs: 24,
  testPairs: 24,
  heldOutPairs: 24,
  maxNewTokens: 24,
  mask: { steps: 15, lr: 0.1, batchSize: 32 },
  edit: { epochs: 10, lr: 5e-3, batchSize: 4 },
};

/** The embedded demo model's folder. */
export function demoModelDir(): string {
  return path.join(packageRoot(), 'models', 'demo');
}

/**
 * The layers a default scan covers: all of a small model; for a larger one the
 * paper's 3–19, clamped, since deep layers were not where privacy features sat.
 */
function defaultScan(numLayers: number): number[] {
  const [lo, hi] = numLayers <= 16 ? [0, numLayers - 1] : [3, Math.min(19, numLayers - 1)];
  return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
}

/**
 * Where the edit layer may be picked: the paper edits early-to-middle layers
 * (3–19 of 32), so the same fraction of depth, and never the last layer, which
 * mostly shapes the output distribution of every answer.
 */
function editRange(numLayers: number): [number, number] {
  const lo = Math.round((3 / 32) * numLayers);
  const hi = Math.max(lo, Math.min(numLayers - 2, Math.round((19 / 32) * numLayers)));
  return [Math.min(lo, numLayers - 1), Math.min(hi, numLayers - 1)];
}

function meanOf(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

function countsOf(g: Gate | undefined): GateLayerCounts[] | undefined {
  return g ? g.counts.map((c) => ({ ...c })) : undefined;
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const log = opts.log ?? (() => undefined);
  const signal = opts.signal;
  const check = () => { if (signal?.aborted) throw abortError(); };
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const s = Date.now();
    try { return await f(); } finally { timings[name] = Math.round((Date.now() - s) / 10) / 100; }
  };
  const progress = (stage: string): ProgressCallback | undefined =>
    (opts.onProgress ? (p) => opts.onProgress!({ stage, done: p.done, total: p.total }) : undefined);

  const modelDir = path.resolve(opts.modelDir ?? demoModelDir());
  const seed = opts.seed ?? DEMO_DEFAULTS.seed;
  const threshold = opts.threshold ?? DEFAULT_GATE_THRESHOLD;
  const maxNewTokens = opts.maxNewTokens ?? DEMO_DEFAULTS.maxNewTokens;
  const maskOpts = { ...DEMO_DEFAULTS.mask, ...defined(opts.mask ?? {}) };
  const editOpts = { ...DEMO_DEFAULTS.edit, ...defined(opts.edit ?? {}) };
  const rows = opts.rows ?? ROW_IDS.slice();
  const alphas = opts.alphas ?? [];
  for (const a of alphas) {
    if (typeof a !== 'number' || !Number.isFinite(a) || a < 0) throw new NgateError('ERR_INPUT', `α must be a non-negative number, got ${JSON.stringify(a)}`, { field: 'alphas' });
  }

  // 1. Pairs: few, and spread over the categories.
  let train: PrivacyPair[];
  let test: PrivacyPair[];
  let heldOut: PrivacyPair[];
  let heldOutTemplates: unknown;
  let heldOutAttributes: unknown;
  let available: Record<string, number>;
  const nTrain = opts.trainPairs ?? DEMO_DEFAULTS.trainPairs;
  const nTest = opts.testPairs ?? DEMO_DEFAULTS.testPairs;
  const nHeld = opts.heldOutPairs ?? DEMO_DEFAULTS.heldOutPairs;
  if (opts.pairs) {
    train = takeBalanced(opts.pairs.train, nTrain);
    test = takeBalanced(opts.pairs.test, nTest);
    heldOut = takeBalanced(opts.pairs.heldOut ?? [], nHeld);
    available = { train: opts.pairs.train.length, test: opts.pairs.test.length, heldOut: opts.pairs.heldOut?.length ?? 0 };
  } else {
    const built = buildPrivacyPairs({ seed });
    train = takeBalanced(built.train, nTrain);
    test = takeBalanced(built.test, nTest);
    heldOut = takeBalanced(built.heldOut, nHeld);
    heldOutTemplates = built.heldOutTemplates;
    heldOutAttributes = built.heldOutAttributes;
    available = { train: built.train.length, test: built.test.length, heldOut: built.heldOut.length };
  }
  if (train.length === 0 || test.length === 0) throw new NgateError('ERR_INPUT', 'the demo needs at least one training and one test pair', { field: 'pairs' });
  log(`pairs: ${train.length} for training, ${test.length} PrivacyPair-test, ${heldOut.length} held out`);

  const sets: EvalSet[] = [{ name: 'PrivacyPair-test', kind: 'pairs', pairs: test, column: { group: 'safety', label: 'PrivacyPair-test' } }];
  if (opts.standIns !== false) {
    sets.push(
      { name: 'generalisation', kind: 'mllmguard', items: generalizationItems(), column: { group: 'safety', label: 'Generalisation (for MLLMGuard)' },
        source: { set: 'the demo\'s generalisation set: sensitive questions about five other subjects in four other phrasings (lib/demo/demo-sets.ts)' } },
      { name: 'facts-choice', kind: 'scienceqa', items: utilityChoiceItems(), column: { group: 'utility', label: 'Facts, choices (for ScienceQA)' },
        source: { set: 'the demo\'s utility facts as lettered choices (lib/demo/demo-sets.ts)' } },
      { name: 'facts-yes-no', kind: 'mme', items: utilityYesNoItems(), column: { group: 'utility', label: 'Facts, yes/no (for MME, POPE)' },
        source: { set: 'the demo\'s utility facts as yes/no pairs (lib/demo/demo-sets.ts)' } },
    );
  }
  sets.push({ name: 'seen', kind: 'pairs', pairs: train });
  if (heldOut.length) sets.push({ name: 'held-out', kind: 'pairs', pairs: heldOut });

  // 2. The unedited model: r_org, the scan's masks and gates.
  const model = await timed('load', () => loadModel(modelDir, { device: opts.device, dtype: opts.dtype, signal, onProgress: progress('load') }));
  let report: DemoReport;
  try {
    const { numLayers, hiddenSize } = model.config;
    log(`model ${modelDir}: ${numLayers} layers, hidden size ${hiddenSize}`);
    const checkLayer = (l: unknown, field: string) => {
      if (typeof l !== 'number' || !Number.isInteger(l) || l < 0 || l >= numLayers) throw new NgateError('ERR_INPUT', `layer ${JSON.stringify(l)} is not in [0, ${numLayers})`, { field });
    };
    if (opts.singleLayer !== undefined) checkLayer(opts.singleLayer, 'singleLayer');
    opts.multiLayers?.forEach((l, i) => checkLayer(l, `multiLayers[${i}]`));
    log('generating r_org, the unedited model\'s answers to the benign training queries');
    train = await timed('r_org', () => fillBenignAnswers(model, train, {
      signal, onProgress: opts.onProgress ? (done, total) => opts.onProgress!({ stage: 'r_org', done, total }) : undefined,
    }));

    const scan = opts.scan === false ? [] : (opts.scan ?? defaultScan(numLayers)).filter((l) => l >= 0 && l < numLayers);
    const gates = new Map<number, Gate>();
    const layerRows: ReportLayer[] = [];
    if (scan.length) log(`learning single-layer masks on layer${scan.length > 1 ? 's' : ''} ${scan.join(', ')} (figures 2c, 2d)`);
    await timed('masks (scan)', async () => {
      for (const l of scan) {
        check();
        const masks = await learnMask(model, train, { ...maskOpts, layers: [l], seed, signal, onProgress: progress(`masks layer ${l}`) });
        const g = buildGate(masks, { threshold, onWarning: () => undefined });  // the report lists every layer's counts
        gates.set(l, g);
        layerRows.push({
          ...g.counts[0], pairCount: g.pairCount, threshold, negativeCounts: Array.from(g.negativeCounts!),
          meanLoss: {
            sensitive: meanOf(masks.losses.map((x) => x.sensitive)), benign: meanOf(masks.losses.map((x) => x.benign)), l1: meanOf(masks.losses.map((x) => x.l1)),
          },
        });
      }
    });

    // The single layer: given, or the paper's search centre — the most strongly
    // active neurons — among the early-to-middle layers that were scanned. The
    // multi-layer set: the layers around it (appendix 10.1).
    const [lo, hi] = editRange(numLayers);
    let single: number;
    let layerChoice: string;
    if (opts.singleLayer !== undefined) {
      single = opts.singleLayer;
      layerChoice = 'the single layer was given';
    } else {
      const candidates = layerRows.filter((r) => r.layer >= lo && r.layer <= hi);
      if (candidates.length > 0) {
        single = candidates.reduce((a, b) => (b.strongShare > a.strongShare ? b : a)).layer;
        layerChoice = `the single layer has the most strongly active neurons among layers ${lo}–${hi} (the paper's search centre, section 3.2.3)`;
      } else {
        single = Math.round((lo + hi) / 2);
        layerChoice = `the single layer is the middle of layers ${lo}–${hi}, the paper's early-to-middle range scaled to this model`;
      }
    }
    let multi: number[];
    if (opts.multiLayers) {
      multi = opts.multiLayers.slice();
      layerChoice += '; the multi-layer set was given';
    } else {
      const width = Math.min(opts.multiWidth ?? defaultMultiWidth(numLayers), hi - lo + 1);
      multi = multiLayerRange(single - lo, hi - lo + 1, width).map((l) => l + lo);
      if (!multi.includes(single)) multi = multiLayerRange(single, numLayers, width);
      layerChoice += `; the multi-layer set is the ${multi.length} contiguous layers around it (appendix 10.1)`;
    }
    const parameters = Math.round(model.parameterBytes / (model.dtype === 'float32' ? 4 : 2));
    const modelInfo = {
      dir: modelDir, numLayers, hiddenSize, intermediateSize: model.config.intermediateSize, vocabSize: model.config.vocabSize,
      parameters, device: model.device, dtype: model.dtype,
    };
    check();

    // 3. The rows, each from the unedited weights.
    // Large batches: on a model this small, decoding costs per step, not per row.
    const evaluate = { maxNewTokens, batchSize: 64 };
    const compareStart = Date.now();
    const result = await runCompare(model, {
      rows, train, sets, layers: { single, multi }, threshold, mask: { ...maskOpts, seed }, edit: editOpts, dinm: opts.dinm,
      gates: gates.has(single) ? { single: gates.get(single)! } : {}, evaluate, signal, onProgress: opts.onProgress, log,
    });
    timings['rows (edits and evaluations)'] = Math.round((Date.now() - compareStart) / 10) / 100;
    for (const [k, v] of Object.entries(result.timings)) timings[k] = v;

    // 4. Figure 4: the gated rows at each α (masks and edit), on PrivacyPair-test.
    let alphaSweep: DemoReport['alphaSweep'] = null;
    if (alphas.length) {
      alphaSweep = [];
      await timed('α sweep', async () => {
        for (const alpha of alphas) {
          log(`α = ${alpha}: masks and gated edits, scored on PrivacyPair-test`);
          const r = await runCompare(model, {
            rows: ['single-w', 'multi-w'], train: result.train, sets: [sets[0]], layers: { single, multi }, threshold,
            mask: { ...maskOpts, seed, alpha }, edit: { ...editOpts, alpha }, evaluate, signal, onProgress: opts.onProgress,
          });
          alphaSweep!.push({ alpha, rows: r.rows });
        }
      });
    }

    const reportSets: ReportSet[] = sets.map((s) => ({
      name: s.name, kind: s.kind, column: s.column ?? null, size: s.kind === 'pairs' ? s.pairs.length : s.items.length,
      ...(s.kind !== 'pairs' && s.source ? { source: s.source } : {}),
    }));
    report = {
      format: REPORT_FORMAT, version: REPORT_VERSION, createdAt: new Date().toISOString(),
      model: modelInfo,
      settings: {
        seed, singleLayer: single, multiLayers: multi, dinmLayer: result.dinmLocation?.layer ?? null, scanLayers: scan, layerChoice, threshold, rows,
        mask: { ...maskOpts, alpha: maskOpts.alpha ?? 1.25 },
        edit: { ...editOpts, alpha: editOpts.alpha ?? 1.25, params: editOpts.params ?? ['gate_proj', 'up_proj', 'down_proj'] },
        dinm: { ...DINM_EASYEDIT_DEFAULTS, ...(opts.dinm ?? {}) },
        evaluate: { maxNewTokens },
        pairs: { source: opts.pairs ? 'given' : 'buildPrivacyPairs', train: train.length, test: test.length, heldOut: heldOut.length, available },
        sets: reportSets,
        alphas: alphas.length ? alphas : null,
      },
      data: { train: result.train, test, heldOut, ...(heldOutTemplates !== undefined ? { heldOutTemplates } : {}), ...(heldOutAttributes !== undefined ? { heldOutAttributes } : {}) },
      layers: layerRows,
      gates: defined({ single: countsOf(result.gates.single), multi: countsOf(result.gates.multi) }),
      dinmLocation: result.dinmLocation ?? null,
      rows: result.rows,
      alphaSweep,
      timings,
    };
  } finally {
    model.dispose();
  }

  check();
  timings.total = Math.round((Date.now() - t0) / 10) / 100;
  const files = await writeReport(path.resolve(opts.outDir), report);
  log(`wrote ${files.summary}`);
  return { report, files, table: demoTables(report) };
}

/** Tables 1 and 2 as text, for the terminal. */
export function demoTables(report: Pick<DemoReport, 'rows' | 'settings'>): string {
  const out: string[] = [];
  const t1 = protocolTable(report.rows, report.settings.sets, 1), t2 = protocolTable(report.rows, report.settings.sets, 2);
  if (t1.values.length) out.push('Table 1 (methods)', protocolText(t1));
  if (t2.values.length) out.push(...(out.length ? [''] : []), 'Table 2 (the gate)', protocolText(t2));
  return out.join('\n');
}
