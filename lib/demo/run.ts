// runDemo: the whole method on the embedded demo model, small enough to finish
// in about a minute on two CPU cores — pairs, r_org, the unedited scores,
// single-layer masks over the layers (figure 2d) and the gate of the edited
// layer, the gated edit and the same edit without the gate, each on a fresh
// copy of the model and scored on the seen and the held-out split; then the
// report folder (report.json, summary.md, mask-share.svg, strong-share.svg).
import * as path from 'path';
import type { Gate } from '../../types/results';
import type { ModelDtype } from '../model/config';
import { fillBenignAnswers, PrivacyPair } from '../data/prepare';
import { NgateError, abortError } from '../util/errors';
import { defined } from '../util/defined';
import { evaluate, EvaluationReport } from '../method/evaluate';
import { buildGate, DEFAULT_GATE_THRESHOLD } from '../method/gate';
import { gatedEdit, GatedEditOptions } from '../method/gated-edit';
import { learnMask, LearnMaskOptions } from '../method/learn-mask';
import { loadModel, Model, ProgressCallback } from '../model/model';
import { packageRoot } from '../model/native';
import { buildPrivacyPairs, takeBalanced } from '../data/privacy-pair';
import { DemoReport, REPORT_FORMAT, REPORT_VERSION, ReportLayer, ReportRun } from '../report/format';
import { scoresText } from '../report/tables';
import { writeReport } from '../report/folder';

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
  /** Seen pairs (training) and held-out pairs, taken evenly across categories. */
  trainPairs?: number;
  heldOutPairs?: number;
  /** Pairs to use instead of building them (both splits). */
  pairs?: { train: PrivacyPair[]; heldOut: PrivacyPair[] };
  /** Layers to edit; default the scanned layer with the most strongly active neurons. */
  layers?: number[];
  /**
   * Layers given single-layer masks for figure 2(d) and the choice of the edit
   * layer; default every layer of a model of ≤ 16 layers, else the paper's 3–19.
   * false: masks on the edited layers only.
   */
  scan?: number[] | false;
  threshold?: number;
  mask?: Partial<Omit<LearnMaskOptions, 'layers' | 'signal' | 'onProgress'>>;
  edit?: Partial<Omit<GatedEditOptions, 'layers' | 'gated' | 'signal' | 'onProgress'>>;
  maxNewTokens?: number;
}

export interface DemoResult {
  report: DemoReport;
  files: { json: string; summary: string; maskShare: string; strongShare: string };
  /** The scores table as printed by `ngate demo`. */
  table: string;
}

/**
 * Defaults sized for the embedded model (2.2M parameters, 8 layers) and for
 * two minutes on two CPU cores; measured, not from the paper.
 * - 32 seen and 32 held-out pairs: five or six per category; each evaluation
 *   is 128 short greedy answers, about a second.
 * - Masks: 20 Adam steps (the library default) at lr 0.1. Starting from m = 1,
 *   Adam moves an entry by at most about lr per step, so m < 0 (what eq. 6
 *   counts) needs lr × steps ≥ 1; the library's 0.05 × 20 = 1 only just reaches it.
 * - Edit: a model trained from scratch at this size has weights far larger
 *   relative to a 1e-5 step than a 7B model does; the paper's lr leaves it
 *   unchanged in 10 epochs. 3e-3 with 4 pairs per step (80 Adam steps in the
 *   10 epochs) moved most sensitive answers to refusals in our runs while
 *   keeping most benign ones; 1e-2 refused nearly everything.
 * - 24 new tokens per answer: refusals and answers show in the first words.
 */
export const DEMO_DEFAULTS = {
  seed: 0,
  trainPairs: 32,
  heldOutPairs: 32,
  maxNewTokens: 24,
  mask: { steps: 20, lr: 0.1, batchSize: 32 },
  edit: { epochs: 10, lr: 3e-3, batchSize: 4 },
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
  const load = (stage: string) => loadModel(modelDir, { device: opts.device, dtype: opts.dtype, signal, onProgress: progress(stage) });

  // 1. Pairs: few, and spread over the categories.
  let train: PrivacyPair[];
  let heldOut: PrivacyPair[];
  let heldOutTemplates: unknown;
  let heldOutAttributes: unknown;
  const nTrain = opts.trainPairs ?? DEMO_DEFAULTS.trainPairs;
  const nHeld = opts.heldOutPairs ?? DEMO_DEFAULTS.heldOutPairs;
  let available: Record<string, number>;
  if (opts.pairs) {
    train = takeBalanced(opts.pairs.train, nTrain);
    heldOut = takeBalanced(opts.pairs.heldOut, nHeld);
    available = { train: opts.pairs.train.length, heldOut: opts.pairs.heldOut.length };
  } else {
    const built = buildPrivacyPairs({ seed });
    train = takeBalanced(built.train, nTrain);
    heldOut = takeBalanced(built.heldOut, nHeld);
    heldOutTemplates = built.heldOutTemplates;
    heldOutAttributes = built.heldOutAttributes;
    available = { train: built.train.length, test: built.test.length, heldOut: built.heldOut.length };
  }
  if (train.length === 0 || heldOut.length === 0) throw new NgateError('ERR_INPUT', 'the demo needs at least one training and one held-out pair', { field: 'pairs' });
  log(`pairs: ${train.length} seen (training), ${heldOut.length} held out`);

  const evalBoth = async (model: Model, label: string): Promise<{ seen: EvaluationReport; heldOut: EvaluationReport }> => ({
    seen: await evaluate(model, train, { maxNewTokens, signal, onProgress: progress(`eval ${label} seen`) }),
    heldOut: await evaluate(model, heldOut, { maxNewTokens, signal, onProgress: progress(`eval ${label} held-out`) }),
  });

  // 2. The unedited model: r_org, scores, masks and the gate.
  const base = await timed('load', () => load('load'));
  let report: DemoReport;
  try {
    const { numLayers, hiddenSize } = base.config;
    log(`model ${modelDir}: ${numLayers} layers, hidden size ${hiddenSize}`);
    if (opts.layers) {
      for (const l of opts.layers) {
        if (!Number.isInteger(l) || l < 0 || l >= numLayers) throw new NgateError('ERR_INPUT', `layer ${l} is not in [0, ${numLayers})`, { field: 'layers' });
      }
    }
    log('generating r_org, the unedited model\'s answers to the benign training queries');
    train = await timed('r_org', () => fillBenignAnswers(base, train, {
      signal, onProgress: opts.onProgress ? (done, total) => opts.onProgress!({ stage: 'r_org', done, total }) : undefined,
    }));
    log('scoring the unedited model');
    const unedited = await timed('eval unedited', () => evalBoth(base, 'unedited'));

    const scan = opts.scan === false ? [] : (opts.scan ?? defaultScan(numLayers)).filter((l) => l >= 0 && l < numLayers);
    const gates = new Map<number, Gate>();
    const layerRows: ReportLayer[] = [];
    if (scan.length) log(`learning single-layer masks on layer${scan.length > 1 ? 's' : ''} ${scan.join(', ')}`);
    await timed('masks', async () => {
      for (const l of scan) {
        check();
        const masks = await learnMask(base, train, { ...maskOpts, layers: [l], seed, signal, onProgress: progress(`masks layer ${l}`) });
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

    // The edit layer: given, or the paper's search centre — the most strongly
    // active neurons — among the early-to-middle layers that were scanned.
    let editLayers: number[];
    let layerChoice: string;
    if (opts.layers) {
      editLayers = opts.layers.slice();
      layerChoice = 'given';
    } else {
      const [lo, hi] = editRange(numLayers);
      const candidates = layerRows.filter((r) => r.layer >= lo && r.layer <= hi);
      if (candidates.length > 0) {
        const best = candidates.reduce((a, b) => (b.strongShare > a.strongShare ? b : a));
        editLayers = [best.layer];
        layerChoice = `the most strongly active neurons among layers ${lo}–${hi}`;
      } else {
        editLayers = [Math.round((lo + hi) / 2)];
        layerChoice = `the middle of layers ${lo}–${hi}, the paper's early-to-middle range scaled to this model`;
      }
    }

    // One layer: the scan's gate. Several: masks learned jointly (eq. 8).
    let gate: Gate;
    if (editLayers.length === 1 && gates.has(editLayers[0])) {
      gate = gates.get(editLayers[0])!;
    } else {
      log(`learning masks on layer${editLayers.length > 1 ? 's' : ''} ${editLayers.join(', ')}${editLayers.length > 1 ? ' jointly' : ''}`);
      const masks = await timed('masks edit layers', () => learnMask(base, train, { ...maskOpts, layers: editLayers, seed, signal, onProgress: progress('masks') }));
      gate = buildGate(masks, { threshold, onWarning: (w) => log(`warning: ${w.message}`) });
      if (scan.length === 0) {
        const d = hiddenSize;
        gate.counts.forEach((c, i) => layerRows.push({
          ...c, pairCount: gate.pairCount, threshold, negativeCounts: Array.from(gate.negativeCounts!.subarray(i * d, (i + 1) * d)),
          meanLoss: {
            sensitive: meanOf(masks.losses.map((x) => x.sensitive)), benign: meanOf(masks.losses.map((x) => x.benign)), l1: meanOf(masks.losses.map((x) => x.l1)),
          },
        }));
      }
    }
    log(`gate on layer${editLayers.length > 1 ? 's' : ''} ${editLayers.join(', ')}: ${gate.counts.map((c) => `${c.strong} of ${hiddenSize} dimensions strongly active`).join('; ')}`);
    const parameters = Math.round(base.parameterBytes / (base.dtype === 'float32' ? 4 : 2));
    const modelInfo = {
      dir: modelDir, numLayers, hiddenSize, intermediateSize: base.config.intermediateSize, vocabSize: base.config.vocabSize,
      parameters, device: base.device, dtype: base.dtype,
    };
    base.dispose();

    // 3. The same edit with the gate on and off, each on a fresh copy.
    const edited = async (gated: boolean): Promise<ReportRun> => {
      const name = gated ? 'neural-gate' : 'without-gate';
      check();
      const model = await load('load');
      try {
        log(`editing layer${editLayers.length > 1 ? 's' : ''} ${editLayers.join(', ')} ${gated ? 'with' : 'without'} the gate`);
        const edit = await timed(`edit ${name}`, () => gatedEdit(model, train, gated ? gate : null, {
          ...editOpts, layers: editLayers, gated, signal, onProgress: progress(`edit ${gated ? 'gated' : 'w/o gate'}`),
        }));
        log(`scoring the edit ${gated ? 'with' : 'without'} the gate`);
        const scores = await timed(`eval ${name}`, () => evalBoth(model, gated ? 'gated' : 'w/o gate'));
        return { name, label: gated ? 'Neural Gate' : 'w/o gate', gated, edit, ...scores };
      } finally {
        model.dispose();
      }
    };
    const gatedRun = await edited(true);
    const plainRun = await edited(false);

    report = {
      format: REPORT_FORMAT, version: REPORT_VERSION, createdAt: new Date().toISOString(),
      model: modelInfo,
      settings: {
        seed, editLayers, scanLayers: scan, layerChoice, threshold,
        mask: { ...maskOpts, alpha: maskOpts.alpha ?? 1.25 },
        edit: { ...editOpts, alpha: editOpts.alpha ?? 1.25, params: editOpts.params ?? ['gate_proj', 'up_proj', 'down_proj'] },
        evaluate: { maxNewTokens, matcher: unedited.seen.matcher.name },
        pairs: { source: opts.pairs ? 'given' : 'buildPrivacyPairs', train: train.length, heldOut: heldOut.length, available },
      },
      data: { train, heldOut, ...(heldOutTemplates !== undefined ? { heldOutTemplates } : {}), ...(heldOutAttributes !== undefined ? { heldOutAttributes } : {}) },
      layers: layerRows,
      runs: [{ name: 'unedited', label: 'unedited', gated: null, ...unedited }, gatedRun, plainRun],
      timings,
    };
  } finally {
    if (!base.disposed) base.dispose();
  }

  check();
  timings.total = Math.round((Date.now() - t0) / 10) / 100;
  const files = await writeReport(path.resolve(opts.outDir), report);
  log(`wrote ${files.summary}`);
  return { report, files, table: scoresText(report) };
}
