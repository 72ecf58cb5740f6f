#!/usr/bin/env node
'use strict';
// learnMask and gatedEdit on 1 and on W ranks (Gloo on the loopback), through
// `ngate launch --exec`: the wall time of each, the ratio to one rank, and the
// bytes each step moves between ranks.
//
//   node benchmarks/dist.js [--ranks 1,2] [--repeats 3] [--model DIR] [--pairs 32] [--layer 3] [--steps 20]
//     [--epochs 4] [--edit-batch 8] [--threads-per-rank N|auto] [--device cpu|cuda] [--tag TEXT]
//
// --device cuda: one GPU per rank (LOCAL_RANK), NCCL when the addon has it, bfloat16.
//
// Every run of W ranks gets the same pairs and options; runs of different W are
// interleaved so that a shared machine's load falls on all of them alike. One
// JSON line per run, then a table of medians. --threads-per-rank sets
// OMP_NUM_THREADS for each rank (default 1, so that W ranks use W cores; "auto":
// the cores divided by W).
//
// Internally, each rank runs this file with --rank-worker (under ngate launch).
const { spawnSync } = require('child_process');
const os = require('os');
const path = require('path');
const { parseArgs } = require('./lib/args');
const { median } = require('./lib/stats');

const root = path.join(__dirname, '..');
const now = () => Number(process.hrtime.bigint()) / 1e9;

/** The first n training pairs, round-robin over the categories (as benchmarks/method.js). */
function balanced(pairs, n) {
  const by = new Map();
  for (const p of pairs) by.set(p.category, [...(by.get(p.category) || []), p]);
  const queues = [...by.values()];
  const out = [];
  for (let r = 0; out.length < n && queues.some((q) => q.length > r); r++) {
    for (const q of queues) if (r < q.length && out.length < n) out.push(q[r]);
  }
  return out;
}

async function worker(a) {
  const lib = require(process.env.NGATE_DIST || path.join(root, 'dist'));
  const group = await lib.initProcessGroup({ device: a.device || 'cpu' });
  const model = await lib.loadModel(path.resolve(a.model || lib.demoModelDir()), { device: group.device });
  const layer = Number(a.layer || 3), steps = Number(a.steps || 20), epochs = Number(a.epochs || 4);
  const editBatch = Number(a['edit-batch'] || 8);
  let pairs = balanced(lib.buildPrivacyPairs({ seed: 0 }).train, Number(a.pairs || 32));
  pairs = await lib.fillBenignAnswers(model, pairs, { maxNewTokens: 24, group });
  // Untimed warm-up of both calls (first-call allocations, thread pools).
  const warm = lib.buildGate(await lib.learnMask(model, pairs.slice(0, 2), { layers: [layer], steps: 1, group }));
  const snapshot = await model.runNative(undefined, (n) => n.snapshotFfn([layer]));
  await lib.gatedEdit(model, pairs.slice(0, 2), warm, { epochs: 1, batchSize: 2, group });
  await model.runNative(undefined, (n) => n.restoreFfn(snapshot, true));
  model.editedTensors.clear();
  await group.barrier();
  const t0 = now();
  const masks = await lib.learnMask(model, pairs, { layers: [layer], steps, lr: 0.1, group });
  const t1 = now();
  const gate = lib.buildGate(masks);
  await group.barrier();
  const t2 = now();
  const edit = await lib.gatedEdit(model, pairs, gate, { epochs, lr: 1e-5, batchSize: editBatch, group });
  const t3 = now();
  const c = model.config;
  const stepsPerEpoch = Math.ceil(pairs.length / editBatch);
  if (group.rank === 0) {
    console.log(JSON.stringify({
      kind: 'run', ranks: group.size, backend: group.backend, device: group.device, threads: Number(process.env.OMP_NUM_THREADS || 0) || null, pairs: pairs.length, layer, steps, epochs,
      learnMaskS: t1 - t0, gatedEditS: t3 - t2, editSteps: epochs * stepsPerEpoch, lastEpochLoss: edit.epochLosses[edit.epochLosses.length - 1],
      // learnMask: no traffic while learning; at the end every rank's masks and losses are gathered (one all-reduce of them all).
      learnMaskGatherBytes: pairs.length * (c.hiddenSize * 4 + 12),
      // gatedEdit: one all-reduce per step of the gradients of gate_, up_ and down_proj of the layer, the loss and a stop flag.
      gatedEditStepBytes: (3 * c.hiddenSize * c.intermediateSize + 2) * 4,
      // Beside them, one checksum all-reduce (16 bytes) before the edit, every 50 steps and after the last.
      tag: a.tag || '',
    }));
  }
  model.dispose();
  await group.destroy();
}

function orchestrate(a) {
  const ranksList = (a.ranks || '1,2').split(',').map(Number);
  const repeats = Number(a.repeats || 3);
  const pass = ['model', 'pairs', 'layer', 'steps', 'epochs', 'edit-batch', 'device', 'tag'].flatMap((k) => (a[k] !== undefined ? [`--${k}`, a[k]] : []));
  const runs = [];
  for (let rep = 0; rep < repeats; rep++) {
    for (const W of ranksList) {
      const t = a['threads-per-rank'] || '1';
      const threads = t === 'auto' ? String(Math.max(1, Math.floor(os.cpus().length / W))) : t;
      const r = spawnSync(process.execPath, [path.join(root, 'bin', 'ngate.js'), 'launch', '--nproc-per-node', String(W), '--exec', '--',
        process.execPath, __filename, '--rank-worker', 'yes', ...pass], {
        encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: threads }, timeout: 30 * 60 * 1000, killSignal: 'SIGKILL',
      });
      const line = (r.stdout || '').split('\n').find((l) => l.startsWith('{"kind":"run"'));
      if (r.status !== 0 || !line) throw new Error(`W=${W} failed (exit ${r.status ?? r.signal}):\n${r.stderr}`);
      console.log(line);
      runs.push(JSON.parse(line));
    }
  }
  const base = runs.filter((r) => r.ranks === ranksList[0]);
  const m = (rs, k) => median(rs.map((r) => r[k]));
  console.log('\n| ranks | threads per rank | learnMask (s) | × vs first | gatedEdit (s) | × vs first | bytes per edit step | bytes gathered after learnMask |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const W of ranksList) {
    const rs = runs.filter((r) => r.ranks === W);
    console.log(`| ${W} | ${rs[0].threads} | ${m(rs, 'learnMaskS').toFixed(2)} | ${(m(base, 'learnMaskS') / m(rs, 'learnMaskS')).toFixed(2)} | ` +
      `${m(rs, 'gatedEditS').toFixed(2)} | ${(m(base, 'gatedEditS') / m(rs, 'gatedEditS')).toFixed(2)} | ${rs[0].gatedEditStepBytes.toLocaleString('en')} | ` +
      `${rs[0].learnMaskGatherBytes.toLocaleString('en')} |`);
  }
}

const args = parseArgs(process.argv.slice(2));
if (args['rank-worker']) worker(args).catch((e) => { console.error(e.stack || e.message); process.exit(1); });
else orchestrate(args);
