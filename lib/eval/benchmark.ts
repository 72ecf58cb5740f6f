// evaluateBenchmark: a benchmark read from the files its release has, asked
// of the model (greedy, one image per question), every raw answer kept and
// scored by the benchmark's own rule, with unparseable answers counted wrong
// and counted on their own.
import { encodeQuestion } from '../data/prepare';
import type { RefusalMatcher } from '../method/refusal';
import type { Model, ProgressCallback } from '../model/model';
import { NgateError } from '../util/errors';
import { seededRandom } from '../util/random';
import { readMllmGuard, scoreMllmGuard } from './mllmguard';
import { readMme, scoreMme } from './mme';
import { readPope, scorePope } from './pope';
import { readScienceQa, scoreScienceQa } from './scienceqa';
import { BENCHMARK_KINDS, BenchmarkItem, BenchmarkKind, BenchmarkReport, BenchmarkScore } from './types';

export interface ReadBenchmarkOptions {
  kind: BenchmarkKind;
  /** The benchmark's question files (see each reader: a file or the folder of the release). */
  data: string;
  /** The folder of its images (POPE: COCO val2014; others default to the release's own folder). */
  images?: string;
  /** ScienceQA's split (default "test"). */
  split?: string;
  /** MLLMGuard's language (default "en", as the paper; "all" for every row). */
  language?: string;
}

export interface EvaluateBenchmarkOptions extends ReadBenchmarkOptions {
  /** Ask at most this many questions, chosen at random with `seed` (MME: whole images). Default: all. */
  limit?: number;
  /** Seed of the choice (default 0). */
  seed?: number;
  /** MLLMGuard: how refusals are recognised (default the paper's appendix 8.2 prefixes). */
  refusal?: Partial<RefusalMatcher>;
  /** New tokens per answer (default 32). */
  maxNewTokens?: number;
  /** Questions decoded together (default 8). */
  batchSize?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

function checkKind(kind: unknown): BenchmarkKind {
  if (!BENCHMARK_KINDS.includes(kind as BenchmarkKind)) {
    throw new NgateError('ERR_INPUT', `must be one of ${BENCHMARK_KINDS.join(', ')}, got ${JSON.stringify(kind)}`, { field: 'kind' });
  }
  return kind as BenchmarkKind;
}

/** The questions of a benchmark, read and checked (every image must exist). */
export function readBenchmark(opts: ReadBenchmarkOptions): BenchmarkItem[] {
  const kind = checkKind(opts.kind);
  if (typeof opts.data !== 'string') throw new NgateError('ERR_INPUT', 'must be the path of the benchmark\'s files', { field: 'data' });
  switch (kind) {
    case 'pope':
      if (opts.images === undefined) throw new NgateError('ERR_INPUT', 'POPE names COCO val2014 images: give their folder', { field: 'images' });
      return readPope(opts.data, opts.images);
    case 'mme': return readMme(opts.data, opts.images);
    case 'scienceqa': return readScienceQa(opts.data, opts.images, opts.split ?? 'test');
    case 'mllmguard': return readMllmGuard(opts.data, opts.images, opts.language ?? 'en');
  }
}

/**
 * At most `limit` questions, chosen at random with `seed`, in their original
 * order. Questions of one group (an MME image) are taken or left together.
 */
export function sampleItems(items: BenchmarkItem[], limit: number | undefined, seed = 0): BenchmarkItem[] {
  if (limit === undefined) return items;
  if (!Number.isInteger(limit) || limit < 1) throw new NgateError('ERR_INPUT', `must be a positive integer, got ${JSON.stringify(limit)}`, { field: 'limit' });
  if (!Number.isSafeInteger(seed)) throw new NgateError('ERR_INPUT', `must be an integer, got ${JSON.stringify(seed)}`, { field: 'seed' });
  if (limit >= items.length) return items;
  const groups = new Map<string, number[]>();
  items.forEach((it, i) => {
    const g = it.group ?? `#${it.id}`;
    groups.set(g, [...(groups.get(g) ?? []), i]);
  });
  const units = [...groups.values()];
  const rand = seededRandom(seed, 'benchmark-sample');
  for (let i = units.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [units[i], units[j]] = [units[j], units[i]];
  }
  const chosen: number[] = [];
  for (const u of units) {
    if (chosen.length + u.length > limit) continue;
    chosen.push(...u);
    if (chosen.length === limit) break;
  }
  if (chosen.length === 0) chosen.push(...units[0]);
  return chosen.sort((a, b) => a - b).map((i) => items[i]);
}

/** Scores raw answers (one per question, in order) by the benchmark's rule. */
export function scoreBenchmark(kind: BenchmarkKind, items: BenchmarkItem[], responses: string[], opts: { refusal?: Partial<RefusalMatcher> } = {}): BenchmarkScore {
  switch (checkKind(kind)) {
    case 'pope': return scorePope(items, responses);
    case 'mme': return scoreMme(items, responses);
    case 'scienceqa': return scoreScienceQa(items, responses);
    case 'mllmguard': return scoreMllmGuard(items, responses, opts.refusal);
  }
}

/**
 * The model's greedy answers to the questions, each asked as one user turn of
 * its chat template with its image (LLaVA: "<image>\n" + question; MiniGPT-4:
 * its Chat prompt).
 */
export async function askQuestions(model: Model, items: BenchmarkItem[],
  opts: { maxNewTokens?: number; batchSize?: number; signal?: AbortSignal; onProgress?: ProgressCallback; stage?: string; what?: string } = {}):
  Promise<{ responses: string[]; generatedTokens: number[] }> {
  const maxNewTokens = opts.maxNewTokens ?? 32;
  const batchSize = opts.batchSize ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new NgateError('ERR_INPUT', `must be a positive integer, got ${batchSize}`, { field: 'batchSize' });
  if (items.some((it) => it.image !== undefined) && model.imageTokenCount === 0) {
    throw new NgateError('ERR_INPUT', `the ${opts.what ?? 'benchmark'} questions are about images, but this model (${model.dir}) has no vision tower`, { field: 'model' });
  }
  const responses: string[] = [];
  const generatedTokens: number[] = [];
  for (let k = 0; k < items.length; k += batchSize) {
    const chunk = items.slice(k, k + batchSize);
    const prompts = await Promise.all(chunk.map((it) => encodeQuestion(model, it.prompt, it.image !== undefined)));
    const images = chunk.some((it) => it.image !== undefined) ? chunk.map((it) => it.image ?? null) : undefined;
    const gens = await model.generate(prompts, { maxNewTokens, images, signal: opts.signal });
    for (const g of gens) { responses.push(g.text.trim()); generatedTokens.push(g.ids.length); }
    opts.onProgress?.({ stage: opts.stage ?? 'benchmark', done: Math.min(k + batchSize, items.length), total: items.length });
  }
  return { responses, generatedTokens };
}

/**
 * Reads a benchmark, asks (a sample of) its questions and scores the answers:
 * accuracy (POPE, MME, ScienceQA) or RtA (MLLMGuard), the counts, the
 * parsing rule by name, what the benchmark's own scoring reports, and every
 * raw answer.
 */
export async function evaluateBenchmark(model: Model, opts: EvaluateBenchmarkOptions): Promise<BenchmarkReport> {
  const kind = checkKind(opts?.kind);
  const all = readBenchmark(opts);
  const seed = opts.seed ?? 0;
  const items = sampleItems(all, opts.limit, seed);
  const maxNewTokens = opts.maxNewTokens ?? 32;
  const { responses, generatedTokens } = await askQuestions(model, items, {
    maxNewTokens, batchSize: opts.batchSize, signal: opts.signal, onProgress: opts.onProgress, stage: kind, what: kind,
  });
  const score = scoreBenchmark(kind, items, responses, { refusal: opts.refusal });
  score.outcomes.forEach((o, i) => { o.generatedTokens = generatedTokens[i]; });
  return {
    ...score,
    source: { data: opts.data, images: opts.images ?? null, available: all.length, limit: opts.limit ?? null, seed },
    maxNewTokens,
  };
}
