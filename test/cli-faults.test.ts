// Faults around the command line and saving: bad input leaves no trace (no
// output folder made), SIGTERM stops a step as Ctrl-C does, and a full disk,
// a missing or unwritable folder or a name too long come back as ERR_WRITE
// naming the file (exit 1: the machine failed, the input was fine).
import { spawn } from 'child_process';
import * as fs from 'fs';

// fs with a switch that makes writes to a file descriptor fail as on a full disk.
const disk = { full: false };
jest.mock('fs', () => {
  const real = jest.requireActual<typeof import('fs')>('fs');
  return {
    ...real,
    writeSync: (...a: unknown[]) => {
      if (disk.full && typeof a[0] === 'number') {
        const e = new Error('ENOSPC: no space left on device, write') as NodeJS.ErrnoException;
        e.code = 'ENOSPC';
        throw e;
      }
      return (real.writeSync as (...x: unknown[]) => number)(...a);
    },
  };
});
import * as path from 'path';
import { loadModel } from '../lib';
import { EXIT, main } from '../lib/cli';
import { demoModelDir } from '../lib/demo/run';
import { makeTempDir, writeTinyLlama } from './fixtures/checkpoint';

async function ngate(args: string[]): Promise<{ code: number; err: string; out: string }> {
  let out = '', err = '';
  const code = await main(args, { stdout: { write: (s: string) => { out += s; } }, stderr: { write: (s: string) => { err += s; }, isTTY: false } });
  return { code, err, out };
}

const pairs = [
  { id: 'a', category: 'passport', subject: 'passport', sensitive: 'What is the passport number?', benign: 'What is the passport type?', benignAnswer: 'A blue one.' },
  { id: 'b', category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'What is the phone brand?', benignAnswer: 'An old brand.' },
];

let work: string;
let pairsFile: string;
beforeAll(() => {
  work = makeTempDir('ngate-faults-');
  pairsFile = path.join(work, 'pairs.jsonl');
  fs.writeFileSync(pairsFile, pairs.map((p) => JSON.stringify(p)).join('\n') + '\n');
});

test('a command that rejects its input creates no output folder', async () => {
  const out = path.join(work, 'never', 'made', 'masks.safetensors');
  const bad = path.join(work, 'bad.jsonl');
  fs.writeFileSync(bad, '{"id": 1}\n');
  expect((await ngate(['learn-mask', '--pairs', bad, '--layers', '1', '--out', out])).code).toBe(EXIT.usage);
  expect((await ngate(['learn-mask', '--pairs', pairsFile, '--layers', '99', '--out', out])).code).toBe(EXIT.usage);
  expect((await ngate(['eval', '--pairs', bad, '--out', path.join(work, 'never2', 'eval.json')])).code).toBe(EXIT.usage);
  expect(fs.existsSync(path.join(work, 'never'))).toBe(false);
  expect(fs.existsSync(path.join(work, 'never2'))).toBe(false);
  // The same command with good input makes the folder and writes the file.
  expect((await ngate(['learn-mask', '--pairs', pairsFile, '--layers', '1', '--steps', '1', '--out', out, '-q'])).code).toBe(EXIT.ok);
  expect(fs.existsSync(out)).toBe(true);
});

test('a full disk while the masks are written is ERR_WRITE naming the file, exit 1', async () => {
  const out = path.join(work, 'full', 'masks.safetensors');
  disk.full = true;
  try {
    const r = await ngate(['learn-mask', '--pairs', pairsFile, '--layers', '1', '--steps', '1', '--out', out]);
    expect(r.code).toBe(EXIT.failure);
    expect(r.err).toMatch(/masks\.safetensors: cannot write: ENOSPC/);
  } finally {
    disk.full = false;
  }
  expect(fs.readdirSync(path.join(work, 'full'))).toEqual([]);  // no half-written file, no temporary left
});

test('model.save: a name too long, an unwritable or impossible folder are ERR_WRITE naming the target', async () => {
  const model = await loadModel(writeTinyLlama(makeTempDir(), { seed: 2, numLayers: 1 }).dir);
  await expect(model.save(path.join(work, 'x'.repeat(300)))).rejects.toMatchObject({ code: 'ERR_WRITE', message: expect.stringMatching(/ENAMETOOLONG/) });
  const file = path.join(work, 'a-file');
  fs.writeFileSync(file, '');
  await expect(model.save(path.join(file, 'sub'))).rejects.toMatchObject({ code: 'ERR_WRITE', file: path.join(file, 'sub') });
  if (process.getuid?.() !== 0) {  // root writes anywhere
    const ro = path.join(work, 'read-only');
    fs.mkdirSync(ro, { mode: 0o555 });
    await expect(model.save(path.join(ro, 'out'))).rejects.toMatchObject({ code: 'ERR_WRITE', message: expect.stringMatching(/EACCES/) });
  }
  await model.dispose();
});

const bin = path.join(__dirname, '..', 'bin', 'ngate.js');
(fs.existsSync(path.join(__dirname, '..', 'dist', 'cli.js')) ? test : test.skip)('SIGTERM stops the running step like Ctrl-C: exit 143, no output written', async () => {
  const out = path.join(work, 'term', 'masks.safetensors');
  const child = spawn(process.execPath, [bin, 'learn-mask', '--model', demoModelDir(), '--pairs', pairsFile, '--layers', '1', '--steps', '1000000', '--out', out],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve) => child.stderr.on('data', (d: Buffer) => { err += d.toString(); if (/learnMask: /.test(err)) resolve(); }));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
  const code = await exited;
  clearTimeout(timer);
  expect(code).toBe(EXIT.terminated);
  expect(err).toMatch(/terminated; stopping after the current step/);
  expect(fs.existsSync(out)).toBe(false);
});
