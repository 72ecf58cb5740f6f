// PrivacyPairs as JSON Lines: one pair object per line, blank lines allowed.
// Every bad line is reported at once, with its line number and field, so a
// hand-edited file can be fixed in one pass.
import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import type { PrivacyPair } from './prepare';
import { tempNameBeside } from '../util/atomic-write';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { parseJson } from '../util/json';

/** One problem in a pairs file (line is 1-based) or in a list of pairs to write (index is 0-based). */
export interface PairsFileIssue { line?: number; index?: number; field?: string; message: string }

/** How many issues the message lists; all of them are on `issues`. */
const LISTED_ISSUES = 20;

/** ERR_PAIRS_FILE (reading) or ERR_INPUT (writing), with every problem found. */
export class PairsFileError extends NgateError {
  readonly issues: PairsFileIssue[];
  constructor(code: 'ERR_PAIRS_FILE' | 'ERR_INPUT', issues: PairsFileIssue[], opts: { file?: string } = {}) {
    const where = (i: PairsFileIssue) => (i.line !== undefined ? `line ${i.line}` : `pairs[${i.index}]`) + (i.field !== undefined ? `: field "${i.field}"` : '');
    const shown = issues.slice(0, LISTED_ISSUES).map((i) => `  ${where(i)}: ${i.message}`);
    if (issues.length > LISTED_ISSUES) shown.push(`  ... and ${issues.length - LISTED_ISSUES} more`);
    const what = issues.every((i) => i.line !== undefined) ? 'bad line' : 'bad pair';
    super(code, `${issues.length} ${what}${issues.length === 1 ? '' : 's'}:\n${shown.join('\n')}`, opts);
    this.name = 'PairsFileError';
    this.issues = issues;
  }
}

const FIELDS = ['id', 'category', 'subject', 'sensitive', 'benign', 'refusal', 'benignAnswer', 'image'] as const;

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

const text = (optional: boolean) => z.string({
  error: (iss) => (iss.input === undefined && !optional ? 'is missing' : `must be a string, got ${typeName(iss.input)}`),
}).min(1, { error: 'must not be empty' });

/** The fields of PrivacyPair and nothing else: an unknown field is a typo or data this format would drop. */
export const privacyPairSchema = z.strictObject({
  id: text(false),
  category: text(false),
  subject: text(false),
  sensitive: text(false),
  benign: text(false),
  refusal: text(true).optional(),
  benignAnswer: text(true).optional(),
  image: text(true).optional(),
}, { error: (iss) => (iss.code === 'unrecognized_keys' ? undefined : `must be a JSON object, got ${typeName(iss.input)}`) });

/** Schema and subject checks of one pair; the issues carry no line or index yet. */
function checkPair(value: unknown): { pair?: PrivacyPair; issues: PairsFileIssue[] } {
  const parsed = privacyPairSchema.safeParse(value);
  if (!parsed.success) {
    return {
      issues: parsed.error.issues.map((iss) => {
        if (iss.code === 'unrecognized_keys') {
          return { message: `unknown field${iss.keys.length === 1 ? '' : 's'} ${iss.keys.map((k) => JSON.stringify(k)).join(', ')} (a pair has ${FIELDS.join(', ')})` };
        }
        return iss.path.length > 0 ? { field: String(iss.path[0]), message: iss.message } : { message: iss.message };
      }),
    };
  }
  const pair = parsed.data;
  const issues: PairsFileIssue[] = [];
  // learnMask scales the subject's tokens, so both queries must contain it.
  for (const q of ['sensitive', 'benign'] as const) {
    if (!pair[q].includes(pair.subject)) issues.push({ field: q, message: `does not contain the subject ${JSON.stringify(pair.subject)}` });
  }
  return issues.length > 0 ? { issues } : { pair, issues };
}

/** A pair with its fields in the documented order and no undefined ones. */
function ordered(p: PrivacyPair): PrivacyPair {
  const out: Record<string, string> = {};
  for (const f of FIELDS) if (p[f] !== undefined) out[f] = p[f]!;
  return out as unknown as PrivacyPair;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Parses the bytes of a pairs file; relative image paths are resolved against `file`'s folder. */
function parsePairs(bytes: Buffer, file: string, opts: ReadPairsOptions): PrivacyPair[] {
  const dir = path.dirname(path.resolve(file));
  const issues: PairsFileIssue[] = [];
  const pairs: PrivacyPair[] = [];
  const idLine = new Map<string, number>();
  let start = 0;
  for (let line = 1; start <= bytes.length; line++) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    const raw = bytes.subarray(start, end);
    start = end + 1;
    let lineText: string;
    try {
      lineText = decoder.decode(raw);
    } catch {
      issues.push({ line, message: 'is not valid UTF-8' });
      continue;
    }
    if (line === 1) lineText = lineText.replace(/^\uFEFF/, '');
    if (lineText.trim() === '') continue;
    let value: unknown;
    try {
      value = parseJson(lineText);
    } catch (e) {
      issues.push({ line, message: `is not valid JSON (${(e as Error).message})` });
      continue;
    }
    const checked = checkPair(value);
    issues.push(...checked.issues.map((i) => ({ line, ...i })));
    if (!checked.pair) continue;
    const p = checked.pair;
    const first = idLine.get(p.id);
    if (first !== undefined) {
      issues.push({ line, field: 'id', message: `${JSON.stringify(p.id)} is also the id on line ${first}` });
      continue;
    }
    idLine.set(p.id, line);
    pairs.push(p.image !== undefined ? { ...p, image: path.resolve(dir, p.image) } : p);
  }
  if (issues.length > 0) throw new PairsFileError('ERR_PAIRS_FILE', issues, { file });
  if (pairs.length === 0 && !opts.allowEmpty) throw new NgateError('ERR_PAIRS_FILE', 'has no pairs (pass allowEmpty to accept an empty file)', { file });
  return pairs;
}

function readError(file: string, e: unknown): NgateError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new NgateError('ERR_MISSING_FILE', 'file not found', { file, cause: e });
  if (code === 'EISDIR') return new NgateError('ERR_PAIRS_FILE', 'is a folder, expected a .jsonl file of pairs', { file, cause: e });
  return new NgateError('ERR_PAIRS_FILE', `cannot read: ${(e as Error).message}`, { file, cause: e });
}

// Only a regular file of bounded size: a FIFO would block the read forever, /dev/zero never end it.
function checkPairsFile(file: string): void {
  let st: fs.Stats | null = null;
  try { st = fs.statSync(file); } catch (e) { throw readError(file, e); }
  if (st.isDirectory()) throw new NgateError('ERR_PAIRS_FILE', 'is a folder, expected a .jsonl file of pairs', { file });
  regularFile(file, 'ERR_PAIRS_FILE');
}

export interface ReadPairsOptions {
  /** Return [] for a file without pairs instead of throwing. Default false: every method needs pairs. */
  allowEmpty?: boolean;
}

/**
 * Reads and validates a pairs file. Throws one PairsFileError (code
 * ERR_PAIRS_FILE) listing every bad line, never a partial list. `image` comes
 * back as an absolute path.
 */
export async function readPairsFile(file: string, opts: ReadPairsOptions = {}): Promise<PrivacyPair[]> {
  let bytes: Buffer;
  checkPairsFile(file);
  try {
    bytes = await fs.promises.readFile(file);
  } catch (e) {
    throw readError(file, e);
  }
  return parsePairs(bytes, file, opts);
}

/** readPairsFile, synchronously. */
export function readPairsFileSync(file: string, opts: ReadPairsOptions = {}): PrivacyPair[] {
  let bytes: Buffer;
  checkPairsFile(file);
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw readError(file, e);
  }
  return parsePairs(bytes, file, opts);
}

/** The JSONL text of `pairs` as written to `file`; throws PairsFileError (ERR_INPUT) naming every bad pair. */
export function formatPairs(pairs: PrivacyPair[], file: string): string {
  if (!Array.isArray(pairs)) throw new NgateError('ERR_INPUT', 'pairs must be an array', { field: 'pairs' });
  const dir = path.dirname(path.resolve(file));
  const issues: PairsFileIssue[] = [];
  const idIndex = new Map<string, number>();
  const lines: string[] = [];
  pairs.forEach((value, index) => {
    const checked = checkPair(value);
    issues.push(...checked.issues.map((i) => ({ index, ...i })));
    if (!checked.pair) return;
    const p = ordered(checked.pair);
    const first = idIndex.get(p.id);
    if (first !== undefined) {
      issues.push({ index, field: 'id', message: `${JSON.stringify(p.id)} is also the id of pairs[${first}]` });
      return;
    }
    idIndex.set(p.id, index);
    if (p.image !== undefined) {
      // Images inside the file's folder are stored relative to it, so the folder can move as a whole.
      const abs = path.resolve(p.image);
      const rel = path.relative(dir, abs);
      p.image = rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel.split(path.sep).join('/') : abs;
    }
    lines.push(JSON.stringify(p));
  });
  if (issues.length > 0) throw new PairsFileError('ERR_INPUT', issues, { file });
  return lines.map((l) => l + '\n').join('');
}

/**
 * Writes `pairs` as JSONL through a temp file and a rename, so a reader never
 * sees half a file. Relative image paths are taken relative to the current
 * folder, as fs would; images inside the file's folder are written relative to
 * it, others as absolute paths. Creates the folder when missing.
 */
export async function writePairsFile(file: string, pairs: PrivacyPair[]): Promise<void> {
  const body = formatPairs(pairs, file);
  const dir = path.dirname(path.resolve(file));
  const tmp = tempNameBeside(path.resolve(file));
  try {
    await fs.promises.mkdir(dir, { recursive: true });
    await fs.promises.writeFile(tmp, body, { flag: 'wx' });
    await fs.promises.rename(tmp, file);
  } catch (e) {
    // Best effort: when the folder itself is the problem there is no temp file to remove.
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw new NgateError('ERR_WRITE', `cannot write: ${(e as Error).message}`, { file, cause: e });
  }
}
