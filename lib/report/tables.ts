// Plain-text and markdown tables of scores and gate counts, for the command
// line and summary.md. Pure functions of their input.
import type { GateLayerCounts } from '../../types/results';
import type { EvaluationReport } from '../method/evaluate';
import type { Scores } from '../method/metrics';
import type { DemoReport } from './format';

// Number formatting shared by the tables.

/** A rate as the tables print it: three decimals, or "–" when there was nothing to count. */
export function fmt(v: number | null | undefined, digits = 3): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits);
}

export function pct(v: number): string {
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

export function mdTable(header: string[], rows: string[][], align?: ('l' | 'r')[]): string {
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
