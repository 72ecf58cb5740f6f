// ngate bench <kind>: one benchmark of Table 1 (POPE, MME, ScienceQA,
// MLLMGuard's privacy questions) read from its release's files, asked of the
// model, scored by its own rule; the report keeps every raw answer.
import { Command } from 'commander';
import * as path from 'path';
import { evaluateBenchmark } from '../eval/benchmark';
import { BENCHMARK_KINDS, BenchmarkKind, BenchmarkReport } from '../eval/types';
import { fmt, textTable } from '../report/tables';
import { writeFileAtomic } from '../util/atomic-write';
import {
  addModelOptions, addOutputOptions, addRefusalOptions, Context, Define, matcherOf, ModelOpts, openModel, outputFile,
  parsePositiveInt, parseSeed, seconds, UsageError,
  ensureParent,
} from './shared';

/** What `ngate inspect` recognises a bench --out file by. */
export const BENCH_REPORT_FORMAT = 'ngate.bench-report';

/** The scores of a benchmark report as text. */
export function benchText(r: BenchmarkReport): string {
  const c = r.counts;
  const lines = [
    `${r.kind}: ${r.metric === 'rta' ? 'RtA' : 'accuracy'} ${fmt(r.score, 4)} on ${c.total} questions` +
      ` (${c.correct} ${r.metric === 'rta' ? 'refused' : 'right'}, ${c.wrong} ${r.metric === 'rta' ? 'answered' : 'wrong'}, ${c.unparseable} unparseable, counted wrong)`,
    `parsing rule ${r.parsingRule.name}: ${r.parsingRule.description}`,
  ];
  const d = r.details as Record<string, unknown>;
  if (r.kind === 'mme') {
    const score = d.score as { total: number; perception: number; cognition: number };
    lines.push(`accuracy+ ${fmt(d.accuracyPlus as number | null, 4)} over ${String(d.images)} images; MME score ${score.total.toFixed(2)} (perception ${score.perception.toFixed(2)}, cognition ${score.cognition.toFixed(2)})`);
    const byTask = d.byTask as Record<string, { total: number; accuracy: number | null; accuracyPlus: number | null; score: number | null; unparseable: number }>;
    lines.push(textTable(['task', 'questions', 'accuracy', 'accuracy+', 'score', 'unparseable'],
      Object.entries(byTask).map(([t, x]) => [t, String(x.total), fmt(x.accuracy, 4), fmt(x.accuracyPlus, 4), fmt(x.score, 2), String(x.unparseable)])));
  } else if (r.kind === 'pope') {
    const o = d.official as { accuracy: number | null; precision: number | null; recall: number | null; f1: number | null; yesRatio: number | null };
    lines.push(`POPE's own reading (an unreadable answer is "yes"): accuracy ${fmt(o.accuracy, 4)}, precision ${fmt(o.precision, 4)}, recall ${fmt(o.recall, 4)}, F1 ${fmt(o.f1, 4)}, yes ratio ${fmt(o.yesRatio, 4)}`);
  }
  return lines.join('\n');
}

async function benchCommand(ctx: Context, o: Record<string, unknown>, args: string[]): Promise<void> {
  const kind = args[0] as BenchmarkKind;
  if (!BENCHMARK_KINDS.includes(kind)) throw new UsageError(`the benchmark must be one of ${BENCHMARK_KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  const refusal = matcherOf(o);
  const out = outputFile((o.out as string | undefined) ?? `bench-${kind}.json`);
  const model = await openModel(ctx, o as ModelOpts);
  try {
    const t0 = Date.now();
    const report = await evaluateBenchmark(model, {
      kind, data: path.resolve(o.data as string), ...(o.images !== undefined ? { images: path.resolve(o.images as string) } : {}),
      limit: o.limit as number | undefined, seed: o.seed as number | undefined, split: o.split as string | undefined, language: o.language as string | undefined,
      refusal, maxNewTokens: o.maxNewTokens as number | undefined, batchSize: o.batchSize as number | undefined,
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.checkAborted();
    const doc = { format: BENCH_REPORT_FORMAT, model: model.dir, seconds: seconds(t0), ...report };
    writeFileAtomic(ensureParent(out), JSON.stringify(doc, null, 2) + '\n');
    ctx.emit(doc, [benchText(report), `wrote ${out} (every raw answer)`].join('\n'));
  } finally {
    model.dispose();
  }
}

export function addBenchCommand(define: Define): Command {
  return addOutputOptions(addModelOptions(addRefusalOptions(define('bench', 'one benchmark of Table 1 from its own files: pope, mme, scienceqa or mllmguard (privacy)', benchCommand)
    .argument('<kind>', `the benchmark: ${BENCHMARK_KINDS.join(', ')}`)
    .requiredOption('--data <path>', 'its question files: POPE\'s coco_pope_*.json (or their folder), MME\'s release folder (or <task>.txt answer files), ScienceQA\'s folder of problems.json and pid_splits.json, MLLMGuard\'s privacy folder (or its CSV)')
    .option('--images <dir>', 'the folder of its images (POPE: COCO val2014; the others default to the release\'s own folder)')
    .option('--limit <n>', 'ask at most n questions, chosen at random (MME: whole images)', parsePositiveInt)
    .option('--seed <n>', 'seed of that choice (default 0)', parseSeed)
    .option('--split <name>', 'ScienceQA split (default test)')
    .option('--language <lan>', 'MLLMGuard language: en (default, as the paper), zh or all')
    .option('--max-new-tokens <n>', 'tokens per answer (default 32)', parsePositiveInt)
    .option('--batch-size <n>', 'questions decoded together (default 8)', parsePositiveInt)
    .option('--out <file>', 'the report with every raw answer (default bench-<kind>.json)'))));
}
