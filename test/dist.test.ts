// More than one process, on torch's c10d (Gloo, on the loopback and through a
// file:// rendezvous): the sharded method gives what one process gives, a rank
// that dies or hangs makes the others fail in the time the policy promises,
// and `ngate launch` ends the other ranks when one fails. The ranks are real
// processes running the dist/ bundle; each is SIGKILLed by its pid at a deadline.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import type { PrivacyPair } from '../lib/data/prepare';
import {
  buildGate, evaluate, fillBenignAnswers, gatedEdit, learnMask, loadGate, loadMasks, loadModel, locateLayer, readSafetensorsHeader, readSafetensorsTensor,
  saveMasks,
} from '../lib';
import { EXIT, main } from '../lib/cli';
import { loadAddon } from '../lib/model/native';
import { makeTempDir, writeTinyLlama } from './fixtures/checkpoint';

// On a GPU machine: NGATE_TEST_DEVICE=cuda and one rank per GPU (NGATE_TEST_DIST_RANKS),
// the backend then being NCCL (scripts/gpu/dist-nccl.sh).
const device = process.env.NGATE_TEST_DEVICE ?? 'cpu';
const RANKS = Number(process.env.NGATE_TEST_DIST_RANKS ?? 2);
const rankList = Array.from({ length: RANKS }, (_, r) => r);
const root = path.resolve(__dirname, '..');
const bundle = path.join(root, 'dist', 'index.js');
const worker = path.join(__dirname, 'fixtures', 'dist-worker.js');
const ngateBin = path.join(root, 'bin', 'ngate.js');
const ready = fs.existsSync(bundle) && fs.existsSync(path.join(root, 'dist', 'cli.js')) && loadAddon().distBackends().gloo;
const suite = ready ? describe : describe.skip;
if (!ready) console.warn('test/dist.test.ts skipped: it needs dist/ (npx tsup) and an addon built with Gloo (node scripts/find-dist.js)');

interface Exit { code: number | null; signal: string | null; at: number; stderr: string; stdout: string }
interface Proc { child: ChildProcess; exited: Promise<Exit>; stderr: () => string }

const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) if (c.pid && c.exitCode === null && c.signalCode === null) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }
});

/** A process bounded by a deadline after which it is SIGKILLed by its pid. */
function start(args: string[], env: NodeJS.ProcessEnv, deadlineMs: number): Proc {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stderr = '', stdout = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  const timer = setTimeout(() => { if (child.pid) { try { process.kill(child.pid, 'SIGCONT'); process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } } }, deadlineMs);
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => {
    clearTimeout(timer);
    live.delete(child);
    resolve({ code, signal, at: Date.now(), stderr, stdout });
  }));
  return { child, exited, stderr: () => stderr };
}

/** Two ranks of `args`, joined through a fresh file:// rendezvous. */
function startRanks(work: string, args: string[], env: NodeJS.ProcessEnv, deadlineMs: number, size = 2): Proc[] {
  const store = path.join(work, `store-${Math.random().toString(36).slice(2)}`);
  return Array.from({ length: size }, (_, r) => start(args, {
    ...env, RANK: String(r), LOCAL_RANK: String(r), WORLD_SIZE: String(size), LOCAL_WORLD_SIZE: String(size), NGATE_INIT_METHOD: `file://${store}`,
  }, deadlineMs));
}

function waitFor(p: Proc, re: RegExp, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const poll = setInterval(() => {
      if (re.test(p.stderr())) { clearInterval(poll); resolve(); }
      else if (Date.now() - t0 > ms || p.child.exitCode !== null) { clearInterval(poll); reject(new Error(`no ${re} within ${ms} ms; stderr: ${p.stderr()}`)); }
    }, 20);
  });
}

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

function tensorsOf(dir: string): Map<string, Float32Array> {
  const file = path.join(dir, 'model.safetensors');
  const h = readSafetensorsHeader(file);
  const out = new Map<string, Float32Array>();
  for (const [name, e] of h.tensors) { const b = readSafetensorsTensor(file, e); out.set(name, new Float32Array(b.slice().buffer)); }
  return out;
}

const PAIRS: PrivacyPair[] = [
  { id: 'a', category: 'passport', subject: 'passport', sensitive: 'What is the passport number?', benign: 'What is the passport type?' },
  { id: 'b', category: 'passport', subject: 'passport', sensitive: 'Tell me the passport holder name.', benign: 'Tell me the passport color.', benignAnswer: 'It is blue.' },
  { id: 'c', category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'What is the phone brand?' },
  { id: 'd', category: 'phone', subject: 'phone', sensitive: 'Who owns the phone?', benign: 'What color is the phone?' },
  { id: 'e', category: 'receipt', subject: 'receipt', sensitive: 'What card number is on the receipt?', benign: 'What store printed the receipt?' },
  { id: 'f', category: 'receipt', subject: 'receipt', sensitive: 'Some text first, then: whose name is on the receipt?', benign: 'What is the total on the receipt?' },
  { id: 'g', category: 'phone', subject: 'phone', sensitive: 'Read the phone number aloud.', benign: 'Is the phone new?' },
];
const MASK = { layers: [0, 1], steps: 12, lr: 0.5, l1: 0, batchSize: 2 };
// Global batches of 3 pairs: shares of 1 and 2 pairs, and a last batch of 1 where rank 0's share is empty.
const EDIT = { epochs: 2, lr: 1e-3, batchSize: 3 };

let work: string;
let modelDir: string;
beforeAll(() => {
  work = makeTempDir('ngate-dist-');
  modelDir = writeTinyLlama(path.join(work, 'model'), { seed: 5, numLayers: 3, numKvHeads: 2 }).dir;
});

suite('the method on two ranks equals one process', () => {
  test('fillBenignAnswers, evaluate, learnMask, buildGate and gatedEdit', async () => {
    const out = path.join(work, 'method');
    fs.mkdirSync(out);
    const partsDir = path.join(out, 'parts');
    const ranks = startRanks(work, [worker], {
      OUT: out, NGATE_TEST_TASK: JSON.stringify({ mode: 'method', model: modelDir, device, pairs: PAIRS, mask: MASK, edit: EDIT, partsDir }),
    }, 90000, RANKS);
    // One process, meanwhile, on the same inputs.
    const model = await loadModel(modelDir, { device, dtype: 'float32' });
    const filled = await fillBenignAnswers(model, PAIRS, { maxNewTokens: 6, batchSize: 2 });
    const report = await evaluate(model, filled, { maxNewTokens: 5, batchSize: 4 });
    const masks = await learnMask(model, filled, MASK);
    const gate = buildGate(masks);
    const before = tensorsOf(modelDir);
    const edit = await gatedEdit(model, filled, gate, EDIT);
    await model.save(path.join(out, 'model-one'));
    model.dispose();
    const exits = await Promise.all(ranks.map((r) => r.exited));
    exits.forEach((e) => expect({ code: e.code, stderr: e.stderr }).toEqual({ code: 0, stderr: '' }));

    for (const r of rankList) {
      const got = JSON.parse(fs.readFileSync(path.join(out, `rank-${r}.json`), 'utf8'));
      expect(got.answers).toEqual(filled.map((p) => p.benignAnswer));
      if (RANKS > 1) expect(got.twice).toMatch(/pair id "a" is in the masks of rank 0 and of rank 1/);
      expect(got.outcomes).toEqual(report.outcomes);
      // Masks bit for bit, and the gate from them and from the pooled shards.
      expect(fs.readFileSync(path.join(out, `masks-${r}.bin`)).equals(Buffer.from(masks.masks.buffer))).toBe(true);
      expect(got.losses).toEqual(masks.losses);
      expect(got.gate).toEqual({ keep: [...gate.keep], neg: [...gate.negativeCounts!], pairCount: gate.pairCount });
      expect(got.pooled.keep).toEqual([...gate.keep]);
      expect(got.pooled.neg).toEqual([...gate.negativeCounts!]);
      expect(got.pooled.pairCount).toBe(PAIRS.length);
      expect([...got.pooled.pairIds].sort()).toEqual(PAIRS.map((p) => p.id));
      got.epochLosses.forEach((l: number, i: number) => expect(Math.abs(l - edit.epochLosses[i])).toBeLessThan(1e-5));
    }
    // The masks moved, and the gate lets some dimensions through and stops others.
    expect(masks.masks.some((v) => v < 0)).toBe(true);
    expect(gate.keep.some((k) => k === 1) && gate.keep.some((k) => k === 0)).toBe(true);

    // Weights: both ranks hold the same bytes; they equal one process's up to float32
    // rounding (the ranks sum their shares' gradients where one process sums a whole batch).
    const one = tensorsOf(path.join(out, 'model-one'));
    const [r0, ...others] = rankList.map((r) => tensorsOf(path.join(out, `model-${r}`)));
    let diff = 0, moved = 0;
    for (const [name, w] of one) {
      for (const o of others) expect(Buffer.from(r0.get(name)!.buffer).equals(Buffer.from(o.get(name)!.buffer))).toBe(true);
      for (let i = 0; i < w.length; i++) {
        diff = Math.max(diff, Math.abs(w[i] - r0.get(name)![i]));
        moved = Math.max(moved, Math.abs(w[i] - before.get(name)![i]));
      }
    }
    console.log(`data-parallel edit (${device}): max |W(${RANKS} ranks) − W(1 process)| = ${diff.toExponential(2)}, max |ΔW| = ${moved.toExponential(2)}`);
    expect(moved).toBeGreaterThan(1e-3);
    expect(diff).toBeLessThan(1e-6);

    // The parts the two ranks wrote are a finished job: one process takes every batch from them.
    let steps = 0;
    const again = await (async () => {
      const m = await loadModel(modelDir, { device, dtype: 'float32' });
      try { return await learnMask(m, filled, { ...MASK, partsDir, onProgress: () => { steps++; } }); } finally { m.dispose(); }
    })();
    expect(steps).toBe(0);
    expect(Buffer.from(again.masks.buffer).equals(Buffer.from(masks.masks.buffer))).toBe(true);
  });
});

suite('locateLayer on two ranks equals one process', () => {
  test('the masks of every searched layer batch by batch, then one trial edit per layer on one rank', async () => {
    const out = path.join(work, 'locate');
    fs.mkdirSync(out);
    const opts = { searchLayers: [0, 2] as [number, number], radius: 1, mask: { steps: 6, lr: 0.5, l1: 0, batchSize: 2 },
      edit: { epochs: 1, lr: 1e-3 }, evaluate: { maxNewTokens: 4 } };
    const ranks = startRanks(work, [worker], { OUT: out, NGATE_TEST_TASK: JSON.stringify({ mode: 'locate', model: modelDir, device, pairs: PAIRS, opts }) },
      90000, RANKS);
    const model = await loadModel(modelDir, { device, dtype: 'float32' });
    const one = await locateLayer(model, PAIRS, PAIRS.slice(0, 3), opts);
    // Its per-batch counts of m < 0 give the gate buildGate gives from each layer's whole MaskSet.
    const filled = await fillBenignAnswers(model, PAIRS);
    for (const row of one.table) {
      const gate = buildGate(await learnMask(model, filled, { ...opts.mask, layers: [row.layer] }));
      expect(row.strongShare).toBe(gate.counts[0].strongShare);
    }
    expect(one.table.some((row) => row.strongShare > 0)).toBe(true);
    model.dispose();
    const exits = await Promise.all(ranks.map((r) => r.exited));
    exits.forEach((e) => expect({ code: e.code, stderr: e.stderr }).toEqual({ code: 0, stderr: '' }));
    for (const r of rankList) expect(JSON.parse(fs.readFileSync(path.join(out, `rank-${r}.json`), 'utf8'))).toEqual(one);
    expect(one.table.filter((row) => row.eta !== null).length).toBeGreaterThan(1);
  });
});

const cpuSuite = ready && device === 'cpu' && RANKS === 2 ? describe : describe.skip;

cpuSuite('a rank that dies or hangs', () => {
  let pairsFile: string;
  beforeAll(async () => {
    const model = await loadModel(modelDir, { device: 'cpu', dtype: 'float32' });
    const filled = await fillBenignAnswers(model, PAIRS, { maxNewTokens: 6 });
    model.dispose();
    pairsFile = path.join(work, 'faults.jsonl');
    fs.writeFileSync(pairsFile, filled.map((p) => JSON.stringify(p)).join('\n') + '\n');
  });
  // An edit that would run for hours: two ranks in lockstep, one all-reduce per step.
  const longEdit = (out: string, timeout: string) => [ngateBin, 'edit', '--model', modelDir, '--pairs', pairsFile, '--no-gate', '--layers', '1',
    '--epochs', '1000000', '--batch-size', '2', '--out', out, '--dist-timeout', timeout];

  test('SIGKILL of rank 1: rank 0 fails within 2 s, exit 1, naming its rank', async () => {
    const [r0, r1] = startRanks(work, longEdit(path.join(work, 'never-killed'), '10m'), {}, 60000);
    await waitFor(r0, /editing layer/, 30000);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    process.kill(r1.child.pid!, 'SIGKILL');
    const e0 = await r0.exited;
    console.log(`SIGKILL of rank 1: rank 0 exited ${e0.at - t0} ms later: ${e0.stderr.trim()}`);
    expect(e0.code).toBe(EXIT.failure);
    expect(e0.at - t0).toBeLessThan(2000);
    expect(e0.stderr).toMatch(/rank 0 of 2/);
    expect((await r1.exited).signal).toBe('SIGKILL');
    expect(fs.existsSync(path.join(work, 'never-killed'))).toBe(false);
  });

  test('SIGSTOP of rank 1 with --dist-timeout 3s: rank 0 fails after about 3 s; the stopped rank is then ended by its pid', async () => {
    const [r0, r1] = startRanks(work, longEdit(path.join(work, 'never-stopped'), '3s'), {}, 60000);
    await waitFor(r0, /editing layer/, 30000);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    process.kill(r1.child.pid!, 'SIGSTOP');
    const e0 = await r0.exited;
    console.log(`SIGSTOP of rank 1 (timeout 3 s): rank 0 exited ${e0.at - t0} ms later: ${e0.stderr.trim()}`);
    expect(e0.code).toBe(EXIT.failure);
    expect(e0.at - t0).toBeGreaterThanOrEqual(2500);
    expect(e0.at - t0).toBeLessThan(6000);
    expect(e0.stderr).toMatch(/timed out|timeout/i);
    expect(isAlive(r1.child.pid!)).toBe(true);
    process.kill(r1.child.pid!, 'SIGKILL');
    expect((await r1.exited).signal).toBe('SIGKILL');
  });

  test('ngate launch: when rank 1 exits 1, the launcher ends rank 0 by its pid and exits with 1, naming rank 1', async () => {
    const out = path.join(work, 'launch-fail');
    fs.mkdirSync(out);
    const launcher = start([ngateBin, 'launch', '--nproc-per-node', '2', '--exec', '--', process.execPath, worker],
      { OUT: out, NGATE_TEST_TASK: JSON.stringify({ mode: 'rank1-fails' }) }, 60000);
    const e = await launcher.exited;
    // Rank 0 wrote its pid, then waited without any collective: only the launcher could end it.
    const pid0 = Number(fs.readFileSync(path.join(out, 'pid-0'), 'utf8'));
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/rank 1 \(pid \d+\) exited with code 1; ending the other ranks/);
    expect(isAlive(pid0)).toBe(false);
    const pids = [...e.stderr.matchAll(/(\d+):(\d+)/g)].map((m) => Number(m[2]));
    for (const pid of pids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  });
});

cpuSuite('the command line on two ranks', () => {
  let pairsFile: string;
  beforeAll(() => {
    pairsFile = path.join(work, 'cli.jsonl');
    fs.writeFileSync(pairsFile, PAIRS.map((p) => JSON.stringify(p)).join('\n') + '\n');
  });

  test('ngate launch -- learn-mask writes, from rank 0 only, the masks one process writes; build-gate pools shard files over the ranks', async () => {
    const dir = path.join(work, 'cli');
    const args = ['learn-mask', '--model', modelDir, '--pairs', pairsFile, '--layers', '0,2', '--steps', '5', '--lr', '0.5', '--l1', '0',
      '--batch-size', '2', '-q'];
    // One thread per process on both sides (what the launcher gives 2 ranks on 2 cores; OpenBLAS
    // splits a product by its thread count, which changes the float32 sums), so the same kernels.
    const threads = { OMP_NUM_THREADS: '1' };
    const one = await start([ngateBin, ...args, '--out', path.join(dir, 'one.safetensors')], threads, 90000).exited;
    expect(one.code).toBe(EXIT.ok);
    const launched = start([ngateBin, 'launch', '--nproc-per-node', '2', '--', ...args, '--out', path.join(dir, 'two.safetensors')], threads, 90000);
    const e = await launched.exited;
    expect({ code: e.code, stderr: e.stderr.replace(/^ngate launch: 2 ranks.*\n/, '') }).toEqual({ code: 0, stderr: '' });
    // Only the output, no parts folder left behind, and the same bytes.
    expect(fs.readdirSync(dir).sort()).toEqual(['one.safetensors', 'two.safetensors']);
    const a = loadMasks(path.join(dir, 'one.safetensors')), b = loadMasks(path.join(dir, 'two.safetensors'));
    expect(Buffer.from(b.masks.buffer).equals(Buffer.from(a.masks.buffer))).toBe(true);
    expect(b.pairIds).toEqual(a.pairIds);

    // Three shard files over two ranks (rank 0 reads two, rank 1 one): the gate of all three.
    const shards = [[0, 1, 2], [3, 4], [5, 6]].map((idx, s) => {
      const f = path.join(work, `shard-${s}.safetensors`);
      const H = a.hiddenSize, L = a.layers.length;
      saveMasks({ ...a, pairIds: idx.map((i) => a.pairIds[i]), losses: idx.map((i) => a.losses[i]),
        masks: Float32Array.from(idx.flatMap((i) => [...a.masks.subarray(i * L * H, (i + 1) * L * H)])) }, f);
      return f;
    });
    const gateFile = path.join(work, 'pooled-gate.safetensors');
    const g = start([ngateBin, 'launch', '--nproc-per-node', '2', '--', 'build-gate', '--masks', ...shards, '--out', gateFile, '--json'], {}, 60000);
    const ge = await g.exited;
    expect(ge.code).toBe(0);
    const pooled = loadGate(gateFile);
    const whole = buildGate(a);
    expect([...pooled.negativeCounts!]).toEqual([...whole.negativeCounts!]);
    expect([...pooled.keep]).toEqual([...whole.keep]);
    expect(JSON.parse(ge.stdout).pairCount).toBe(PAIRS.length);
  });
});
