// Finding, building and loading the native addon.
//
// An addon links one libtorch, so it is only valid with that one: builds are
// filed under a key naming the libtorch (version, CUDA version, C++ ABI, path)
// and the sources (scripts/addon.js). The loader picks the libtorch to run on
// (LIBTORCH when set, else a CUDA one over a CPU one, else the first found) and
// loads the build made for it; when there is none, ensureAddon() builds it once
// (NGATE_BUILD=never|auto|force), as node-llama-cpp does for its binaries. A
// binary linked against a libtorch that is not there kills the process inside
// dlopen's error path on some systems, so each one is first loaded in a child
// process.
import * as crypto from 'crypto';
import * as fs from 'fs';
import { createRequire } from 'module';
import * as os from 'os';
import * as path from 'path';
import type { NativeAddon, NativeInfo } from '../../types/native';
import { NgateError } from '../util/errors';

/** A libtorch installation, as scripts/find-libtorch.js describes it. */
export interface LibtorchInfo {
  source: string; configDir: string; root: string; libDir: string; includeDirs: string[]; libs: string[];
  version: string; cuda: string | null; cxx11Abi: number; cmakePrefix: string; key: string;
}

/** What scripts/addon.js writes beside each build. */
export interface BuildInfo {
  key: string; sourcesHash: string; platform: string; arch: string; builtAt: string; seconds: number; node: string;
  libtorch: Pick<LibtorchInfo, 'key' | 'version' | 'cuda' | 'cxx11Abi' | 'source' | 'configDir' | 'libDir'>;
  cudaArchitectures?: string; debug: boolean;
}

export interface BuiltAddon { file: string; dir: string; info: BuildInfo }

interface BuildTools {
  findLibtorch(opts?: { libtorch?: string; askPython?: boolean }): LibtorchInfo | null;
  findAllLibtorch(opts?: { libtorch?: string; askPython?: boolean }): LibtorchInfo[];
  describeLibtorch(configDir: string, source: string): LibtorchInfo | null;
  HOW_TO_GET: string;
  sourcesHash(): string;
  listBuilds(): BuiltAddon[];
  findBuild(torch: LibtorchInfo, hash?: string): BuiltAddon | null;
  ensureBuild(torch: LibtorchInfo, opts?: {
    force?: boolean; cudaArchitectures?: string; jobs?: number;
    onLine?: (line: string) => void; onProgress?: (message: string) => void; onWait?: (pid: number) => void;
  }): Promise<BuiltAddon & { built: boolean; logFile?: string }>;
  testLoad(file: string): string | null;
  searchDirs(): string[];
  buildDir(): string;
}

let cached: { addon: NativeAddon; file: string; info: BuildInfo | null } | null = null;

/** The package root: lib/model/ in the sources, dist/ once bundled; both sit below it. */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const pkg = path.join(dir, 'package.json');
    try {
      if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === '@ngate/core') return dir;
    } catch { /* not here: one level up */ }
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..');
}

/** The build scripts the package ships (scripts/find-libtorch.js, scripts/addon.js), one implementation for install, CLI and loader. */
export function buildTools(): BuildTools {
  const req = createRequire(path.join(packageRoot(), 'package.json'));
  return { ...req('./scripts/find-libtorch.js'), ...req('./scripts/addon.js') } as BuildTools;
}

// A stamp in the temp folder remembers that this exact binary loaded before,
// so the child-process check runs once per build, not once per process.
function stampFor(file: string): string {
  const st = fs.statSync(file);
  const key = crypto.createHash('sha256').update(`${file}|${st.size}|${st.mtimeMs}|${process.version}`).digest('hex');
  return path.join(os.tmpdir(), `ngate-addon-ok-${key.slice(0, 24)}`);
}

function testLoadStamped(file: string): string | null {
  const stamp = stampFor(file);
  if (fs.existsSync(stamp)) return null;
  const why = buildTools().testLoad(file);
  if (!why) {
    try { fs.writeFileSync(stamp, file); } catch { /* a read-only temp folder only costs the check next time */ }
  }
  return why;
}

/** The first of `files` that loads in a child process, and why the others did not. */
export function firstLoadable(files: string[]): { file: string | null; failures: string[] } {
  const failures: string[] = [];
  for (const file of files) {
    const why = testLoadStamped(file);
    if (!why) return { file, failures };
    failures.push(`${file}: ${why}`);
  }
  return { file: null, failures };
}

/**
 * The libtorch the addon runs on: LIBTORCH when set; otherwise, among those
 * found on this machine and those earlier builds were made for, a CUDA one
 * before a CPU one. Null when there is none.
 */
export function preferredLibtorch(): LibtorchInfo | null {
  const t = buildTools();
  const found = t.findAllLibtorch();
  if (process.env.LIBTORCH) return found[0] ?? null;
  const seen = new Set(found.map((x) => x.key));
  for (const b of t.listBuilds()) {
    if (seen.has(b.info.libtorch.key)) continue;
    const again = t.describeLibtorch(b.info.libtorch.configDir, b.info.libtorch.source);
    if (again && !seen.has(again.key)) { found.push(again); seen.add(again.key); }
  }
  return found.find((x) => x.cuda) ?? found[0] ?? null;
}

function requireAddon(file: string): NativeAddon {
  // createRequire works the same from the CommonJS and the ESM bundle.
  return createRequire(path.join(packageRoot(), 'package.json'))(file) as NativeAddon;
}

function useFile(file: string, info: BuildInfo | null): NativeAddon {
  const why = testLoadStamped(file);
  if (why) throw new NgateError('ERR_ADDON', `the addon ${file} does not load: ${why}. Rebuild it with \`npx ngate build --force\`; \`npx ngate doctor\` checks the setup.`, { file });
  cached = { addon: requireAddon(file), file, info };
  return cached.addon;
}

function buildMode(): 'never' | 'auto' | 'force' {
  const m = process.env.NGATE_BUILD ?? 'auto';
  if (m !== 'never' && m !== 'auto' && m !== 'force') {
    throw new NgateError('ERR_ADDON', `NGATE_BUILD must be never, auto or force, got "${m}"`, { field: 'NGATE_BUILD' });
  }
  return m;
}

function describeTorch(t: LibtorchInfo): string {
  return `libtorch ${t.version} (${t.cuda ? `CUDA ${t.cuda}` : 'CPU'}) at ${t.configDir}`;
}

/**
 * The addon, already built: NGATE_ADDON when set, else the build for the
 * preferred libtorch and the current sources. Never builds; ensureAddon does.
 */
export function loadAddon(): NativeAddon {
  if (cached) return cached.addon;
  if (process.env.NGATE_ADDON) return useFile(path.resolve(process.env.NGATE_ADDON), null);
  const t = buildTools();
  const torch = preferredLibtorch();
  if (!torch) throw new NgateError('ERR_ADDON', `the @ngate/core native addon needs libtorch. ${t.HOW_TO_GET}`);
  const build = t.findBuild(torch);
  if (!build) {
    throw new NgateError('ERR_ADDON',
      `no addon is built for ${describeTorch(torch)} and these sources (looked in ${t.searchDirs().join(', ')}). ` +
      'Build it with `npx ngate build` (or let loadModel() build it: NGATE_BUILD=auto, the default); `npx ngate doctor` checks the setup.');
  }
  return useFile(build.file, build.info);
}

let building: Promise<NativeAddon> | null = null;

/**
 * The addon, built first when there is none for the preferred libtorch
 * (NGATE_BUILD=auto, the default), or rebuilt once per process
 * (NGATE_BUILD=force), or never built (NGATE_BUILD=never: an error says how).
 * Progress lines go to `log` (stderr by default).
 */
export async function ensureAddon(opts: { log?: (line: string) => void } = {}): Promise<NativeAddon> {
  if (cached) return cached.addon;
  if (building) return building;
  const mode = buildMode();
  if (process.env.NGATE_ADDON || mode === 'never') return loadAddon();
  const log = opts.log ?? ((line: string) => { process.stderr.write(line + '\n'); });
  building = (async () => {
    const t = buildTools();
    const torch = preferredLibtorch();
    if (!torch) throw new NgateError('ERR_ADDON', `the @ngate/core native addon needs libtorch. ${t.HOW_TO_GET}`);
    if (mode === 'auto') {
      const found = t.findBuild(torch);
      if (found) return useFile(found.file, found.info);
    }
    log(`@ngate/core: building the native addon for ${describeTorch(torch)}; this happens once and takes a few minutes (\`npx ngate build\` does it ahead of time)`);
    let built;
    try {
      built = await t.ensureBuild(torch, {
        force: mode === 'force',
        onProgress: (m) => log(`@ngate/core: still building the addon (${m})`),
        onWait: (pid) => log(`@ngate/core: waiting for process ${pid}, which is building the addon`),
      });
    } catch (e) {
      throw new NgateError('ERR_ADDON_BUILD', `${(e as Error).message}\n\`npx ngate doctor\` lists what the build needs.`, { cause: e });
    }
    if (built.built) log(`@ngate/core: built ${built.file} in ${built.info.seconds} s`);
    return useFile(built.file, built.info);
  })().finally(() => { building = null; });
  return building;
}

/** Which addon file is loaded and what it was built against (null before the first load). */
export function loadedAddon(): { file: string; info: BuildInfo | null } | null {
  return cached ? { file: cached.file, info: cached.info } : null;
}

/** What the addon reports about its libtorch (built first if needed), and which file it is. */
export async function nativeInfo(): Promise<NativeInfo & { addonFile: string }> {
  const addon = await ensureAddon();
  return { ...addon.info(), addonFile: cached!.file };
}

/**
 * libtorch's intra-op threads for all native work of this process (the addon
 * runs every call on one worker thread, whose thread pool this sizes).
 * Resolves to the count now in effect, which nativeInfo().threads also reports.
 */
export async function setThreads(threads: number): Promise<number> {
  if (!Number.isInteger(threads) || threads < 1) {
    throw new NgateError('ERR_INPUT', `must be a positive integer, got ${String(threads)}`, { field: 'threads' });
  }
  return (await ensureAddon()).setThreads(threads);
}
