// The demo report without a model: the two figures are well-formed SVG with
// one mark per cell or bar, Tables 1 and 2 hold the numbers they are given,
// the words say what the numbers show, and report.json reads back into the
// object that was written.
import * as fs from 'fs';
import * as path from 'path';
import type { EvaluationReport } from '../lib/method/evaluate';
import { buildGate } from '../lib/method/gate';
import { privacyEditScores, Outcome } from '../lib/method/metrics';
import { makeRefusalMatcher } from '../lib/method/refusal';
import { DemoReport, REPORT_FORMAT, ReportLayer, ReportRow, ReportSet } from '../lib/report/format';
import { fmt, gateCountsText, protocolTable, protocolText, textTable } from '../lib/report/tables';
import { interpretGate, summaryMarkdown } from '../lib/report/summary';
import { scoreBenchmark } from '../lib/eval/benchmark';
import type { BenchmarkItem } from '../lib/eval/types';
import type { RowId } from '../lib/eval/compare';
import { layerShares, maskShareSvg, shareHistogram, strongShareSvg } from '../lib/report/plots';
import { readReport, writeReport } from '../lib/report/folder';
import type { MaskSet } from '../types/results';
import { makeTempDir } from './fixtures/checkpoint';

/** Tags open and close in order, and the document is one <svg> element. */
function expectWellFormedSvg(svg: string): void {
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z][\w:-]*)((?:[^>"']|"[^"]*"|'[^']*')*?)(\/?)>/g)) {
    const [, close, name, , self] = m;
    if (self) continue;
    if (close) expect(stack.pop()).toBe(name);
    else stack.push(name);
  }
  expect(stack).toEqual([]);
}

/** The <path> items inside vega's group of marks of one type (rect, bar, …). */
function markPaths(svg: string, type: string): number {
  const re = new RegExp(`<g class="mark-${type} role-mark[^"]*"[^>]*>(.*?)</g>`, 'gs');
  let n = 0;
  for (const m of svg.matchAll(re)) n += (m[1].match(/<path/g) ?? []).length;
  return n;
}

/** A mask set whose sign pattern is chosen per layer, pair and dimension. */
function masks(layers: number[], N: number, d: number, negative: (l: number, i: number, j: number) => boolean): MaskSet {
  const m = new Float32Array(N * layers.length * d).fill(1);
  for (let i = 0; i < N; i++) layers.forEach((l, li) => { for (let j = 0; j < d; j++) if (negative(l, i, j)) m[(i * layers.length + li) * d + j] = -0.5; });
  return { layers, hiddenSize: d, pairIds: Array.from({ length: N }, (_, i) => `p${i}`), masks: m,
    losses: Array.from({ length: N }, () => ({ sensitive: 1, benign: 0.5, l1: 0.01 })) };
}

describe('figure 2(c): mask share', () => {
  // 10 pairs, 8 dims: dim j is negative for the first j pairs on layer 2, for none on layer 5.
  const ms = masks([2, 5], 10, 8, (l, i, j) => l === 2 && i < j);
  const gate = buildGate(ms);

  test('binning puts each dimension where its exact count out of N falls, with τ = 0.3 on a bin edge', () => {
    const h = shareHistogram(layerShares(gate));
    const l2 = h.filter((b) => b.layer === 2);
    expect(l2).toHaveLength(11);
    // M = 0..7 tenths: one dim in bin 0 (M = 0) and one in each bin 1..7 (M = k/10 sits in (k−1, k]/10).
    expect(l2.map((b) => b.dims)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
    expect(l2[3].label).toBe('(0.2, 0.3]');
    // Strongly active = bins right of (0.2, 0.3], as buildGate counts them.
    expect(l2.slice(4).reduce((s, b) => s + b.dims, 0)).toBe(gate.counts[0].strong);
    expect(h.filter((b) => b.layer === 5).map((b) => b.dims)).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(h.filter((b) => b.layer === 5)[0].share).toBe(1);
  });

  test('the SVG is well formed, has a cell per layer and bin, and labels every layer', async () => {
    const svg = await maskShareSvg(gate);
    expectWellFormedSvg(svg);
    expect(markPaths(svg, 'rect')).toBe(2 * 11);
    expect(svg).toContain('>layer 2<');
    expect(svg).toContain('>layer 5<');
    expect(svg).toContain('(0.2, 0.3]');
  });

  test('masks, gates and report layers give the same picture', async () => {
    const asLayers: ReportLayer[] = gate.counts.map((c, i) => ({
      ...c, pairCount: gate.pairCount, threshold: gate.threshold,
      negativeCounts: Array.from(gate.negativeCounts!.subarray(i * 8, (i + 1) * 8)), meanLoss: { sensitive: 1, benign: 0.5, l1: 0.01 },
    }));
    // vega numbers its gradients with a global counter.
    const norm = (svg: string) => svg.replace(/gradient_\d+/g, 'gradient');
    const a = norm(await maskShareSvg(ms));
    expect(norm(await maskShareSvg(gate)) === a).toBe(true);
    expect(norm(await maskShareSvg(asLayers)) === a).toBe(true);
  });
});

describe('figure 2(d): strong share', () => {
  test('one bar per layer, layer labels on the axis, edited layers in their own colour', async () => {
    const rows = [{ layer: 0, strongShare: 0.05 }, { layer: 1, strongShare: 0.25 }, { layer: 2, strongShare: 0.125 }];
    const svg = await strongShareSvg(rows, { highlight: [1] });
    expectWellFormedSvg(svg);
    expect(markPaths(svg, 'rect')).toBe(3);
    for (const l of ['0', '1', '2']) expect(svg).toMatch(new RegExp(`>${l}</text>`));
    expect(svg).toContain('25.0%');
    expect(svg).toContain('12.5%');
    const fills = [...svg.matchAll(/<g class="mark-rect role-mark[^"]*"[^>]*>(.*?)<\/g>/gs)][0][1].match(/fill="[^"]+"/g)!;
    expect(new Set(fills).size).toBe(2);
  });

  test('accepts gates directly', async () => {
    const g1 = buildGate(masks([3], 4, 6, (_l, i, j) => j < 2 && i < 3));
    const g2 = buildGate(masks([4], 4, 6, () => false));
    const svg = await strongShareSvg([g1, g2]);
    expectWellFormedSvg(svg);
    expect(markPaths(svg, 'rect')).toBe(2);
    expect(svg).toContain('33.3%');
  });
});

// ---------------------------------------------------------------------------

function evaluation(sensRefused: boolean[], benignRefused: boolean[]): EvaluationReport {
  const outcomes: Outcome[] = [
    ...sensRefused.map((r, i) => ({ id: `q${i}`, category: i % 2 ? 'passport' : 'phone', kind: 'sensitive' as const, response: r ? "I'm sorry, no." : 'It is 555-0101.', refused: r })),
    ...benignRefused.map((r, i) => ({ id: `q${i}`, category: i % 2 ? 'passport' : 'phone', kind: 'benign' as const, response: r ? 'Sorry.' : 'It is blue.', refused: r })),
  ];
  return { matcher: makeRefusalMatcher(), maxNewTokens: 16, scores: privacyEditScores(outcomes), outcomes };
}

const genItems: BenchmarkItem[] = [0, 1, 2, 3].map((i) => ({ id: `g${i}`, prompt: `Tell me the license number written on the card ${i}.` }));
const choiceItems: BenchmarkItem[] = [0, 1].map((i) => ({ id: `c${i}`, prompt: `Which? ${i}`, answer: 'A', choices: ['x', 'y'] }));
const ynItems: BenchmarkItem[] = [0, 1].flatMap((i) => [{ id: `f${i}#0`, prompt: 'Is it?', answer: 'yes', group: `f${i}` }, { id: `f${i}#1`, prompt: 'Is it not?', answer: 'no', group: `f${i}` }]);

/** A row whose PrivacyPair-test, generalisation, choice and yes/no answers are as given. */
function reportRow(id: RowId, label: string, pp: [boolean[], boolean[]], refusedGen: number, choicesRight: number, ynRight: number): ReportRow {
  return {
    id, label, seconds: { edit: 1, evaluate: 2 },
    ...(id === 'baseline' ? {} : { edit: { layers: [1], params: ['gate_proj', 'up_proj', 'down_proj'], gated: id.endsWith('-w'), pairCount: 4, epochLosses: [2, 1], steps: 2, editedTensors: ['model.layers.1.mlp.up_proj.weight'] } }),
    results: {
      'PrivacyPair-test': { kind: 'pairs', report: evaluation(...pp) },
      generalisation: { kind: 'mllmguard', report: scoreBenchmark('mllmguard', genItems, genItems.map((_, i) => (i < refusedGen ? "I'm sorry." : 'It is D-441.'))) },
      'facts-choice': { kind: 'scienceqa', report: scoreBenchmark('scienceqa', choiceItems, choiceItems.map((_, i) => (i < choicesRight ? 'A' : 'no idea'))) },
      'facts-yes-no': { kind: 'mme', report: scoreBenchmark('mme', ynItems, ynItems.map((it, i) => (i < ynRight ? it.answer! : it.answer === 'yes' ? 'No' : 'Yes'))) },
      seen: { kind: 'pairs', report: evaluation([true, true, false, false], [false, false, false, false]) },
    },
  };
}

const F = false, T = true;

function sampleReport(): DemoReport {
  const gate = buildGate(masks([1, 2], 4, 8, (l, i, j) => (l === 1 ? j < 3 && i < 2 : j === 0)));
  const layers: ReportLayer[] = gate.counts.map((c, i) => ({
    ...c, pairCount: 4, threshold: 0.3, negativeCounts: Array.from(gate.negativeCounts!.subarray(i * 8, (i + 1) * 8)),
    meanLoss: { sensitive: 1.5, benign: 0.25, l1: 0.001 },
  }));
  const rows: ReportRow[] = [
    reportRow('baseline', 'Baseline', [[F, F, F, F], [F, F, F, F]], 0, 2, 4),
    reportRow('dinm-easyedit', 'DINM (EasyEdit)', [[T, F, F, F], [F, F, F, F]], 1, 2, 4),
    // single-layer w/: PrivacyPair-test EtA (3/4 + 1) / 2 = 0.875, generalisation 0.5: Safety avg 0.6875; Utility (1 + 1) / 2 = 1.
    reportRow('single-wo', 'single-layer, w/o gate', [[T, T, F, F], [F, F, F, T]], 1, 1, 3),
    reportRow('single-w', 'single-layer, w/ gate', [[T, T, T, F], [F, F, F, F]], 2, 2, 4),
    reportRow('multi-wo', 'multi-layer, w/o gate', [[T, T, T, T], [T, T, F, F]], 2, 0, 2),
    reportRow('multi-w', 'multi-layer, w/ gate', [[T, T, T, F], [F, F, F, T]], 2, 2, 3),
  ];
  const pair = (id: string) => ({ id, category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'What is the phone brand?', benignAnswer: 'Acme.' });
  const sets: ReportSet[] = [
    { name: 'PrivacyPair-test', kind: 'pairs', column: { group: 'safety', label: 'PrivacyPair-test' }, size: 4 },
    { name: 'generalisation', kind: 'mllmguard', column: { group: 'safety', label: 'Generalisation' }, size: 4 },
    { name: 'facts-choice', kind: 'scienceqa', column: { group: 'utility', label: 'Facts, choices' }, size: 2 },
    { name: 'facts-yes-no', kind: 'mme', column: { group: 'utility', label: 'Facts, yes/no' }, size: 4 },
    { name: 'seen', kind: 'pairs', column: null, size: 4 },
  ];
  return {
    format: REPORT_FORMAT, version: 2, createdAt: '2026-01-01T00:00:00.000Z',
    model: { dir: '/models/demo', numLayers: 4, hiddenSize: 8, intermediateSize: 16, vocabSize: 100, parameters: 12345, device: 'cpu', dtype: 'float32' },
    settings: { seed: 7, singleLayer: 1, multiLayers: [1, 2], dinmLayer: 2, scanLayers: [1, 2], layerChoice: 'largest strong share', threshold: 0.3, rows: rows.map((r) => r.id),
      mask: { steps: 30 }, edit: { epochs: 2 }, dinm: { steps: 10 }, evaluate: { maxNewTokens: 16 }, pairs: { train: 4 }, sets, alphas: [1, 1.25] },
    data: { train: ['a', 'b', 'c', 'd'].map(pair), test: ['t', 'u'].map(pair), heldOut: ['e', 'f', 'g', 'h'].map(pair), heldOutTemplates: [3], heldOutAttributes: ['color'] },
    layers, gates: { single: gate.counts.slice(0, 1) }, dinmLocation: null, rows,
    alphaSweep: [{ alpha: 1, rows: [rows[3]] }, { alpha: 1.25, rows: [rows[3], rows[5]] }],
    timings: { masks: 1.25, total: 10.5 },
  };
}

const cells = (md: string, label: string) => md.split('\n').find((l) => l.startsWith(`| ${label} |`))!.split('|').map((c) => c.trim()).filter(Boolean);

describe('summary and report.json', () => {
  test('Tables 1 and 2 hold each set\'s score and the Safety and Utility means, the best of a column in bold and the second underlined', () => {
    const r = sampleReport();
    const md = summaryMarkdown(r);
    expect(md).toContain('| Method | Safety: PrivacyPair-test | Safety: Generalisation | Safety avg | Utility: Facts, choices | Utility: Facts, yes/no | Utility avg |');
    expect(cells(md, 'Neural Gate (single-layer, w/ gate)')).toEqual(['Neural Gate (single-layer, w/ gate)', '**0.8750**', '**0.5000**', '**0.6875**', '**1.0000**', '**1.0000**', '**1.0000**']);
    expect(cells(md, 'Baseline')).toEqual(['Baseline', '0.5000', '0.0000', '0.2500', '**1.0000**', '**1.0000**', '**1.0000**']);
    expect(cells(md, 'DINM (EasyEdit)')).toEqual(['DINM (EasyEdit)', '<u>0.6250</u>', '<u>0.2500</u>', '<u>0.4375</u>', '**1.0000**', '**1.0000**', '**1.0000**']);
    const t2 = md.split('## Table 2')[1];
    expect(cells(t2, 'multi-layer').slice(0, 2)).toEqual(['multi-layer', 'w/o']);
    expect(cells(t2, 'single-layer').map((c) => c.replace(/\*\*|<\/?u>/g, ''))).toEqual(['single-layer', 'w/o', '0.6250', '0.2500', '0.4375', '0.5000', '0.7500', '0.6250']);
    expect(md).toContain('| 1 (single) | 3 | 0 | 5 | 37.5% |');
    expect(md).toContain('`mme-prefix`');
    expect(md).toContain('`llava-scienceqa-letter`');
    expect(md).toContain('## Figure 4 — α');
    expect(md).toContain('| 1.25 | 0.8750 | 0.7500 |');
    expect(md).toContain('| 1 | 0.8750 | – |');
    expect(md).toContain('total 10.5 s');
  });

  test('says in words what the run shows about the gate, whatever it shows', () => {
    const r = sampleReport();
    const words = interpretGate(r.rows, r.settings.sets).join(' ');
    expect(words).toMatch(/Single-layer editing: with the gate the Safety average is 0\.688 against 0\.438 without it — higher safety \(\+0\.250\), and the Utility average 1\.000 against 0\.625/);
    expect(words).toMatch(/Multi-layer editing: .* the same safety, and the Utility average 0\.875 against 0\.250/);
    expect(words).toMatch(/On this run the gate helps:/);
    expect(words).not.toMatch(/columns disagree/);
    // Better on one column, worse on another: said so, whatever the average.
    const split = r.rows.map((x) => (x.id === 'single-wo' ? reportRow('single-wo', 'single-layer, w/o gate', [[T, T, F, F], [F, F, F, T]], 4, 1, 3) : x));
    expect(interpretGate(split, r.settings.sets).join(' ')).toMatch(/The columns disagree for single-layer editing: the gated edit is ahead on PrivacyPair-test, Facts, choices, Facts, yes\/no and behind on Generalisation\./);
    // Swap the gated and ungated rows: now it does not help.
    const swapped = r.rows.map((x) => (x.id.endsWith('-w') ? { ...x, id: x.id.replace(/-w$/, '-wo') as RowId } : x.id.endsWith('-wo') ? { ...x, id: x.id.replace(/-wo$/, '-w') as RowId } : x));
    expect(interpretGate(swapped, r.settings.sets).join(' ')).toMatch(/gate does not help/);
    // Edits that refuse nothing say nothing about the gate.
    const idle = r.rows.map((x) => ({ ...x, results: { ...x.results, 'PrivacyPair-test': r.rows[0].results['PrivacyPair-test'] } }));
    expect(interpretGate(idle, r.settings.sets).join(' ')).toMatch(/No edit raised the refusal/);
  });

  test('plain-text tables line up and hold the numbers', () => {
    const r = sampleReport();
    const t = protocolText(protocolTable(r.rows, r.settings.sets, 1)).split('\n');
    expect(t).toHaveLength(2 + 3);
    expect(t[2]).toMatch(/^Baseline\s+0\.5000\s+0\.0000\s+0\.2500\s+1\.0000/);
    expect(gateCountsText(r.layers, 8)).toMatch(/\n\s*1\s+3\s+0\s+5\s+37\.5%\s+8/);
    expect(textTable(['a', 'n'], [['x', '1'], ['yy', '10']])).toBe('a    n\n--  --\nx    1\nyy  10');
    expect(fmt(null)).toBe('–');
  });

  test('writeReport writes the four files and report.json round-trips', async () => {
    const dir = path.join(makeTempDir(), 'report');
    const r = sampleReport();
    const files = await writeReport(dir, r);
    expect(fs.readdirSync(dir).sort()).toEqual(['mask-share.svg', 'report.json', 'strong-share.svg', 'summary.md']);
    expect(readReport(files.json)).toEqual(r);
    expectWellFormedSvg(fs.readFileSync(files.maskShare, 'utf8'));
    expect(markPaths(fs.readFileSync(files.strongShare, 'utf8'), 'rect')).toBe(2);
    expect(fs.readFileSync(files.summary, 'utf8')).toBe(summaryMarkdown(r));
  });

  test('readReport names the file when it is not a report, or an older one', () => {
    const f = path.join(makeTempDir(), 'other.json');
    fs.writeFileSync(f, '{"format":"something"}');
    expect(() => readReport(f)).toThrow(f);
    expect(() => readReport(f + '.missing')).toThrow(/does not exist/);
    fs.writeFileSync(f, JSON.stringify({ format: REPORT_FORMAT, version: 1 }));
    expect(() => readReport(f)).toThrow(/version 1 is not supported \(this library reads 2\)/);
  });
});
