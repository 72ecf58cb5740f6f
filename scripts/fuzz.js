#!/usr/bin/env node
// `npm run fuzz -- [target|all] [--runs N] [--merge] [--out DIR]`: coverage-guided fuzzing
// of the file readers with Jazzer.js (libFuzzer driving instrumented JS).
//
// Each target (test/fuzz/targets.ts) starts from its seeds (test/fuzz/seeds.ts)
// and the committed corpus (test/fuzz/corpus/<target>), runs N executions
// (default 1,000,000) and prints one JSON line of figures. --merge then
// minimises what it found into the committed corpus. A finding (an exception
// other than NgateError, a run over --timeout, RSS over -rss_limit_mb) stops
// the run with a non-zero exit and leaves the input in build/fuzz/findings/ (DIR/findings with --out).
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync, execFileSync } = require('child_process');
const { ensureEngine } = require('./jazzer-glibc');

const root = path.join(__dirname, '..');
let out = path.join(root, 'build', 'fuzz');
// The bundle lives inside the package, whatever --out says, so that its
// require()s find node_modules; one per process, so that runs can overlap.
const bundleDir = path.join(root, 'build', 'fuzz', `bundle-${process.pid}`);
process.on('exit', () => fs.rmSync(bundleDir, { recursive: true, force: true }));
const TARGETS = ['safetensors', 'masks', 'gate', 'pairs', 'torch-checkpoint', 'torch-pickle', 'minigpt4-yaml', 'minigpt4-descriptor', 'model-config'];
// The JS export of a target name in targets.ts: the name in camelCase.
const exportOf = (target) => target.replace(/-(\w)/g, (_, c) => c.toUpperCase());
// Limits that make a hang or an unbounded allocation a finding.
const TIMEOUT_MS = 10000;
const RSS_LIMIT_MB = 2048;
const MAX_LEN = 8192;

function parseArgs(argv) {
  const o = { targets: [], runs: 1000000, merge: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--runs') o.runs = Number(argv[++i]);
    else if (a === '--merge') o.merge = true;
    else if (a === '--out') out = path.resolve(argv[++i]);
    else if (a === 'all') o.targets.push(...TARGETS);
    else if (TARGETS.includes(a)) o.targets.push(a);
    else { console.error(`unknown argument ${a}; targets: all, ${TARGETS.join(', ')}`); process.exit(2); }
  }
  if (!Number.isSafeInteger(o.runs) || o.runs < 1) { console.error('--runs must be a positive integer'); process.exit(2); }
  if (o.targets.length === 0) o.targets = TARGETS;
  return o;
}

/** Bundles targets.ts and seeds.ts with the library code they read (so Jazzer instruments it) into build/fuzz/bundle-<pid>. */
function bundle() {
  execFileSync(path.join(root, 'node_modules', '.bin', 'tsup'), ['test/fuzz/targets.ts', 'test/fuzz/seeds.ts',
    '--no-config', '--format', 'cjs', '--target', 'node20', '--out-dir', bundleDir, '--silent'], { cwd: root, stdio: 'inherit' });
}

function jazzer(args) {
  return spawnSync(path.join(root, 'node_modules', '.bin', 'jazzer'), args, { cwd: root, encoding: 'utf8', maxBuffer: 256 << 20 });
}

function fuzzOne(target, o) {
  const work = path.join(out, 'work', target);
  const kept = path.join(root, 'test', 'fuzz', 'corpus', target);
  const findings = path.join(out, 'findings');
  fs.mkdirSync(work, { recursive: true });
  fs.mkdirSync(kept, { recursive: true });
  fs.mkdirSync(findings, { recursive: true });
  require(path.join(bundleDir, 'seeds.js')).writeSeeds(target, path.join(out, 'seeds', target));
  const common = [path.join(bundleDir, 'targets.js'), '-f', exportOf(target), '--sync', '--timeout', String(TIMEOUT_MS),
    // The readers open files by design (a pairs file names images): not a path traversal.
    '--disable_bug_detectors', 'path-traversal', '--disable_bug_detectors', 'command-injection'];
  const engine = [`-rss_limit_mb=${RSS_LIMIT_MB}`, `-max_len=${MAX_LEN}`, `-artifact_prefix=${findings}/${target}-`, '-print_final_stats=1'];
  const t0 = Date.now();
  const r = jazzer([...common, work, kept, path.join(out, 'seeds', target), '--', `-runs=${o.runs}`, ...engine]);
  const seconds = (Date.now() - t0) / 1000;
  const log = `${r.stdout}\n${r.stderr}`;
  fs.writeFileSync(path.join(out, `${target}.log`), log);
  const stat = (name) => { const m = log.match(new RegExp(`stat::${name}:\\s+(\\d+)`)); return m ? Number(m[1]) : null; };
  const last = [...log.matchAll(/#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/g)].pop();
  const result = {
    target, runs: stat('number_of_executed_units'), seconds, execsPerSecond: stat('average_exec_per_sec'),
    coverage: last ? Number(last[2]) : null, features: last ? Number(last[3]) : null, corpus: last ? Number(last[4]) : null,
    peakRssMb: stat('peak_rss_mb'), exitCode: r.status, finding: r.status === 0 ? null : (log.match(/==\d+== (.*)/) ?? [null, log.slice(-2000)])[1],
  };
  if (r.status === 0 && o.merge) {
    // Minimise into a fresh folder, then swap it in: the committed corpus keeps only inputs that add coverage.
    const merged = `${kept}.merge`;
    fs.rmSync(merged, { recursive: true, force: true });
    fs.mkdirSync(merged);
    const m = jazzer([...common, merged, kept, work, '--', '-merge=1', ...engine]);
    if (m.status !== 0) throw new Error(`merge of ${target} failed:\n${m.stderr.slice(-2000)}`);
    fs.rmSync(kept, { recursive: true, force: true });
    fs.renameSync(merged, kept);
    result.keptCorpus = fs.readdirSync(kept).length;
  }
  return result;
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  console.error(`jazzer engine: ${ensureEngine()}`);
  bundle();
  let failed = false;
  for (const t of o.targets) {
    const r = fuzzOne(t, o);
    console.log(JSON.stringify(r));
    fs.appendFileSync(path.join(out, 'campaign.jsonl'), JSON.stringify({ ...r, date: new Date().toISOString() }) + '\n');
    if (r.exitCode !== 0) { failed = true; console.error(`${t}: finding, see ${path.join(out, t + ".log")} and ${path.join(out, "findings")}`); }
  }
  process.exit(failed ? 1 : 0);
}

main();
