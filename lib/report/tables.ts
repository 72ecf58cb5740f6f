// Plain-text and markdown tables of scores and gate counts, for the command
// line and summary.md. Pure functions of their input.
import type { GateLayerCounts } from '../../types/results';
import type { EvaluationReport } from '../method/evaluate';
import type { Scores } from '../method/metrics';
import type { RowId, SetResult } from '../eval/compare';
import type { ReportRow, ReportSet } from './format';

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
// Tables 1 and 2 of the paper: per row, Safety (PrivacyPair-test EtA,
// MLLMGuard RtA, their mean) and Utility (ScienceQA, MME, POPE accuracy, their
// mean); the columns are the sets that were given a column, in their order.

/** Table 1's rows (methods) and Table 2's (the ablation), in the paper's order. */
export const TABLE1_ROWS: RowId[] = ['baseline', 'dinm-easyedit', 'dinm-paper', 'single-w'];
export const TABLE2_ROWS: RowId[] = ['single-wo', 'single-w', 'multi-wo', 'multi-w'];

const TABLE1_LABELS: Partial<Record<RowId, string>> = { 'single-w': 'Neural Gate (single-layer, w/ gate)' };

/** The number a set contributes to the tables: EtA of pairs, a benchmark's score. */
export function setScore(r: SetResult | undefined): number | null {
  if (!r) return null;
  return r.kind === 'pairs' ? r.report.scores.overall.eta : r.report.score;
}

/** Answers a set's parsing rule could not read (none for pairs, whose rule reads every answer). */
export function unparseableOf(r: SetResult | undefined): number | null {
  if (!r) return null;
  return r.kind === 'pairs' ? 0 : r.report.counts.unparseable;
}

function mean(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length === 0 || v.length < xs.length ? null : v.reduce((a, b) => a + b, 0) / v.length;
}

export interface ProtocolTable {
  header: string[];
  /** Leading text cells per row (method; or layer and gate). */
  labels: string[][];
  /** Numbers per row, one per numeric column (the sets' scores and the two means). */
  values: (number | null)[][];
}

/** Table 1 or 2 from the rows present; rows of the table that did not run are left out. */
export function protocolTable(rows: ReportRow[], sets: ReportSet[], table: 1 | 2): ProtocolTable {
  const cols = sets.filter((s) => s.column !== null);
  const safety = cols.filter((s) => s.column!.group === 'safety'), utility = cols.filter((s) => s.column!.group === 'utility');
  const header = table === 1 ? ['Method'] : ['Layer', 'Gate'];
  header.push(...safety.map((s) => `Safety: ${s.column!.label}`), 'Safety avg', ...utility.map((s) => `Utility: ${s.column!.label}`), 'Utility avg');
  const order = table === 1 ? TABLE1_ROWS : TABLE2_ROWS;
  const chosen = order.map((id) => rows.find((r) => r.id === id)).filter((r): r is ReportRow => r !== undefined);
  const labels = chosen.map((r) => (table === 1 ? [TABLE1_LABELS[r.id] ?? r.label]
    : [r.id.startsWith('single') ? 'single-layer' : 'multi-layer', r.id.endsWith('-w') ? 'w/' : 'w/o']));
  const values = chosen.map((r) => {
    const s = safety.map((c) => setScore(r.results[c.name])), u = utility.map((c) => setScore(r.results[c.name]));
    return [...s, mean(s), ...u, mean(u)];
  });
  return { header, labels, values };
}

/** The table as aligned text, for the terminal. */
export function protocolText(t: ProtocolTable): string {
  return textTable(t.header, t.labels.map((l, i) => [...l, ...t.values[i].map((v) => fmt(v, 4))]));
}

/** The table as markdown, the best of each column in bold and the second best underlined, as the paper marks them. */
export function protocolMarkdown(t: ProtocolTable): string {
  const nLabels = t.labels[0]?.length ?? (t.header.length - (t.values[0]?.length ?? 0));
  const cells = t.values.map((row) => row.map((v) => fmt(v, 4)));
  if (t.values.length > 1) {
    t.values[0].forEach((_, c) => {
      const distinct = [...new Set(t.values.map((r) => r[c]).filter((v): v is number => v !== null))].sort((a, b) => b - a);
      t.values.forEach((r, i) => {
        if (r[c] === null) return;
        if (r[c] === distinct[0]) cells[i][c] = `**${cells[i][c]}**`;
        else if (distinct.length > 2 && r[c] === distinct[1]) cells[i][c] = `<u>${cells[i][c]}</u>`;
      });
    });
  }
  return mdTable(t.header, t.labels.map((l, i) => [...l, ...cells[i]]), t.header.map((_, i) => (i < nLabels ? 'l' : 'r')));
}

/** Every set's score and its unparseable answers, per row (the detail behind the tables). */
export function detailRows(rows: ReportRow[], sets: ReportSet[]): { header: string[]; rows: string[][] } {
  return {
    header: ['Row', ...sets.map((s) => s.name)],
    rows: rows.map((r) => [r.label, ...sets.map((s) => {
      const res = r.results[s.name];
      const u = unparseableOf(res);
      return `${fmt(setScore(res), 3)}${u ? ` (${u} unparseable)` : ''}`;
    })]),
  };
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
