// ngate data: the PrivacyPair builder's train / test / held-out splits as JSONL files.
import { Command, InvalidArgumentError } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import type { PrivacyPair } from '../data/prepare';
import { writePairsFile } from '../data/pairs-file';
import { buildPrivacyPairs, PRIVACY_CATEGORIES, takeBalanced } from '../data/privacy-pair';
import { textTable } from '../report/tables';
import { writeFileAtomic } from '../util/atomic-write';
import { addOutputOptions, Context, Define, parsePositiveInt, parseSeed, parseShare, UsageError } from './shared';

function parseCategories(s: string): string[] {
  const ids = s.split(',').map((x) => x.trim()).filter(Boolean);
  const known = PRIVACY_CATEGORIES.map((c) => c.id);
  const bad = ids.find((id) => !known.includes(id));
  if (ids.length === 0 || bad !== undefined) throw new InvalidArgumentError(`expected categories among ${known.join(', ')}${bad ? `, got "${bad}"` : ''}.`);
  if (new Set(ids).size !== ids.length) throw new InvalidArgumentError(`"${s}" names a category twice.`);
  return ids;
}

/** What `ngate inspect` recognises summary.json by. */
export const DATA_SUMMARY_FORMAT = 'ngate.data-summary';

const SPLIT_FILES = { train: 'train.jsonl', test: 'test.jsonl', heldOut: 'held-out.jsonl' } as const;

async function dataCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const outDir = path.resolve(o.out as string);
  if (fs.existsSync(outDir) && !fs.statSync(outDir).isDirectory()) throw new UsageError(`--out is a file, expected a folder: ${outDir}`);
  const targets = [...Object.values(SPLIT_FILES), 'summary.json'].map((f) => path.join(outDir, f));
  const existing = targets.filter((f) => fs.existsSync(f));
  if (existing.length > 0 && !o.overwrite) throw new UsageError(`would replace ${existing.join(', ')} (pass --overwrite to replace them)`);
  const opts: Record<string, unknown> = {};
  if (o.seed !== undefined) opts.seed = o.seed;
  if (o.contextShare !== undefined) opts.contextShare = o.contextShare;
  if (o.categories !== undefined) opts.categories = o.categories;
  const built = buildPrivacyPairs(opts as Parameters<typeof buildPrivacyPairs>[0]);
  // --limit: at most N pairs per split, taken round-robin over the categories.
  const limit = o.limit as number | undefined;
  const data = limit === undefined ? built
    : { ...built, train: takeBalanced(built.train, limit), test: takeBalanced(built.test, limit), heldOut: takeBalanced(built.heldOut, limit) };
  if (limit !== undefined) opts.limit = limit;
  ctx.checkAborted();
  fs.mkdirSync(outDir, { recursive: true });
  const files: Record<string, string> = {};
  for (const [split, name] of Object.entries(SPLIT_FILES) as [keyof typeof SPLIT_FILES, string][]) {
    files[split] = path.join(outDir, name);
    await writePairsFile(files[split], data[split]);
  }
  const byCategory = (ps: PrivacyPair[]) => ps.reduce<Record<string, number>>((acc, p) => { acc[p.category] = (acc[p.category] ?? 0) + 1; return acc; }, {});
  const summary = {
    format: DATA_SUMMARY_FORMAT,
    options: opts,
    counts: { train: data.train.length, test: data.test.length, heldOut: data.heldOut.length },
    byCategory: { train: byCategory(data.train), test: byCategory(data.test), heldOut: byCategory(data.heldOut) },
    heldOutTemplates: data.heldOutTemplates, heldOutAttributes: data.heldOutAttributes,
    files: Object.fromEntries(Object.entries(SPLIT_FILES).map(([k, v]) => [k, v])),
  };
  files.summary = path.join(outDir, 'summary.json');
  writeFileAtomic(files.summary, JSON.stringify(summary, null, 2) + '\n');
  const cats = [...new Set([...data.train, ...data.test, ...data.heldOut].map((p) => p.category))].sort();
  ctx.emit({ outDir, ...summary, files }, [
    textTable(['category', 'train', 'test', 'held-out'], cats.map((c) => [c, String(summary.byCategory.train[c] ?? 0), String(summary.byCategory.test[c] ?? 0), String(summary.byCategory.heldOut[c] ?? 0)])),
    '', `wrote ${files.train}, ${files.test}, ${files.heldOut} and ${files.summary}`,
  ].join('\n'));
}

export function addDataCommand(define: Define): Command {
  return addOutputOptions(define('data', 'write PrivacyPair train / test / held-out splits as JSONL', dataCommand)
    .requiredOption('--out <dir>', 'folder for train.jsonl, test.jsonl, held-out.jsonl and summary.json')
    .option('--seed <n>', 'seed of the builder', parseSeed)
    .option('--context-share <x>', 'share of queries with an added context sentence, in [0, 1]', parseShare)
    .option('--categories <list>', `categories to build, comma-separated (default all: ${PRIVACY_CATEGORIES.map((c) => c.id).join(', ')})`, parseCategories)
    .option('--limit <n>', 'at most n pairs per split, balanced over the categories', parsePositiveInt)
    .option('--overwrite', 'replace existing split files'));
}
