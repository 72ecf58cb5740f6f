// summary.md: the demo's tables in the spirit of table 2, and what they say
// about the gate in words.
import { fmt, mdTable, pct, scoreRows } from './tables';
import type { DemoReport, ReportRun, RunName } from './format';

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
