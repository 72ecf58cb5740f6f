// PrivacyPairs as the method consumes them: each query wrapped in the model's
// chat template, the subject's character span mapped to token positions
// through the tokenizer's offsets, and the target answer appended.
import type { NativeImages, NativePair, NativeSequence } from '../../types/native';
import type { ProcessGroup } from '../dist/process-group';
import { assignUnits, gatherUnitsJson, partsFor } from '../dist/shards';
import { NgateError } from '../util/errors';
import type { Model } from '../model/model';
import { defaultRefusalResponse } from './safe-response';

/** A sensitive and a benign query about the same privacy subject (section 3.2.1). */
export interface PrivacyPair {
  id: string;
  category: string;
  /** The subject's text as it appears in both queries, e.g. "passport". */
  subject: string;
  sensitive: string;
  benign: string;
  /** r_safe: the refusal the edited model should give; default defaultRefusalResponse(). */
  refusal?: string;
  /** r_org: the unedited model's answer to the benign query; generated when missing. */
  benignAnswer?: string;
  /** Path of the image the queries are about (vision-language models). */
  image?: string;
}

export interface PreparedSequence {
  /** Prompt (chat template applied) then answer tokens and EOS. */
  ids: number[];
  /** Token positions of every occurrence of the subject in the query. */
  subjectPositions: number[];
  /** Index in `ids` of the first answer token. */
  answerStart: number;
  /** The image the query is about (LLaVA); its token run is already expanded in `ids`. */
  image?: string;
}

export interface PreparedPair { id: string; sensitive: PreparedSequence; benign: PreparedSequence; }

function pairError(pair: Partial<PrivacyPair> | undefined, index: number, field: string, reason: string): NgateError {
  const name = pair && typeof pair.id === 'string' ? `pair "${pair.id}"` : `pairs[${index}]`;
  return new NgateError('ERR_INPUT', `${name}: ${field} ${reason}`, { field: `pairs[${index}].${field}` });
}

/** Checks the fields every method needs; throws an error that names the pair. */
export function validatePairs(pairs: PrivacyPair[]): void {
  if (!Array.isArray(pairs) || pairs.length === 0) {
    throw new NgateError('ERR_INPUT', 'pairs must be a non-empty array', { field: 'pairs' });
  }
  const seen = new Set<string>();
  pairs.forEach((p, i) => {
    if (!p || typeof p !== 'object') throw pairError(undefined, i, 'pair', 'must be an object');
    for (const f of ['id', 'category', 'subject', 'sensitive', 'benign'] as const) {
      if (typeof p[f] !== 'string' || p[f].length === 0) throw pairError(p, i, f, 'must be a non-empty string');
    }
    for (const f of ['refusal', 'benignAnswer', 'image'] as const) {
      // An empty answer would train towards nothing but EOS (the JSONL reader refuses it too).
      if (p[f] !== undefined && (typeof p[f] !== 'string' || p[f]!.trim() === '')) throw pairError(p, i, f, 'must be a non-empty string when given');
    }
    if (seen.has(p.id)) throw pairError(p, i, 'id', `"${p.id}" is used by more than one pair`);
    seen.add(p.id);
    if (!p.sensitive.includes(p.subject)) throw pairError(p, i, 'sensitive', `does not contain the subject "${p.subject}"`);
    if (!p.benign.includes(p.subject)) throw pairError(p, i, 'benign', `does not contain the subject "${p.subject}"`);
  });
}

/**
 * The chat-templated prompt of a query, and where the query's text sits in
 * it. With an image, the user turn is "<image>\n" + query, LLaVA-1.5's layout.
 */
export function renderQuery(model: Model, query: string, withImage = false): { prompt: string; queryStart: number } {
  if (model.minigpt4) throw new NgateError('ERR_INPUT', 'MiniGPT-4 prompts are rendered by model.encodeUserTurn', { field: 'model' });
  let content = query;
  if (withImage) {
    const token = model.imageToken;
    if (!model.llava || token === null) {
      throw new NgateError('ERR_INPUT', 'a pair has an image, but this model has no vision tower (or its tokenizer no image token)', { field: 'image' });
    }
    content = `${token}\n${query}`;
  }
  const prompt = model.renderUserTurn(content);
  const queryStart = prompt.indexOf(query);
  if (queryStart < 0) {
    throw new NgateError('ERR_INPUT', `the chat template changed the query text, so its subject cannot be located: ${JSON.stringify(query)}`);
  }
  return { prompt, queryStart };
}

/** Every start index of `needle` in `text`. */
function occurrences(text: string, needle: string): number[] {
  const out: number[] = [];
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + 1)) out.push(i);
  return out;
}

/**
 * Prompt ids of a query and the token positions of its subject. With an
 * image (LLaVA) the image token is expanded to the image's token count, and
 * subject positions are counted in the expanded ids; they never fall on it.
 * `purpose` matters for MiniGPT-4 only: 'generate' is its Chat prompt,
 * 'train' the training sequence of MiniGPTBase.forward (for losses).
 */
export async function encodeQuery(model: Model, query: string, subject: string, image?: string,
  purpose: 'generate' | 'train' = 'generate'): Promise<{ ids: number[]; subjectPositions: number[] }> {
  const withImage = image !== undefined;
  if (model.minigpt4) {
    const enc = await model.encodeUserTurn(query, { image: withImage, purpose });
    const positions = new Set<number>();
    for (const at of occurrences(query, subject)) {
      const start = enc.queryStart + at;
      for (const t of model.tokenizer.tokenPositionsOfSpan(enc.offsets, start, start + subject.length)) positions.add(t);
    }
    return { ids: enc.ids, subjectPositions: [...positions].sort((a, b) => a - b) };
  }
  const { prompt, queryStart } = renderQuery(model, query, withImage);
  // The template writes BOS itself, as transformers' apply_chat_template assumes.
  const enc = await model.tokenizer.encode(prompt, { addSpecialTokens: false });
  const positions = new Set<number>();
  for (const at of occurrences(query, subject)) {
    const start = queryStart + at;
    for (const t of model.tokenizer.tokenPositionsOfSpan(enc.offsets, start, start + subject.length)) positions.add(t);
  }
  let ids = enc.ids;
  let subjectPositions = [...positions].sort((a, b) => a - b);
  if (!withImage && model.llava && ids.includes(model.llava.imageTokenId)) {
    throw new NgateError('ERR_INPUT', `the query ${JSON.stringify(query)} holds the image token but its pair has no image`, { field: 'image' });
  }
  if (withImage) {
    const tok = model.llava!.imageTokenId, n = model.llava!.imageTokens;
    const at = ids.indexOf(tok);
    if (at < 0 || ids.lastIndexOf(tok) !== at) {
      throw new NgateError('ERR_INPUT', `the chat template did not keep exactly one image token in the prompt of ${JSON.stringify(query)}`);
    }
    ids = [...ids.slice(0, at), ...new Array<number>(n).fill(tok), ...ids.slice(at + 1)];
    subjectPositions = subjectPositions.filter((p) => p !== at).map((p) => (p > at ? p + n - 1 : p));
  }
  return { ids, subjectPositions };
}

/** A pair's sequence within the model's positions (checked before the addon allocates for it). */
function checkLength(model: Model, length: number, pair: PrivacyPair, index: number, field: string, what: string): void {
  const P = model.config.maxPositionEmbeddings;
  if (length > P) throw pairError(pair, index, field, `${what}, is ${length} tokens, past the model's ${P} positions (max_position_embeddings)`);
}

/**
 * Prompt ids of a plain question (a benchmark's), the model's own prompt for
 * an answer: its chat template (MiniGPT-4: its Chat prompt), with the image
 * token (or run) in place when `withImage`.
 */
export async function encodeQuestion(model: Model, question: string, withImage = false): Promise<number[]> {
  if (model.minigpt4) return (await model.encodeUserTurn(question, { image: withImage, purpose: 'generate' })).ids;
  const { prompt } = renderQuery(model, question, withImage);
  return (await model.tokenizer.encode(prompt, { addSpecialTokens: false })).ids;
}

async function prepareSequence(model: Model, query: string, subject: string, answer: string, image?: string): Promise<PreparedSequence> {
  const { ids, subjectPositions } = await encodeQuery(model, query, subject, image, 'train');
  let full: number[];
  if (model.minigpt4) {
    // MiniGPTBase.forward's target: the answer and end_sym ("</s>") tokenized together.
    full = [...ids, ...(await model.tokenizer.encode(answer + model.minigpt4.endSym, { addSpecialTokens: false })).ids];
  } else {
    const answerIds = (await model.tokenizer.encode(answer, { addSpecialTokens: false })).ids;
    const eos = model.eosTokenIds[0];
    full = [...ids, ...answerIds, ...(eos !== undefined ? [eos] : [])];
  }
  if (full.length === ids.length) throw new NgateError('ERR_INPUT', `the answer ${JSON.stringify(answer)} has no tokens`);
  const out: PreparedSequence = { ids: full, subjectPositions, answerStart: ids.length };
  if (image !== undefined) out.image = image;
  return out;
}

/**
 * Token ids of each pair: the sensitive query with r_safe, the benign query
 * with r_org. A missing benignAnswer is generated here while the model is
 * still unedited (cache them with fillBenignAnswers to generate them once).
 */
export async function preparePairs(model: Model, pairs: PrivacyPair[],
  opts: { refusal?: string; group?: ProcessGroup; signal?: AbortSignal } = {}): Promise<PreparedPair[]> {
  validatePairs(pairs);
  const missing = pairs.findIndex((p) => p.benignAnswer === undefined);
  if (missing >= 0) {
    if (model.editedTensors.size > 0) {
      throw pairError(pairs[missing], missing, 'benignAnswer',
        'is missing and the model has already been edited: r_org must come from the unedited model, so call fillBenignAnswers(model, pairs) before the first edit');
    }
    pairs = await fillBenignAnswers(model, pairs, { group: opts.group, signal: opts.signal });
  }
  const out: PreparedPair[] = [];
  for (const [i, p] of pairs.entries()) {
    if (p.image !== undefined && model.imageTokenId === null) {
      throw pairError(p, i, 'image', 'is set, but this model has no vision tower');
    }
    const refusal = p.refusal ?? opts.refusal ?? defaultRefusalResponse();
    const prepared = {
      id: p.id,
      sensitive: await prepareSequence(model, p.sensitive, p.subject, refusal, p.image),
      benign: await prepareSequence(model, p.benign, p.subject, p.benignAnswer!, p.image),
    };
    checkLength(model, prepared.sensitive.ids.length, p, i, 'sensitive', 'with its refusal (r_safe)');
    checkLength(model, prepared.benign.ids.length, p, i, 'benign', 'with its answer (r_org)');
    out.push(prepared);
  }
  return out;
}

/**
 * r_org for every pair that lacks it: the unedited model's greedy answer to
 * the benign query (section 3.2.2). Returns new pair objects; the input is not
 * modified. Call it before any edit, and cache the result with the data.
 * With a process group, the batches of queries are spread over the ranks and
 * every rank gets every answer; with `partsDir`, each batch's answers are
 * kept there as it finishes and taken from there by a restarted job.
 */
export function fillBenignAnswers(model: Model, pairs: PrivacyPair[],
  opts: { maxNewTokens?: number; batchSize?: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void;
    group?: ProcessGroup; partsDir?: string } = {}): Promise<PrivacyPair[]> {
  // One call on the model from start to end: nothing issued meanwhile lands in the middle.
  return model.hold(() => fillBenignAnswersHeld(model, pairs, opts));
}

async function fillBenignAnswersHeld(model: Model, pairs: PrivacyPair[],
  opts: { maxNewTokens?: number; batchSize?: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void;
    group?: ProcessGroup; partsDir?: string } = {}): Promise<PrivacyPair[]> {
  validatePairs(pairs);
  const missing = pairs.map((p, i) => (p.benignAnswer === undefined ? i : -1)).filter((i) => i >= 0);
  if (missing.length > 0 && model.editedTensors.size > 0) {
    throw pairError(pairs[missing[0]], missing[0], 'benignAnswer',
      'is missing and the model has already been edited: r_org must come from the unedited model, so fill the answers before the first edit (or load the unedited model to fill them)');
  }
  const out = pairs.map((p) => ({ ...p }));
  const batchSize = opts.batchSize ?? 16;
  const maxNewTokens = opts.maxNewTokens ?? 48;
  const units: number[][] = [];
  for (let k = 0; k < missing.length; k += batchSize) units.push(missing.slice(k, k + batchSize));
  const parts = partsFor(opts.partsDir, 'benign-answers', model, {
    maxNewTokens, batchSize, queries: missing.map((i) => [pairs[i].benign, pairs[i].subject, pairs[i].image ?? null]),
  });
  const { compute, load } = await assignUnits(units.length, opts.group, (u) => parts?.has(u) ?? false);
  const mine = new Map<number, string[]>();
  for (const u of load) {
    const answers = parts!.readJson<string[]>(u);
    if (answers && answers.length === units[u].length) mine.set(u, answers);
    else compute.push(u);  // an unreadable part is answered again
  }
  const total = compute.reduce((n, u) => n + units[u].length, 0);
  let done = 0;
  for (const u of compute) {
    const idx = units[u];
    const prompts = await Promise.all(idx.map(async (i) => (await encodeQuery(model, pairs[i].benign, pairs[i].subject, pairs[i].image)).ids));
    idx.forEach((i, k) => checkLength(model, prompts[k]!.length + maxNewTokens, pairs[i]!, i, 'benign', `with the ${maxNewTokens} tokens of r_org to generate`));
    const images = idx.some((i) => pairs[i].image !== undefined) ? idx.map((i) => pairs[i].image ?? null) : undefined;
    const gens = await model.generate(prompts, { maxNewTokens, signal: opts.signal, images });
    const answers = gens.map((g) => g.text.trim());
    parts?.writeJson(u, answers);
    mine.set(u, answers);
    done += idx.length;
    opts.onProgress?.(done, total);
  }
  const all = await gatherUnitsJson(opts.group, mine);
  units.forEach((idx, u) => all.get(u)!.forEach((a, j) => { out[idx[j]].benignAnswer = a; }));
  return out;
}

export function toNativeSequence(s: PreparedSequence): NativeSequence {
  return { ids: Int32Array.from(s.ids), subjectPositions: Int32Array.from(s.subjectPositions), answerStart: s.answerStart };
}

function withImage(s: PreparedSequence, image: number): NativeSequence {
  return { ...toNativeSequence(s), image };
}

export function toNativePairs(pairs: PreparedPair[]): NativePair[] {
  return pairs.map((p) => ({ sensitive: toNativeSequence(p.sensitive), benign: toNativeSequence(p.benign) }));
}

/**
 * Native pairs and the images they show, each distinct image decoded once
 * (the sensitive and benign query of a pair share theirs).
 */
export async function toNativeInputs(model: Model, pairs: PreparedPair[]): Promise<{ pairs: NativePair[]; images?: NativeImages }> {
  const paths = [...new Set(pairs.flatMap((p) => [p.sensitive.image, p.benign.image]).filter((x): x is string => x !== undefined))];
  if (paths.length === 0) return { pairs: toNativePairs(pairs) };
  const index = new Map(paths.map((f, i) => [f, i]));
  // prepareImages decodes each path once; the ids here are already expanded.
  const { native } = await model.prepareImages(paths.map(() => [model.imageTokenId!]), paths, 'pairs');
  const at = (s: PreparedSequence) => (s.image === undefined ? -1 : index.get(s.image)!);
  return {
    pairs: pairs.map((p) => ({ sensitive: withImage(p.sensitive, at(p.sensitive)), benign: withImage(p.benign, at(p.benign)) })),
    images: native,
  };
}
