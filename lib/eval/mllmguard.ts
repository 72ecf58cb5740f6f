// MLLMGuard (Gu et al. 2024, github.com/Carol-gutianle/MLLMGuard; data on the
// Hugging Face hub, Carol0110/MLLMGuard): its privacy dimension is a folder
// data/privacy/ of prompt.csv (en.csv and zh.csv in the desensitised public
// split) and imgs/. MLLMGuard's own reader (utils.process_data) takes the
// image from the first column, the prompt from the second and the language
// from the fifth; we read them by header (Image, Prompt, Lan) and fall back
// to those positions. The paper uses the English privacy questions and scores
// RtA with the appendix 8.2 refusal prefixes (not MLLMGuard's GuardRank judge).
import * as fs from 'fs';
import * as path from 'path';
import { makeRefusalMatcher, isRefusal, RefusalMatcher } from '../method/refusal';
import { existing, fileError, findImage, outcomesOf, rate, tally } from './common';
import { parseCsv } from './csv';
import { refusalRule } from './parse';
import type { BenchmarkItem, BenchmarkScore } from './types';

function csvOf(data: string): string {
  const abs = existing(data, 'data');
  if (fs.statSync(abs).isFile()) return abs;
  for (const name of ['prompt.csv', 'en.csv']) {
    const f = path.join(abs, name);
    if (fs.existsSync(f)) return f;
  }
  throw fileError(abs, 'holds no prompt.csv (nor en.csv): give MLLMGuard\'s privacy folder or its CSV file');
}

/**
 * The privacy questions of MLLMGuard in one language (default "en", as the
 * paper; "all" keeps every row). `images` defaults to imgs/ beside the CSV.
 */
export function readMllmGuard(data: string, images?: string, language = 'en'): BenchmarkItem[] {
  const file = csvOf(data);
  const imageDir = existing(images ?? path.join(path.dirname(file), 'imgs'), 'images', 'dir');
  const rows = parseCsv(fs.readFileSync(file, 'utf8'), file);
  if (rows.length < 2) throw fileError(file, 'holds no questions (a header and at least one row are expected)');
  const header = rows[0].map((h) => h.trim().toLowerCase());
  const col = (name: string, fallback: number) => (header.includes(name) ? header.indexOf(name) : fallback);
  const iImage = col('image', 0), iPrompt = col('prompt', 1), iLan = col('lan', 4);
  const items: BenchmarkItem[] = [];
  rows.slice(1).forEach((r, k) => {
    const where = `row ${k + 1}`;
    if (r.length === 1 && r[0].trim() === '') return;
    if (r.length <= Math.max(iImage, iPrompt)) throw fileError(file, `${where}: has ${r.length} column${r.length === 1 ? '' : 's'}, too few for the image and the prompt`);
    const lan = r[iLan]?.trim() ?? '';
    if (language !== 'all' && lan !== language) return;
    const name = r[iImage].trim(), prompt = r[iPrompt].trim();
    if (name === '' || prompt === '') throw fileError(file, `${where}: the image or the prompt is empty`);
    const image = findImage([path.join(imageDir, name)], file, where);
    items.push({ id: `privacy/${k}`, image, prompt, ...(lan !== '' ? { task: lan } : {}) });
  });
  if (items.length === 0) throw fileError(file, `holds no privacy question in language ${JSON.stringify(language)}`);
  return items;
}

/** RtA: the share of questions refused, by refusal matching. */
export function scoreMllmGuard(items: BenchmarkItem[], responses: string[], refusal?: Partial<RefusalMatcher>): BenchmarkScore {
  const matcher = makeRefusalMatcher(refusal);
  const outcomes = outcomesOf(items, responses, (_item, r) => {
    const refused = isRefusal(r, matcher);
    return { parsed: refused ? 'refusal' : 'answer', correct: refused };
  });
  const counts = tally(outcomes);
  return {
    kind: 'mllmguard', metric: 'rta', score: rate(counts.correct, counts.total), parsingRule: refusalRule(matcher.name, matcher.mode), counts,
    details: { matcher }, outcomes,
  };
}
