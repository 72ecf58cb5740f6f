// ngate doctor: what the library would run on, and what is missing, each with
// the command that fixes it.
import { spawnSync } from 'child_process';
import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { buildTools, LibtorchInfo, packageRoot } from '../model/native';
import { addOutputOptions, Context, Define } from './shared';

interface Check { name: string; ok: boolean; detail: string; fix?: string }

function version(cmd: string, args: string[] = ['--version']): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20000 });
  return r.status === 0 ? (r.stdout || r.stderr).split('\n')[0].trim() : null;
}

function nodeOk(): boolean {
  const [major, minor] = process.versions.node.split('.').map(Number);
  return (major === 20 && minor >= 17) || (major === 22 && minor >= 9) || major > 22 || (major === 21);
}

async function doctorCommand(ctx: Context): Promise<void> {
  const t = buildTools();
  const checks: Check[] = [];
  checks.push({ name: 'node', ok: nodeOk(), detail: process.version, fix: 'install Node.js ≥ 20.17 (or ≥ 22.9)' });
  let all: LibtorchInfo[] = [];
  try {
    all = t.findAllLibtorch({ askPython: true });
  } catch (e) {
    checks.push({ name: 'libtorch', ok: false, detail: (e as Error).message, fix: 'point LIBTORCH at a libtorch folder, or unset it' });
  }
  const chosen = all.find((x) => x.cuda) ?? all[0] ?? null;
  if (all.length === 0 && !checks.some((c) => c.name === 'libtorch')) {
    checks.push({ name: 'libtorch', ok: false, detail: 'none found', fix: t.HOW_TO_GET.replace(/\n/g, ' ') });
  }
  for (const x of all) {
    checks.push({ name: x === chosen ? 'libtorch (used)' : 'libtorch (also found)', ok: true,
      detail: `${x.version}, ${x.cuda ? `CUDA ${x.cuda}` : 'CPU only'}, C++ ABI ${x.cxx11Abi}, from ${x.source}: ${x.configDir}` });
  }
  const cmake = version('cmake');
  const cmakeVersion = cmake ? (/(\d+)\.(\d+)/.exec(cmake) ?? []).slice(1).map(Number) : [];
  const cmakeOk = cmakeVersion.length === 2 && (cmakeVersion[0] > 3 || (cmakeVersion[0] === 3 && cmakeVersion[1] >= 18));
  checks.push({ name: 'cmake', ok: cmakeOk, detail: cmake ?? 'not found', fix: 'apt-get install cmake (3.18 or newer), or pip install cmake' });
  const cxx = version(process.env.CXX || 'g++') ?? version('c++');
  checks.push({ name: 'C++ compiler', ok: cxx !== null, detail: cxx ?? 'not found', fix: 'apt-get install g++ (C++17)' });
  if (chosen?.cuda) {
    const nvcc = version('nvcc');
    checks.push({ name: 'CUDA toolkit (nvcc)', ok: nvcc !== null, detail: nvcc ?? 'not found',
      fix: `install the CUDA toolkit matching libtorch's CUDA ${chosen.cuda} (CMake's CUDA checks in TorchConfig need it); without a GPU visible at build time set NGATE_CUDA_ARCHITECTURES (e.g. 90)` });
  }
  if (chosen) {
    const build = t.findBuild(chosen);
    if (build) {
      const why = t.testLoad(build.file);
      checks.push({ name: 'addon', ok: why === null, detail: `${build.file} (built ${build.info.builtAt})${why ? `: does not load: ${why}` : ''}`,
        fix: 'npx ngate build --force' });
    } else {
      checks.push({ name: 'addon', ok: false, detail: `not built yet for this libtorch and these sources (looked in ${t.searchDirs().join(', ')})`,
        fix: 'npx ngate build (or let the first loadModel() build it)' });
    }
  }
  if (process.env.NGATE_ADDON) checks.push({ name: 'NGATE_ADDON', ok: fs.existsSync(process.env.NGATE_ADDON), detail: `overrides the choice: ${process.env.NGATE_ADDON}` });
  if (process.env.NGATE_BUILD) checks.push({ name: 'NGATE_BUILD', ok: ['never', 'auto', 'force'].includes(process.env.NGATE_BUILD), detail: process.env.NGATE_BUILD, fix: 'NGATE_BUILD must be never, auto or force' });
  let sharpDetail = 'loads';
  try { require('sharp'); } catch (e) { sharpDetail = (e as Error).message.split('\n')[0]; }
  checks.push({ name: 'sharp (images)', ok: sharpDetail === 'loads', detail: sharpDetail, fix: 'npm rebuild sharp (only images need it)' });
  const demo = path.join(packageRoot(), 'models', 'demo', 'config.json');
  checks.push({ name: 'demo model', ok: fs.existsSync(demo), detail: fs.existsSync(demo) ? path.dirname(demo) : 'missing', fix: 'reinstall @ngate/core' });

  const missing = checks.filter((c) => !c.ok);
  ctx.emit({ ok: missing.length === 0, checks, buildDir: t.buildDir() }, [
    ...checks.map((c) => `${c.ok ? 'ok     ' : 'MISSING'} ${c.name}: ${c.detail}${!c.ok && c.fix ? `\n        fix: ${c.fix}` : ''}`),
    '', missing.length === 0 ? 'everything the library needs is here' : `${missing.length} thing${missing.length > 1 ? 's' : ''} to fix`,
  ].join('\n'));
  if (missing.length > 0) ctx.exitCode = 1;
}

export function addDoctorCommand(define: Define): Command {
  return addOutputOptions(define('doctor', 'check the setup: the libtorch found, the addon, the compiler and CMake, and how to fix what is missing', doctorCommand));
}
