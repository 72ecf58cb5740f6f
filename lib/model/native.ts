// Finding and loading the native addon.
//
// node-gyp-build cannot tell a CPU build from a CUDA build, nor one libtorch
// from another, and a binary linked against a libtorch that is not there kills
// the process inside dlopen's error path on some systems. So each candidate is
// first loaded in a child process; the first that loads there is used here.
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import { createRequire } from 'module';
import * as os from 'os';
import * as path from 'path';
import type { NativeAddon } from '../../types/native';
import { NgateError } from '../util/errors';

let cached: NativeAddon | null = null;

// The package root: lib/ in the sources, dist/ once bundled; both sit below it.
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..');
}

function candidates(root: string): string[] {
  const out: string[] = [];
  if (process.env.NGATE_ADDON) out.push(path.resolve(process.env.NGATE_ADDON));
  // node-gyp-build's own pick (a local build, else the best-tagged prebuild) goes first;
  // every other binary follows, since its pick may be linked to a libtorch that is not here.
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const ngb = createRequire(path.join(root, 'package.json'))('node-gyp-build') as { path(dir: string): string };
    out.push(ngb.path(root));
  } catch { /* no binary node-gyp-build accepts: the list below still applies */ }
  out.push(path.join(root, 'build', 'Release', 'ngate.node'));
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (fs.existsSync(prebuilds)) {
    for (const f of fs.readdirSync(prebuilds).sort()) if (f.endsWith('.node')) out.push(path.join(prebuilds, f));
  }
  return out.filter((p, i) => fs.existsSync(p) && out.indexOf(p) === i);
}

// A stamp in the temp folder remembers that this exact binary loaded before,
// so the child-process check runs once per build, not once per process.
function stampFor(file: string): string {
  const st = fs.statSync(file);
  const key = crypto.createHash('sha256').update(`${file}|${st.size}|${st.mtimeMs}|${process.version}`).digest('hex');
  return path.join(os.tmpdir(), `ngate-addon-ok-${key.slice(0, 24)}`);
}

function testLoad(file: string): string | null {
  const stamp = stampFor(file);
  if (fs.existsSync(stamp)) return null;
  // LD_BIND_NOW resolves every symbol at load, so a binary with a missing
  // symbol fails here rather than when that function is first called.
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)}).info()`], {
    encoding: 'utf8', timeout: 120000, env: { ...process.env, LD_BIND_NOW: '1' },
  });
  if (r.status === 0) {
    try { fs.writeFileSync(stamp, file); } catch { /* a read-only temp folder only costs the check next time */ }
    return null;
  }
  return (r.stderr || r.error?.message || `exit ${r.status ?? r.signal}`).trim().split('\n').slice(-3).join(' ');
}

/** The first of `files` that loads in a child process, and why the others did not. */
export function firstLoadable(files: string[]): { file: string | null; failures: string[] } {
  const failures: string[] = [];
  for (const file of files) {
    const why = testLoad(file);
    if (!why) return { file, failures };
    failures.push(`${file}: ${why}`);
  }
  return { file: null, failures };
}

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const root = packageRoot();
  const { file, failures } = firstLoadable(candidates(root));
  if (file) {
    // createRequire works the same from the CommonJS and the ESM bundle.
    cached = createRequire(path.join(root, 'package.json'))(file) as NativeAddon;
    return cached;
  }
  const tried = failures.length ? `\nTried:\n  ${failures.join('\n  ')}` : '';
  throw new NgateError('ERR_ADDON',
    `the @ngate/core native addon is not available (looked in ${path.join(root, 'build', 'Release')} and ${path.join(root, 'prebuilds')}). ` +
    `Build it with \`npm run build:native\` (needs libtorch: see \`node scripts/find-libtorch.js\`).${tried}`);
}

export function nativeInfo() {
  return loadAddon().info();
}
