import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { PrivacyPair } from '../lib/data/prepare';
import { NgateError } from '../lib/util/errors';
import { PairsFileError, readPairsFile, readPairsFileSync, writePairsFile } from '../lib/data/pairs-file';
import { buildPrivacyPairs } from '../lib/data/privacy-pair';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngate-pairs-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

const pair = (id: string, extra: Partial<PrivacyPair> = {}): PrivacyPair => ({
  id, category: 'passport', subject: 'passport',
  sensitive: 'What is the document number of the passport?', benign: 'What is the color of the passport?', ...extra,
});
const line = (p: object): string => JSON.stringify(p);

function writeLines(name: string, lines: string[]): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

async function readError(file: string): Promise<NgateError> {
  try {
    await readPairsFile(file);
  } catch (e) {
    expect(e).toBeInstanceOf(NgateError);
    return e as NgateError;
  }
  throw new Error(`expected ${file} to be rejected`);
}

describe('pairs files', () => {
  test('round trip of built pairs, optional fields included', async () => {
    const built = buildPrivacyPairs({ categories: ['receipt'] });
    const pairs = [...built.train.slice(0, 20), pair('with-extras', { refusal: 'I cannot help with that.', benignAnswer: 'It is dark red.' })];
    const file = path.join(dir, 'sub', 'round.jsonl');
    await writePairsFile(file, pairs);
    expect(fs.readFileSync(file, 'utf8').trimEnd().split('\n')).toHaveLength(21);
    expect(await readPairsFile(file)).toEqual(pairs);
    expect(readPairsFileSync(file)).toEqual(pairs);
    // No temp files left beside it.
    expect(fs.readdirSync(path.dirname(file))).toEqual(['round.jsonl']);
  });

  test('image paths: relative to the file when inside its folder, absolute outside; absolute when read', async () => {
    const file = path.join(dir, 'img', 'pairs.jsonl');
    const inside = path.join(dir, 'img', 'pics', 'a.png');
    const outside = path.join(os.tmpdir(), 'elsewhere', 'b.png');
    await writePairsFile(file, [pair('a', { image: inside }), pair('b', { image: outside })]);
    const stored = fs.readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(stored[0].image).toBe('pics/a.png');
    expect(stored[1].image).toBe(outside);
    const back = await readPairsFile(file);
    expect(back.map((p) => p.image)).toEqual([inside, outside]);
  });

  test('blank lines, CRLF and a BOM are accepted', async () => {
    const file = path.join(dir, 'blank.jsonl');
    fs.writeFileSync(file, '\uFEFF' + line(pair('a')) + '\r\n\r\n   \n' + line(pair('b')) + '\r\n\n');
    expect((await readPairsFile(file)).map((p) => p.id)).toEqual(['a', 'b']);
  });

  test('bad JSON on line 3 and a missing field on line 5 are reported together', async () => {
    const { benign: _b, ...noBenign } = pair('e');
    const file = writeLines('bad.jsonl', [line(pair('a')), line(pair('b')), '{"id": "c", oops', line(pair('d')), line(noBenign)]);
    const err = await readError(file);
    expect(err).toBeInstanceOf(PairsFileError);
    expect(err.code).toBe('ERR_PAIRS_FILE');
    expect(err.file).toBe(file);
    expect(err.message).toContain(file);
    expect(err.message).toMatch(/2 bad lines/);
    expect(err.message).toMatch(/line 3: is not valid JSON/);
    expect(err.message).toMatch(/line 5: field "benign": is missing/);
    expect((err as PairsFileError).issues.map((i) => [i.line, i.field])).toEqual([[3, undefined], [5, 'benign']]);
  });

  test('wrong types, empty strings, non-objects and a subject missing from a query', async () => {
    const file = writeLines('types.jsonl', [
      line({ ...pair('a'), subject: 42 }),
      line({ ...pair('b'), image: null }),
      line({ ...pair('c'), category: '' }),
      '[1, 2]',
      line(pair('e', { subject: 'visa' })),
    ]);
    const err = (await readError(file)) as PairsFileError;
    expect(err.message).toMatch(/line 1: field "subject": must be a string, got number/);
    expect(err.message).toMatch(/line 2: field "image": must be a string, got null/);
    expect(err.message).toMatch(/line 3: field "category": must not be empty/);
    expect(err.message).toMatch(/line 4: must be a JSON object, got an array/);
    expect(err.message).toMatch(/line 5: field "sensitive": does not contain the subject "visa"/);
    expect(err.message).toMatch(/line 5: field "benign": does not contain the subject "visa"/);
  });

  test('duplicate ids name both lines', async () => {
    const file = writeLines('dup.jsonl', [line(pair('a')), '', line(pair('b')), line(pair('a'))]);
    const err = await readError(file);
    expect(err.message).toMatch(/line 4: field "id": "a" is also the id on line 1/);
  });

  test('unknown fields are named', async () => {
    const file = writeLines('unknown.jsonl', [line({ ...pair('a'), benign_answer: 'x', note: 1 })]);
    const err = await readError(file);
    expect(err.message).toMatch(/line 1: unknown fields "benign_answer", "note"/);
  });

  test('many bad lines: the message lists 20, the error keeps all', async () => {
    const file = writeLines('many.jsonl', Array.from({ length: 30 }, (_, i) => `{bad ${i}`));
    const err = (await readError(file)) as PairsFileError;
    expect(err.issues).toHaveLength(30);
    expect(err.message).toMatch(/30 bad lines/);
    expect(err.message).toMatch(/line 20:/);
    expect(err.message).not.toMatch(/line 21:/);
    expect(err.message).toMatch(/\.\.\. and 10 more/);
  });

  test('invalid UTF-8 is reported with its line, not replaced', async () => {
    const file = path.join(dir, 'utf8.jsonl');
    fs.writeFileSync(file, Buffer.concat([Buffer.from(line(pair('a')) + '\n'), Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a])]));
    const err = await readError(file);
    expect(err.message).toMatch(/line 2: is not valid UTF-8/);
  });

  test('missing file, a folder, an empty file', async () => {
    const missing = await readError(path.join(dir, 'nope.jsonl'));
    expect(missing.code).toBe('ERR_MISSING_FILE');
    expect(missing.file).toBe(path.join(dir, 'nope.jsonl'));
    expect(() => readPairsFileSync(path.join(dir, 'nope.jsonl'))).toThrow(expect.objectContaining({ code: 'ERR_MISSING_FILE' }));
    expect((await readError(dir)).code).toBe('ERR_PAIRS_FILE');
    const empty = writeLines('empty.jsonl', ['', '  ']);
    expect((await readError(empty)).message).toMatch(/has no pairs/);
    expect(await readPairsFile(empty, { allowEmpty: true })).toEqual([]);
  });

  test('writing rejects bad pairs without touching the file', async () => {
    const file = path.join(dir, 'keep.jsonl');
    await writePairsFile(file, [pair('a')]);
    const before = fs.readFileSync(file, 'utf8');
    const bad = [pair('a'), pair('a'), { ...pair('c'), extra: 1 } as PrivacyPair, { ...pair('d'), benign: 5 } as unknown as PrivacyPair];
    let err: unknown;
    try { await writePairsFile(file, bad); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(PairsFileError);
    expect((err as NgateError).code).toBe('ERR_INPUT');
    expect((err as NgateError).message).toMatch(/pairs\[1\]: field "id": "a" is also the id of pairs\[0\]/);
    expect((err as NgateError).message).toMatch(/pairs\[2\]: unknown field "extra"/);
    expect((err as NgateError).message).toMatch(/pairs\[3\]: field "benign": must be a string, got number/);
    expect(fs.readFileSync(file, 'utf8')).toBe(before);
  });

  test('a write that fails is ERR_WRITE and leaves no temp file', async () => {
    const blocker = path.join(dir, 'blocker');
    fs.writeFileSync(blocker, 'x');
    await expect(writePairsFile(path.join(blocker, 'p.jsonl'), [pair('a')])).rejects.toMatchObject({ code: 'ERR_WRITE' });
    const target = path.join(dir, 'is-a-folder.jsonl');
    fs.mkdirSync(target);
    await expect(writePairsFile(target, [pair('a')])).rejects.toMatchObject({ code: 'ERR_WRITE' });
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});
