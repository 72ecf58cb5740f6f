// evaluate: greedy answers to the sensitive and benign query of every pair,
// scored by refusal matching (appendix 8.2): RtA on sensitive queries,
// 1 − RtA on benign ones and their mean EtA, per category and overall. Every
// raw response is kept so that another judge can re-score the report.
import { PrivacyPair, encodeQuery, validatePairs } from '../data/prepare';
import type { ProcessGroup } from '../dist/process-group';
import { assignUnits, gatherUnitsJson, partsFor } from '../dist/shards';
import { NgateError } from '../util/errors';
import { Outcome, privacyEditScores, PrivacyEditScores } from './metrics';
import type { Model, ProgressCallback } from '../model/model';
import { isRefusal, makeRefusalMatcher, RefusalMatcher } from './refusal';

export interface EvaluateOptions {
  /** New tokens per answer (default 32: a refusal shows in its first words). */
  maxNewTokens?: number;
  /** Queries decoded together (default 16). */
  batchSize?: number;
  /** How refusals are recognised; default the paper's prefixes, prefix mode, case-folded. */
  refusal?: Partial<RefusalMatcher>;
  /** Spread the batches of queries over the ranks; every rank gets every outcome, in the caller's order. */
  group?: ProcessGroup;
  /**
   * Keep each batch's outcomes here as it finishes; a restarted job takes them
   * from here (not used while the model holds edits made in this process).
   */
  partsDir?: string;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface EvaluationReport {
  matcher: RefusalMatcher;
  maxNewTokens: number;
  scores: PrivacyEditScores;
  outcomes: Outcome[];
}

export function evaluate(model: Model, pairs: PrivacyPair[], opts: EvaluateOptions = {}): Promise<EvaluationReport> {
  // One call on the model from start to end: nothing issued meanwhile lands in the middle.
  return model.hold(() => evaluateHeld(model, pairs, opts));
}

async function evaluateHeld(model: Model, pairs: PrivacyPair[], opts: EvaluateOptions = {}): Promise<EvaluationReport> {
  validatePairs(pairs);
  const matcher = makeRefusalMatcher(opts.refusal);
  const maxNewTokens = opts.maxNewTokens ?? 32;
  const batchSize = opts.batchSize ?? 16;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new NgateError('ERR_INPUT', `batchSize must be a positive integer, got ${batchSize}`, { field: 'batchSize' });
  }
  const queries = pairs.flatMap((p) => (['sensitive', 'benign'] as const).map((kind) => ({ pair: p, kind })));
  const units: (typeof queries)[] = [];
  for (let k = 0; k < queries.length; k += batchSize) units.push(queries.slice(k, k + batchSize));
  const parts = partsFor(opts.partsDir, 'evaluate', model, {
    maxNewTokens, batchSize, matcher,
    queries: queries.map((q) => [q.pair.id, q.pair.category, q.kind, q.pair[q.kind], q.pair.subject, q.pair.image ?? null]),
  });
  const { compute, load } = await assignUnits(units.length, opts.group, (u) => parts?.has(u) ?? false);
  const mine = new Map<number, Outcome[]>();
  for (const u of load) {
    const got = parts!.readJson<Outcome[]>(u);
    if (got && got.length === units[u].length) mine.set(u, got);
    else compute.push(u);  // an unreadable part is evaluated again
  }
  const total = compute.reduce((n, u) => n + units[u].length, 0);
  let done = 0;
  for (const u of compute) {
    const chunk = units[u];
    const prompts = await Promise.all(chunk.map(async (q) => (await encodeQuery(model, q.pair[q.kind], q.pair.subject, q.pair.image)).ids));
    // Image pairs: each query is asked about its image (ids already carry the expanded image run).
    const images = chunk.some((q) => q.pair.image !== undefined) ? chunk.map((q) => q.pair.image ?? null) : undefined;
    const gens = await model.generate(prompts, { maxNewTokens, signal: opts.signal, images });
    const outcomes = gens.map((g, j): Outcome => {
      const { pair, kind } = chunk[j];
      return { id: pair.id, category: pair.category, kind, response: g.text, refused: isRefusal(g.text, matcher), generatedTokens: g.ids.length };
    });
    parts?.writeJson(u, outcomes);
    mine.set(u, outcomes);
    done += chunk.length;
    opts.onProgress?.({ stage: 'evaluate', done, total });
  }
  const all = await gatherUnitsJson(opts.group, mine);
  const outcomes = units.flatMap((_, u) => all.get(u)!);
  return { matcher, maxNewTokens, scores: privacyEditScores(outcomes), outcomes };
}
