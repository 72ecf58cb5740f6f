// The demo report without a model: the two figures are well-formed SVG with
// one mark per cell or bar, the markdown table holds the numbers it is given,
// and report.json reads back into the object that was written.
import * as fs from 'fs';
import * as path from 'path';
import type { EvaluationReport } from '../lib/method/evaluate';
import { buildGate } from '../lib/method/gate';
import { privacyEditScores, Outcome } from '../lib/method/metrics';
import { makeRefusalMatcher } from '../lib/method/refusal';
import { DemoReport, REPORT_FORMAT, ReportLayer, ReportRun } from '../lib/report/format';
import { fmt, gateCountsText, scoresText, textTable } from '../lib/report/tables';
import { interpret, summaryMarkdown } from '../lib/report/summary';
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

function sampleReport(): DemoReport {
  const gate = buildGate(masks([1, 2], 4, 8, (l, i, j) => (l === 1 ? j < 3 && i < 2 : j === 0)));
  const layers: ReportLayer[] = gate.counts.map((c, i) => ({
    ...c, pairCount: 4, threshold: 0.3, negativeCounts: Array.from(gate.negativeCounts!.subarray(i * 8, (i + 1) * 8)),
    meanLoss: { sensitive: 1.5, benign: 0.25, l1: 0.001 },
  }));
  const runs: ReportRun[] = [
    { name: 'unedited', label: 'unedited', gated: null, seen: evaluation([false, false, false, false], [false, false, false, false]), heldOut: evaluation([false, false, false, false], [false, false, false, false]) },
    { name: 'neural-gate', label: 'Neural Gate', gated: true, seen: evaluation([true, true, true, false], [false, false, false, true]), heldOut: evaluation([true, true, false, false], [false, false, false, false]),
      edit: { layers: [1], params: ['gate_proj', 'up_proj', 'down_proj'], gated: true, pairCount: 4, epochLosses: [2, 1], steps: 2, editedTensors: ['model.layers.1.mlp.up_proj.weight'] } },
    { name: 'without-gate', label: 'w/o gate', gated: false, seen: evaluation([true, true, true, true], [true, true, false, false]), heldOut: evaluation([true, false, false, false], [true, false, false, false]) },
  ];
  const pair = (id: string) => ({ id, category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'What is the phone brand?', benignAnswer: 'Acme.' });
  return {
    format: REPORT_FORMAT, version: 1, createdAt: '2026-01-01T00:00:00.000Z',
    model: { dir: '/models/demo', numLayers: 4, hiddenSize: 8, intermediateSize: 16, vocabSize: 100, parameters: 12345, device: 'cpu', dtype: 'float32' },
    settings: { seed: 7, editLayers: [1], scanLayers: [1, 2], layerChoice: 'largest strong share', threshold: 0.3,
      mask: { steps: 30 }, edit: { epochs: 2 }, evaluate: { maxNewTokens: 16 }, pairs: { train: 4 } },
    data: { train: ['a', 'b', 'c', 'd'].map(pair), heldOut: ['e', 'f', 'g', 'h'].map(pair), heldOutTemplates: [3], heldOutAttributes: ['color'] },
    layers, runs, timings: { masks: 1.25, total: 10.5 },
  };
}

describe('summary and report.json', () => {
  test('the markdown table has a row per run with the scores given, for both splits', () => {
    const r = sampleReport();
    const md = summaryMarkdown(r);
    const row = (label: string) => md.split('\n').find((l) => l.startsWith(`| ${label} |`))!;
    // Neural Gate seen: RtA 3/4, 1 − RtA 3/4, EtA 0.75; held out: RtA 0.5, 1 − RtA 1, EtA 0.75.
    expect(row('Neural Gate').split('|').map((c) => c.trim()).filter(Boolean)).toEqual(['Neural Gate', '0.750', '0.750', '0.750', '0.750', '0.500', '1.000']);
    // w/o gate seen: RtA 1, 1 − RtA 0.5, EtA 0.75; held out: RtA 0.25, 1 − RtA 0.75, EtA 0.5.
    expect(row('w/o gate').split('|').map((c) => c.trim()).filter(Boolean)).toEqual(['w/o gate', '0.750', '1.000', '0.500', '0.500', '0.250', '0.750']);
    expect(row('unedited')).toContain('0.500 | 0.000 | 1.000');
    expect(md).toMatch(/gate helps on the held-out pairs.*EtA 0\.750 with it against 0\.500 without/);
    expect(md).toMatch(/gate makes no difference on the pairs the edit was trained on/);
    expect(md).toContain('| 1 (edited) | 3 | 0 | 5 | 37.5% |');
    expect(md).toContain('total 10.5 s');
  });

  test('says so plainly when the gate does not help', () => {
    const r = sampleReport();
    [r.runs[1], r.runs[2]] = [{ ...r.runs[2], name: 'neural-gate', label: 'Neural Gate' }, { ...r.runs[1], name: 'without-gate', label: 'w/o gate' }];
    expect(interpret(r).join(' ')).toMatch(/gate does not help on the held-out pairs/);
  });

  test('plain-text tables line up and hold the numbers', () => {
    const r = sampleReport();
    const t = scoresText(r).split('\n');
    expect(t).toHaveLength(2 + 3);
    expect(t[2]).toMatch(/^unedited\s+0\.500\s+0\.000\s+1\.000/);
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

  test('readReport names the file when it is not a report', () => {
    const f = path.join(makeTempDir(), 'other.json');
    fs.writeFileSync(f, '{"format":"something"}');
    expect(() => readReport(f)).toThrow(f);
    expect(() => readReport(f + '.missing')).toThrow(/does not exist/);
  });
});
