// ngate compare --config compare.json: the rows of Tables 1 and 2 on one
// model and one set of pairs, each from the unedited weights, evaluated on
// PrivacyPair-test and the benchmarks the config names; a report folder
// (summary.md with the tables, report.json with every raw answer).
import { Command } from 'commander';
import * as path from 'path';
import type { BenchmarkKind } from '../eval/types';
import { readBenchmark, sampleItems } from '../eval/benchmark';
import { EvalSet, runCompare } from '../eval/compare';
import { readCompareConfig } from '../eval/compare-config';
import { COMPARE_REPORT_FORMAT, COMPARE_REPORT_VERSION, CompareReport } from '../report/format';
import { writeCompareReport } from '../report/folder';
import { protocolTable, protocolText } from '../report/tables';
import { NgateError } from '../util/errors';
import { addModelOptions, addOutputOptions, Context, Define, ModelOpts, openModel, readPairs, seconds } from './shared';

/** Where each benchmark goes in the tables, in the paper's column order. */
const COLUMNS: Record<BenchmarkKind, { group: 'safety' | 'utility'; label: string; order: number }> = {
  mllmguard: { group: 'safety', label: 'MLLMGuard', order: 1 },
  scienceqa: { group: 'utility', label: 'ScienceQA', order: 2 },
  mme: { group: 'utility', label: 'MME', order: 3 },
  pope: { group: 'utility', label: 'POPE', order: 4 },
};

async function compareCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const config = readCompareConfig(o.config as string);
  const t0 = Date.now();
  // Everything read and checked before the model loads.
  const train = await readPairs(ctx, config.pairs.train, 'pairs.train');
  const test = await readPairs(ctx, config.pairs.test, 'pairs.test');
  const validation = config.pairs.validation ? await readPairs(ctx, config.pairs.validation, 'pairs.validation') : undefined;
  const sets: EvalSet[] = [{ name: 'PrivacyPair-test', kind: 'pairs', pairs: test, column: { group: 'safety', label: 'PrivacyPair-test' } }];
  const benchmarks = [...(config.benchmarks ?? [])].sort((a, b) => COLUMNS[a.kind].order - COLUMNS[b.kind].order);
  const seen = new Set<string>();
  for (const b of benchmarks) {
    if (seen.has(b.kind)) throw new NgateError('ERR_INPUT', `names ${b.kind} twice (POPE: give the folder of its three files to read them all)`, { file: config.file, field: 'benchmarks' });
    seen.add(b.kind);
    ctx.log(`reading ${b.kind} from ${b.data}`);
    const all = readBenchmark(b);
    const items = sampleItems(all, b.limit, b.seed ?? 0);
    sets.push({
      name: b.kind, kind: b.kind, items, column: { group: COLUMNS[b.kind].group, label: COLUMNS[b.kind].label },
      source: { data: b.data, images: b.images ?? null, available: all.length, limit: b.limit ?? null, seed: b.seed ?? 0, ...(b.split ? { split: b.split } : {}), ...(b.language ? { language: b.language } : {}) },
    });
  }
  const outDir = path.resolve((o.out as string | undefined) ?? config.out!);
  const mo: ModelOpts = { model: (o.model as string | undefined) ?? config.model, device: (o.device as string | undefined) ?? config.device, dtype: (o.dtype as ModelOpts['dtype']) ?? config.dtype };
  const model = await openModel(ctx, mo);
  try {
    const res = await runCompare(model, {
      rows: config.rows, train, sets,
      layers: 'locate' in config.layers ? { locate: { validation: validation!, ...config.layers.locate }, multiWidth: config.layers.multiWidth } : config.layers,
      threshold: config.threshold, mask: config.mask, edit: config.edit, dinm: config.dinm, evaluate: config.evaluate,
      signal: ctx.signal, onProgress: ctx.progress, log: (l) => ctx.log(l),
    });
    ctx.checkAborted();
    const report: CompareReport = {
      format: COMPARE_REPORT_FORMAT, version: COMPARE_REPORT_VERSION, createdAt: new Date().toISOString(),
      model: { dir: model.dir, numLayers: model.config.numLayers, hiddenSize: model.config.hiddenSize, device: model.device, dtype: model.dtype },
      config: config.file,
      settings: { ...res.settings, sets: (res.settings.sets as CompareReport['settings']['sets']) },
      layers: { single: res.layers.single, multi: res.layers.multi, how: res.layers.how, ...(res.layers.locate ? { locate: res.layers.locate } : {}) },
      gates: { ...(res.gates.single ? { single: res.gates.single.counts } : {}), ...(res.gates.multi ? { multi: res.gates.multi.counts } : {}) },
      dinmLocation: res.dinmLocation ?? null,
      train: res.train,
      rows: res.rows,
      timings: { ...res.timings, total: seconds(t0) },
    };
    const files = writeCompareReport(outDir, report);
    const t1 = protocolTable(report.rows, report.settings.sets, 1), t2 = protocolTable(report.rows, report.settings.sets, 2);
    ctx.emit({ outDir, files, layers: report.layers, dinmLayer: report.dinmLocation?.layer ?? null, table1: t1, table2: t2, timings: report.timings }, [
      ...(t1.values.length ? ['Table 1 (methods)', protocolText(t1), ''] : []),
      ...(t2.values.length ? ['Table 2 (the gate)', protocolText(t2), ''] : []),
      `layers: single ${report.layers.single}, multi ${report.layers.multi.join(', ')}${report.dinmLocation ? `, DINM ${report.dinmLocation.layer}` : ''}`,
      `report: ${files.summary}`, `        ${files.json} (every raw answer)`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}

export function addCompareCommand(define: Define): Command {
  return addOutputOptions(addModelOptions(define('compare', 'the rows of Tables 1 and 2 (baseline, DINM, Neural Gate single/multi-layer with and without the gate) from one config', compareCommand)
    .requiredOption('--config <file>', 'compare.json: pairs, rows, layers, settings, benchmarks (see the README)')
    .option('--out <dir>', 'report folder (default: the config\'s "out", else compare-report/ beside it)')));
}
