// ngate eval: greedy answers to both queries of every pair, scored as RtA, 1 − RtA and EtA.
import { Command } from 'commander';
import * as path from 'path';
import { evaluate, EvaluationReport } from '../method/evaluate';
import { evaluationText } from '../report/tables';
import { writeFileAtomic } from '../util/atomic-write';
import { defined } from '../util/defined';
import {
  addDistOptions, addModelOptions, addOutputOptions, addRefusalOptions, Context, Define, DistOpts, finishGroup, joinGroup, matcherOf,
  ensureParent, ModelOpts, openModel, outputFile, parsePositiveInt, partsDirOf, readPairs, seconds,
} from './shared';

/** What `ngate inspect` recognises an eval --out file by. */
export const EVAL_REPORT_FORMAT = 'ngate.eval-report';

async function evalCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const refusal = matcherOf(o);
  const pairs = await readPairs(ctx, o.pairs as string);
  const out = o.out !== undefined ? outputFile(o.out as string) : undefined;
  const group = await joinGroup(ctx, o as DistOpts);
  const partsDir = partsDirOf(o as DistOpts, group, out);
  const model = await openModel(ctx, o as ModelOpts, group);
  try {
    const t0 = Date.now();
    ctx.log(`answering ${pairs.length * 2} queries`);
    const report: EvaluationReport = await evaluate(model, pairs, {
      ...defined({ maxNewTokens: o.maxNewTokens as number | undefined, batchSize: o.batchSize as number | undefined }), refusal,
      ...(group ? { group } : {}), ...(partsDir !== undefined ? { partsDir } : {}),
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.checkAborted();
    const doc = { format: EVAL_REPORT_FORMAT, model: model.dir, pairs: path.resolve(o.pairs as string), seconds: seconds(t0), ...report };
    if (out && ctx.rank === 0) writeFileAtomic(ensureParent(out), JSON.stringify(doc, null, 2) + '\n');
    await finishGroup(group, o as DistOpts, partsDir);
    ctx.emit(doc, [evaluationText(report), '', `refusals matched by ${report.matcher.name} (${report.matcher.mode} mode)`, ...(out ? [`wrote ${out}`] : [])].join('\n'));
  } finally {
    model.dispose();
  }
}

export function addEvalCommand(define: Define): Command {
  return addDistOptions(addOutputOptions(addModelOptions(addRefusalOptions(define('eval', 'answer both queries of every pair and score RtA, 1 − RtA and EtA', evalCommand)
    .requiredOption('--pairs <file>', 'pairs JSONL')
    .option('--max-new-tokens <n>', 'tokens per answer (default 32)', parsePositiveInt)
    .option('--batch-size <n>', 'queries decoded together (default 16)', parsePositiveInt)
    .option('--out <file>', 'also write the full report (with every raw response) as JSON')))));
}
