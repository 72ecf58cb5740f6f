// The fuzzing of the file readers (scripts/fuzz.js, Jazzer.js): the seeds are
// files the readers accept, the committed corpus replays without a finding, a
// short campaign runs every target, and the harness does report a planted bug.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { READERS, readInput, refusesCleanly, target, TargetName } from './fuzz/targets';
import { NgateError } from '../lib/util/errors';
import { writeSeeds } from './fuzz/seeds';
import { makeTempDir } from './fixtures/checkpoint';

const root = path.join(__dirname, '..');
const names = Object.keys(READERS) as TargetName[];

describe.each(names)('fuzz target %s', (name) => {
  test('its seeds are files the reader accepts, so a campaign starts past the first checks', () => {
    const files = writeSeeds(name, path.join(makeTempDir('ngate-seeds-'), name));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(() => readInput(name, fs.readFileSync(f))).not.toThrow();
  });

  test('every input of the committed corpus is read or refused with an NgateError, each within 2 s', () => {
    const dir = path.join(__dirname, 'fuzz', 'corpus', name);
    const inputs = fs.readdirSync(dir);
    expect(inputs.length).toBeGreaterThan(5);
    const fuzz = target(name);
    for (const f of inputs) {
      const t0 = Date.now();
      fuzz(fs.readFileSync(path.join(dir, f)));
      expect(Date.now() - t0).toBeLessThan(2000);
    }
  });
});

test('a target swallows an NgateError and lets anything else through as a finding', () => {
  expect(() => refusesCleanly(() => { throw new NgateError('ERR_INPUT', 'bad'); })).not.toThrow();
  expect(() => refusesCleanly(() => { throw new TypeError('reader bug'); })).toThrow(TypeError);
  expect(() => refusesCleanly(() => { throw new RangeError('Maximum call stack size exceeded'); })).toThrow(RangeError);
});

describe('Jazzer.js campaigns', () => {
  const out = makeTempDir('ngate-fuzz-');
  beforeAll(() => {
    // Loads Jazzer's engine, patching a copy where the shipped one needs a newer glibc (scripts/jazzer-glibc.js).
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'jazzer-glibc.js')], { cwd: root, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('a short run of every target (3,000 executions each) ends without a finding', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'fuzz.js'), 'all', '--runs', '3000', '--out', out], { cwd: root, encoding: 'utf8' });
    const results = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(results.map((x) => x.target)).toEqual(names);
    for (const x of results) expect({ target: x.target, runs: x.runs, exitCode: x.exitCode, finding: x.finding }).toEqual({ target: x.target, runs: 3000, exitCode: 0, finding: null });
    expect(r.status).toBe(0);
  }, 300000);

  test('the engine finds and reports a bug planted behind a 4-byte comparison', () => {
    const planted = path.join(out, 'planted.js');
    fs.writeFileSync(planted, `module.exports.fuzz = (d) => { if (d.length >= 4 && d.readUInt32LE(0) === 0x4e474154) throw new TypeError('planted'); };\n`);
    const r = spawnSync(path.join(root, 'node_modules', '.bin', 'jazzer'), [planted, '--sync', '--', '-runs=2000000', `-artifact_prefix=${out}/`],
      { cwd: root, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/TypeError: planted/);
    const crash = fs.readdirSync(out).find((f) => f.startsWith('crash-'));
    expect(crash).toBeDefined();
    expect(fs.readFileSync(path.join(out, crash!)).readUInt32LE(0)).toBe(0x4e474154);
  }, 300000);
});

// Inputs a byte-level fuzzer seldom builds within -max_len (thousands of
// nested brackets, millions of instructions), written out here. Each one
// crashed a reader with a RangeError or let data.pkl allocate ~60 bytes per
// input byte before the bounds of lib/util/json.ts and torch-checkpoint.ts.
describe('hostile inputs beyond the fuzzer\'s reach are refused with an NgateError', () => {
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  const deepObject = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);
  const safetensorsBytes = (header: string) => {
    const h = Buffer.from(header);
    const n = Buffer.alloc(8);
    n.writeBigUInt64LE(BigInt(h.length));
    return Buffer.concat([n, h]);
  };
  const pickle = (body: Buffer) => Buffer.concat([Buffer.from([0x80, 2]), body, Buffer.from('.')]);
  const cases: [TargetName, string, Buffer, RegExp][] = [
    ['safetensors', 'a shape nested 100,000 deep', safetensorsBytes(`{"a":{"dtype":"F32","shape":${deep(100000)},"data_offsets":[0,0]}}`), /nest more than 64 deep/],
    ['safetensors', '__metadata__ nested 100,000 deep', safetensorsBytes(`{"__metadata__":${deepObject(100000)}}`), /nest more than 64 deep/],
    ['masks', 'layers metadata nested 100,000 deep', safetensorsBytes(JSON.stringify({ __metadata__: { format: 'ngate.masks', version: '1', layers: deep(100000), hiddenSize: '4', pairIds: '["a"]' } })), /field "layers".*nest more than 64 deep/],
    ['gate', 'pairIds metadata nested 100,000 deep', safetensorsBytes(JSON.stringify({ __metadata__: { format: 'ngate.gate', version: '1', layers: '[0]', hiddenSize: '4', threshold: '0.5', pairCount: '1', pairIds: deep(100000) } })), /field "pairIds".*nest more than 64 deep/],
    ['pairs', 'a line nested 100,000 deep', Buffer.from(deepObject(100000) + '\n'), /line 1: is not valid JSON \(arrays and objects nest more than 64 deep/],
    ['minigpt4-descriptor', 'a descriptor nested 100,000 deep', Buffer.from(`{"vision_tower":${deepObject(100000)}}`), /nest more than 64 deep/],
    ['model-config', 'a config nested 100,000 deep', Buffer.from(`{"text_config":${deepObject(100000)},"model_type":"llava"}`), /nest more than 64 deep/],
    ['minigpt4-yaml', 'a YAML flow sequence nested 100,000 deep', Buffer.from('model: ' + deep(100000)), /invalid YAML: nests deeper than a configuration can/],
    ['torch-pickle', '5,000,000 EMPTY_LIST instructions', pickle(Buffer.from(']'.repeat(5000000))), /runs more than 4000000 instructions/],
  ];
  test.each(cases)('%s: %s', (name, _what, data, message) => {
    let caught: unknown;
    try {
      readInput(name, data);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(NgateError);
    expect((caught as Error).message).toMatch(message);
  });
});
