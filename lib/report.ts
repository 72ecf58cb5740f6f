// The demo's report: its JSON shape, the markdown summary in the spirit of
// table 2, plain-text tables for the command line, and the two pictures of
// figure 2 — (c) how M_l is distributed over the dimensions of each layer and
// (d) the share of strongly active neurons per layer — drawn with vega-lite.
// Everything here is a pure function of its input, except the two file helpers
// at the end, so it can be checked without a model.
import * as fs from 'fs';
import * as path from 'path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { Gate, GateLayerCounts, MaskSet } from '../types/results';
import type { PrivacyPair } from './data';
import { NgateError } from './errors';
import { writeFileAtomic } from './atomic-write';
export { writeFileAtomic };
import type { EvaluationReport } from './evaluate';
import { buildGate, DEFAULT_GATE_THRESHOLD } from './gate';
import type { EditReport } from './gated-edit';
import type { Scores } from './metrics';

// ---------------------------------------------------------------------------
// The report's shape. Plain JSON (no typed arrays), so report.json reads back
// into exactly the object that was written.

export const REPORT_FORMAT = 'ngate.demo-report';
export const REPORT_VERSION = 1;

/** Gate statistics of one layer, from masks learned for that layer alone (section 3.2.3). */
export interface ReportLayer extends GateLayerCounts {
  /** N of eq. 6. */
  pairCount: number;
  threshold: number;
  /** Per dimension: how many pairs had m_l < 0; M_l = negativeCounts / pairCount. */
  negativeCounts: number[];
  /** Mean per-pair losses at the last mask step. */
  meanLoss: { sensitive: number; benign: number; l1: number };
}

export type RunName = 'unedited' | 'neural-gate' | 'without-gate';

export interface ReportRun {
  name: RunName;
  /** Row label of the tables. */
  label: string;
  /** Whether the edit used the gate; null for the unedited model. */
  gated: boolean | null;
  edit?: EditReport;
  /** Scores and raw responses on the pairs the edit was trained on. */
  seen: EvaluationReport;
  /** Scores and raw responses on pairs with question templates and attributes kept out of training. */
  heldOut: EvaluationReport;
}

export interface DemoReport {
  format: typeof REPORT_FORMAT;
  version: typeof REPORT_VERSION;
  createdAt: string;
  model: {
    dir: string; numLayers: number; hiddenSize: number; intermediateSize: number; vocabSize: number;
    parameters: number; device: string; dtype: string;
  };
  settings: {
    seed: number;
    /** Layers the edit (and its gate) covered. */
    editLayers: number[];
    /** Layers with single-layer masks, for figure 2(c)(d) and the choice of editLayers. */
    scanLayers: number[];
    /** Why editLayers are what they are, in words. */
    layerChoice: string;
    threshold: number;
    mask: Record<string, unknown>;
    edit: Record<string, unknown>;
    evaluate: Record<string, unknown>;
    pairs: Record<string, unknown>;
  };
  data: {
    train: PrivacyPair[];
    heldOut: PrivacyPair[];
    heldOutTemplates?: unknown;
    heldOutAttributes?: unknown;
  };
  /** One entry per scanned layer, in layer order. */
  layers: ReportLayer[];
  runs: ReportRun[];
  /** Seconds per stage, and `total`. */
  timings: Record<string, number>;
}

// ---------------------------------------------------------------------------
// Number formatting shared by the tables.

/** A rate as the tables print it: three decimals, or "–" when there was nothing to count. */
export function fmt(v: number | null | undefined, digits = 3): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits);
}

function pct(v: number): string {
  return `${(100 * v).toFixed(1)}%`;
}

/** A plain-text table with aligned columns (numbers right, text left). */
export function textTable(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  const numeric = header.map((_, c) => rows.length > 0 && rows.every((r) => /^[-+–]?[\d.,%e+–-]*$/.test(r[c] ?? '')));
  const line = (r: string[]) => r.map((cell, c) => (numeric[c] ? (cell ?? '').padStart(widths[c]) : (cell ?? '').padEnd(widths[c]))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function mdTable(header: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const a = align ?? header.map((_, i) => (i === 0 ? 'l' : 'r'));
  return [
    `| ${header.join(' | ')} |`,
    `|${a.map((x) => (x === 'r' ? '---:' : ':---')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

// ---------------------------------------------------------------------------
// Table 2 in small: rows unedited / Neural Gate / w/o gate; for the seen and
// the held-out split, EtA, RtA on sensitive queries and 1 − RtA on benign ones.

const SCORE_HEADER = ['', 'seen EtA', 'seen RtA(sens)', 'seen 1−RtA(benign)', 'held-out EtA', 'held-out RtA(sens)', 'held-out 1−RtA(benign)'];

function scoreCells(s: Scores): string[] {
  return [fmt(s.eta), fmt(s.rtaSensitive), fmt(s.nonRefusalBenign)];
}

/** The score rows of the report's runs, in run order. */
export function scoreRows(report: Pick<DemoReport, 'runs'>): string[][] {
  return report.runs.map((r) => [r.label, ...scoreCells(r.seen.scores.overall), ...scoreCells(r.heldOut.scores.overall)]);
}

/** The scores table as plain text, for the terminal. */
export function scoresText(report: Pick<DemoReport, 'runs'>): string {
  return textTable(SCORE_HEADER, scoreRows(report));
}

/** The per-layer gate counts as plain text (build-gate, inspect, demo). */
export function gateCountsText(counts: GateLayerCounts[], hiddenSize: number): string {
  return textTable(['layer', 'strong', 'weak', 'inactive', 'strong share', 'of d'],
    counts.map((c) => [String(c.layer), String(c.strong), String(c.weak), String(c.inactive), pct(c.strongShare), String(hiddenSize)]));
}

/** Scores of one evaluation, overall then per category, as plain text (eval). */
export function evaluationText(report: EvaluationReport): string {
  const row = (name: string, s: Scores) => [name, String(s.sensitiveCount), fmt(s.rtaSensitive), String(s.benignCount), fmt(s.nonRefusalBenign), fmt(s.eta)];
  const rows = [row('overall', report.scores.overall), ...Object.keys(report.scores.byCategory).sort().map((c) => row(c, report.scores.byCategory[c]))];
  return textTable(['category', 'sensitive', 'RtA', 'benign', '1−RtA', 'EtA'], rows);
}

function run(report: DemoReport, name: RunName): ReportRun | undefined {
  return report.runs.find((r) => r.name === name);
}

/**
 * What the numbers say, in words. Differences are counted in queries, so that
 * a gap smaller than one query is called no difference rather than a trend.
 */
export function interpret(report: DemoReport): string[] {
  const out: string[] = [];
  const base = run(report, 'unedited');
  const gated = run(report, 'neural-gate');
  const plain = run(report, 'without-gate');
  const splits = [['seen', 'the pairs the edit was trained on'], ['heldOut', 'the held-out pairs (question templates and attributes never trained on)']] as const;
  for (const [key, words] of splits) {
    const g = gated?.[key].scores.overall;
    const p = plain?.[key].scores.overall;
    const b = base?.[key].scores.overall;
    if (!g || !p || g.eta === null || p.eta === null) continue;
    // EtA moves by 1/(2n) when one of n sensitive (or benign) answers flips.
    const step = 1 / (2 * Math.max(1, Math.min(g.sensitiveCount, g.benignCount)));
    const d = g.eta - p.eta;
    let verdict: string;
    if (Math.abs(d) < step / 2) verdict = `the gate makes no difference on ${words}: EtA ${fmt(g.eta)} with it and ${fmt(p.eta)} without`;
    else if (d > 0) verdict = `the gate helps on ${words}: EtA ${fmt(g.eta)} with it against ${fmt(p.eta)} without (+${fmt(d)})`;
    else verdict = `the gate does not help on ${words}: EtA ${fmt(g.eta)} with it against ${fmt(p.eta)} without (${fmt(d)})`;
    const parts = [verdict.charAt(0).toUpperCase() + verdict.slice(1) + '.'];
    if (b) {
      parts.push(`Refusal of sensitive questions went from ${fmt(b.rtaSensitive)} (unedited) to ${fmt(g.rtaSensitive)} with the gate and ${fmt(p.rtaSensitive)} without;` +
        ` the share of benign questions still answered went from ${fmt(b.nonRefusalBenign)} to ${fmt(g.nonRefusalBenign)} and ${fmt(p.nonRefusalBenign)}.`);
    }
    out.push(parts.join(' '));
  }
  // Whether the edits did anything at all decides what the comparison can mean.
  const raised = (r: ReportRun | undefined, key: 'seen' | 'heldOut') => {
    const x = r?.[key].scores.overall.rtaSensitive, y = base?.[key].scores.overall.rtaSensitive;
    return x !== null && x !== undefined && y !== null && y !== undefined && x > y;
  };
  if (base && gated && plain && !raised(gated, 'seen') && !raised(plain, 'seen')) {
    out.push('Neither edit made the model refuse even the sensitive questions it was trained on, so these settings (learning rate, epochs) are too weak for this model and the comparison says nothing about the gate.');
  } else if (base && gated && raised(gated, 'seen') && !raised(gated, 'heldOut')) {
    out.push('The gated edit raised refusals on the seen questions but not on the held-out ones: on this model and with these settings it does not generalise.');
  }
  const n = report.data.heldOut.length;
  if (n > 0) out.push(`Each split holds few pairs (${report.data.train.length} seen, ${n} held out), so one answer moves a rate by ${fmt(1 / n)}: read small gaps as noise.`);
  return out;
}

/** summary.md: settings, the table, the gate counts, the words, the timings. */
export function summaryMarkdown(report: DemoReport): string {
  const s = report.settings;
  const m = report.model;
  const lines: string[] = [];
  lines.push('# Neural Gate demo', '');
  lines.push(`Model \`${m.dir}\`: ${m.numLayers} layers, hidden size ${m.hiddenSize}, ${m.parameters.toLocaleString('en-US')} parameters, ${m.device}/${m.dtype}.`,
    `${report.data.train.length} training pairs (the seen split), ${report.data.heldOut.length} held-out pairs; seed ${s.seed}.`,
    `Edited layer${s.editLayers.length > 1 ? 's' : ''}: ${s.editLayers.join(', ')} (${s.layerChoice}). τ = ${s.threshold}.`, '');
  lines.push('## Scores', '');
  lines.push('EtA = (RtA on sensitive + (1 − RtA) on benign) / 2; higher is better in every column. ' +
    '"w/o gate" is the same edit (same layers, loss and steps) with the gate off.', '');
  lines.push(mdTable(
    ['', 'Seen EtA', 'Seen RtA (sensitive)', 'Seen 1 − RtA (benign)', 'Held-out EtA', 'Held-out RtA (sensitive)', 'Held-out 1 − RtA (benign)'],
    scoreRows(report)), '');
  lines.push('## What it means', '');
  for (const p of interpret(report)) lines.push(`- ${p}`);
  lines.push('');
  if (report.layers.length > 0) {
    lines.push('## Neurons per layer (single-layer masks)', '');
    lines.push(mdTable(['Layer', 'Strongly active', 'Weakly active', 'Inactive', 'Strong share'],
      report.layers.map((l) => [`${l.layer}${s.editLayers.includes(l.layer) ? ' (edited)' : ''}`, String(l.strong), String(l.weak), String(l.inactive), pct(l.strongShare)])), '');
    lines.push('`mask-share.svg` shows how M_l (the share of pairs with m < 0) is spread over the dimensions of each layer (figure 2c); ' +
      '`strong-share.svg` the share of strongly active neurons per layer (figure 2d).', '');
  }
  const t = report.timings;
  lines.push('## Time', '');
  lines.push(Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ') + '.', '');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// Figure 2(c): per layer, the dimensions binned by M_l.

/** M_l of one layer; with pairCount, binning works on exact counts. */
export interface LayerShare { layer: number; share: ArrayLike<number>; pairCount?: number; }

export type ShareSource = Gate | Gate[] | MaskSet | ReportLayer[] | LayerShare[];

function isGate(v: unknown): v is Gate {
  return typeof v === 'object' && v !== null && 'keep' in v && 'share' in v && 'layers' in v;
}

function isMaskSet(v: unknown): v is MaskSet {
  return typeof v === 'object' && v !== null && 'masks' in v && 'pairIds' in v;
}

/** M_l per layer from a gate, several (single-layer) gates, masks, or report layers. */
export function layerShares(src: ShareSource, threshold = DEFAULT_GATE_THRESHOLD): LayerShare[] {
  if (isMaskSet(src)) return layerShares(buildGate(src, { threshold }));
  if (isGate(src)) {
    const d = src.hiddenSize;
    return src.layers.map((layer, i) => ({ layer, share: src.share.subarray(i * d, (i + 1) * d), pairCount: src.pairCount }));
  }
  if (!Array.isArray(src)) throw new NgateError('ERR_INPUT', 'expected a gate, masks or a list of layers', { field: 'src' });
  return (src as (Gate | ReportLayer | LayerShare)[]).flatMap((x): LayerShare[] => {
    if (isGate(x)) return layerShares(x);
    if ('negativeCounts' in x && Array.isArray(x.negativeCounts)) {
      return [{ layer: x.layer, share: x.negativeCounts.map((c) => c / x.pairCount), pairCount: x.pairCount }];
    }
    return [x as LayerShare];
  });
}

export interface ShareBin {
  layer: number;
  /** 0 is M = 0 (inactive); bin k ≥ 1 holds (k−1)/bins < M ≤ k/bins. */
  bin: number;
  label: string;
  dims: number;
  /** dims / hiddenSize. */
  share: number;
}

/**
 * Every layer's dimensions counted into bins of M_l: one bin for M = 0, then
 * `bins` right-closed bins, so with 10 bins τ = 0.3 falls on an edge and the
 * bins right of (0.2, 0.3] hold exactly the strongly active neurons.
 */
export function shareHistogram(layers: LayerShare[], bins = 10): ShareBin[] {
  const labels = ['0', ...Array.from({ length: bins }, (_, k) => `(${(k / bins).toFixed(1)}, ${((k + 1) / bins).toFixed(1)}]`)];
  const out: ShareBin[] = [];
  for (const { layer, share, pairCount } of layers) {
    const counts = new Array<number>(bins + 1).fill(0);
    for (let j = 0; j < share.length; j++) {
      const m = share[j];
      if (!(m > 0)) { counts[0]++; continue; }
      // With N known, work on the integer count: neg·bins/N is exact when it is a whole number.
      const x = pairCount ? (Math.round(m * pairCount) * bins) / pairCount : m * bins;
      counts[Math.min(bins, Math.max(1, Math.ceil(x)))]++;
    }
    counts.forEach((dims, bin) => out.push({ layer, bin, label: labels[bin], dims, share: share.length ? dims / share.length : 0 }));
  }
  return out;
}

async function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const VL_SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';

/**
 * Figure 2(c): a heatmap, layers down and bins of M_l across; a cell's colour
 * is the share of the layer's dimensions whose M_l falls in the bin.
 */
export async function maskShareSvg(src: ShareSource, opts: { threshold?: number; bins?: number; title?: string } = {}): Promise<string> {
  const threshold = opts.threshold ?? (isGate(src) ? src.threshold : DEFAULT_GATE_THRESHOLD);
  const hist = shareHistogram(layerShares(src, threshold), opts.bins ?? 10);
  const labels = [...new Set(hist.map((h) => h.label))];
  const values = hist.map((h) => ({ ...h, layerLabel: `layer ${h.layer}`, percent: pct(h.share) }));
  const layerOrder = [...new Set(values.map((v) => v.layerLabel))];
  const spec: vl.TopLevelSpec = {
    $schema: VL_SCHEMA,
    title: { text: opts.title ?? 'Share of pairs with m < 0 per dimension (M_l)', subtitle: `τ = ${threshold}: dimensions right of it are strongly active` },
    data: { values },
    width: Math.max(260, labels.length * 34),
    height: Math.max(40, layerOrder.length * 28),
    encoding: {
      x: { field: 'label', type: 'ordinal', sort: labels, title: 'M_l (share of pairs with m < 0)', axis: { labelAngle: -40 } },
      y: { field: 'layerLabel', type: 'ordinal', sort: layerOrder, title: null },
    },
    layer: [
      {
        mark: { type: 'rect' },
        encoding: {
          color: { field: 'share', type: 'quantitative', title: 'share of dims', scale: { scheme: 'viridis', domain: [0, 1] } },
          tooltip: [{ field: 'layerLabel' }, { field: 'label' }, { field: 'dims' }, { field: 'percent' }],
        },
      },
      {
        mark: { type: 'text', fontSize: 8 },
        encoding: {
          text: { field: 'dims', type: 'quantitative' },
          color: { condition: { test: 'datum.share > 0.5', value: 'black' }, value: 'white' },
        },
      },
    ],
  };
  return renderSvg(spec);
}

export interface StrongShareRow { layer: number; strongShare: number; }

/**
 * Figure 2(d): per layer, the share of strongly active neurons (M_l > τ),
 * with the edited layers marked.
 */
export async function strongShareSvg(src: StrongShareRow[] | Gate | Gate[], opts: { highlight?: number[]; threshold?: number; title?: string } = {}): Promise<string> {
  const rows: StrongShareRow[] = isGate(src) ? src.counts
    : (src as (StrongShareRow | Gate)[]).flatMap((x) => (isGate(x) ? x.counts : [x]));
  const highlight = new Set(opts.highlight ?? []);
  const values = rows.map((r) => ({
    layer: r.layer, layerLabel: String(r.layer), strongShare: r.strongShare,
    percent: pct(r.strongShare), role: highlight.has(r.layer) ? 'edited' : 'scanned',
  }));
  const order = values.map((v) => v.layerLabel);
  const spec: vl.TopLevelSpec = {
    $schema: VL_SCHEMA,
    title: { text: opts.title ?? 'Share of strongly active neurons per layer', subtitle: `M_l > τ = ${opts.threshold ?? DEFAULT_GATE_THRESHOLD}` },
    data: { values },
    width: Math.max(200, values.length * 36),
    height: 200,
    encoding: {
      x: { field: 'layerLabel', type: 'ordinal', sort: order, title: 'layer', axis: { labelAngle: 0 } },
      y: { field: 'strongShare', type: 'quantitative', title: 'strongly active share', axis: { format: '.0%' } },
    },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          color: { field: 'role', type: 'nominal', title: null, scale: { domain: ['scanned', 'edited'], range: ['#9ab', '#d62'] } },
          tooltip: [{ field: 'layer' }, { field: 'percent' }],
        },
      },
      { mark: { type: 'text', dy: -6, fontSize: 9 }, encoding: { text: { field: 'percent' } } },
    ],
  };
  return renderSvg(spec);
}

// ---------------------------------------------------------------------------
// Files.

export const REPORT_FILES = { json: 'report.json', summary: 'summary.md', maskShare: 'mask-share.svg', strongShare: 'strong-share.svg' } as const;


/**
 * Writes the report folder: the pictures and summary.md first, report.json
 * last, so a folder with report.json in it is a finished report.
 */
export async function writeReport(dir: string, report: DemoReport): Promise<Record<keyof typeof REPORT_FILES, string>> {
  fs.mkdirSync(dir, { recursive: true });
  const files = Object.fromEntries(Object.entries(REPORT_FILES).map(([k, f]) => [k, path.join(dir, f)])) as Record<keyof typeof REPORT_FILES, string>;
  const shares = report.layers.length > 0 ? report.layers : [];
  writeFileAtomic(files.maskShare, await maskShareSvg(shares, { threshold: report.settings.threshold }));
  writeFileAtomic(files.strongShare, await strongShareSvg(report.layers, { highlight: report.settings.editLayers, threshold: report.settings.threshold }));
  writeFileAtomic(files.summary, summaryMarkdown(report));
  writeFileAtomic(files.json, JSON.stringify(report, null, 2) + '\n');
  return files;
}

/** Reads a report.json written by writeReport. */
export function readReport(file: string): DemoReport {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'ERR_MISSING_FILE' : 'ERR_INPUT';
    throw new NgateError(code, code === 'ERR_MISSING_FILE' ? 'does not exist' : `not valid JSON: ${(e as Error).message}`, { file });
  }
  const r = raw as Partial<DemoReport>;
  if (r?.format !== REPORT_FORMAT) throw new NgateError('ERR_INPUT', `is not a demo report (format ${JSON.stringify(r?.format)})`, { file, field: 'format' });
  if (r.version !== REPORT_VERSION) throw new NgateError('ERR_INPUT', `version ${JSON.stringify(r.version)} is not supported (this library reads ${REPORT_VERSION})`, { file, field: 'version' });
  for (const k of ['model', 'settings', 'data', 'layers', 'runs', 'timings'] as const) {
    if (r[k] === undefined || r[k] === null) throw new NgateError('ERR_INPUT', 'is missing', { file, field: k });
  }
  return r as DemoReport;
}
