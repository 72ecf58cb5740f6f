'use strict';
// Built addons, keyed by what they are valid with. An addon links one
// libtorch, so its key holds that libtorch's key (version, CUDA version, C++
// ABI, path: scripts/find-libtorch.js) and a hash of the native sources it was
// compiled from: a binary is never loaded against another libtorch, nor after
// the sources changed. Used by the library's loader (lib/model/native.ts), by
// `ngate build` and by `npm run build:native`; plain CommonJS so that it also
// runs before dist/ exists.
//
// Where builds live: $NGATE_CACHE_DIR when set, else <package>/build when the
// package folder is writable, else $XDG_CACHE_HOME/ngate (~/.cache/ngate):
//   <dir>/addons/<key>/ngate.node + build-info.json   finished builds
//   <dir>/cmake/<libtorch key>/                       CMake's build tree (incremental), build.log
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const SOURCE_DIRS = ['native'];
const SOURCE_FILES = ['CMakeLists.txt', 'scripts/native-sources.js', 'scripts/find-dist.js'];

function filesUnder(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : /\.(h|hpp|cpp|cc|txt)$/.test(e.name) ? [p] : [];
  });
}

/** A hash of everything that goes into the binary: the native sources and the build files. */
function sourcesHash() {
  const h = crypto.createHash('sha256');
  const files = [...SOURCE_DIRS.flatMap((d) => filesUnder(path.join(root, d))), ...SOURCE_FILES.map((f) => path.join(root, f))]
    .filter((f) => fs.existsSync(f)).sort();
  for (const f of files) h.update(path.relative(root, f)).update('\0').update(fs.readFileSync(f)).update('\0');
  return h.digest('hex').slice(0, 12);
}

function addonKey(torch, hash = sourcesHash()) {
  return `${process.platform}-${process.arch}-${torch.key}-src${hash}`;
}

function writable(dir) {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function userCacheDir() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'ngate');
}

/** Where addons are looked for, in order. */
function searchDirs() {
  if (process.env.NGATE_CACHE_DIR) return [path.resolve(process.env.NGATE_CACHE_DIR)];
  return [path.join(root, 'build'), userCacheDir()];
}

/** Where a new build goes. */
function buildDir() {
  if (process.env.NGATE_CACHE_DIR) return path.resolve(process.env.NGATE_CACHE_DIR);
  const local = path.join(root, 'build');
  return writable(local) ? local : userCacheDir();
}

function readInfo(dir) {
  try { return JSON.parse(fs.readFileSync(path.join(dir, 'build-info.json'), 'utf8')); } catch { return null; }
}

/** Every finished build in the search folders: { file, dir, info }. */
function listBuilds() {
  const out = [];
  for (const base of searchDirs()) {
    const addons = path.join(base, 'addons');
    if (!fs.existsSync(addons)) continue;
    for (const key of fs.readdirSync(addons).sort()) {
      const dir = path.join(addons, key);
      const file = path.join(dir, 'ngate.node');
      const info = readInfo(dir);
      if (info && fs.existsSync(file)) out.push({ file, dir, info });
    }
  }
  return out;
}

/** The finished build for `torch` and the current sources, or null. */
function findBuild(torch, hash = sourcesHash()) {
  const key = addonKey(torch, hash);
  return listBuilds().find((b) => b.info.key === key) || null;
}

function tail(text, lines) {
  return text.split('\n').slice(-lines).join('\n');
}

/**
 * Builds the addon against `torch` with cmake-js and files it under its key.
 * opts: cudaArchitectures (e.g. "90" or "80;90"; default $NGATE_CUDA_ARCHITECTURES
 * or "native"), jobs, debug, onLine(line) for each line of build output,
 * onProgress(message) every few seconds. Resolves to the finished build;
 * rejects with the tail of the build log.
 */
function buildAddon(torch, opts = {}) {
  const hash = sourcesHash();
  const key = addonKey(torch, hash);
  const base = buildDir();
  const cmakeDir = path.join(base, 'cmake', `${process.platform}-${process.arch}-${torch.key}`);
  fs.mkdirSync(cmakeDir, { recursive: true });
  const logFile = path.join(cmakeDir, 'build.log');
  const args = [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--directory', root, '--out', cmakeDir,
    `--CDCMAKE_PREFIX_PATH=${torch.cmakePrefix}`, `--CDNODE_ADDON_API_DIR=${path.dirname(require.resolve('node-addon-api/package.json'))}`, '--parallel', String(opts.jobs || process.env.NGATE_BUILD_JOBS || Math.max(1, os.cpus().length))];
  const cudaArchitectures = opts.cudaArchitectures || process.env.NGATE_CUDA_ARCHITECTURES || 'native';
  // CMake's CUDA checks in TorchConfig want an architecture; no kernels of ours depend on it.
  if (torch.cuda) args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${cudaArchitectures}`);
  if (opts.debug || process.env.NGATE_DEBUG_BUILD) args.push('--debug');
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const log = fs.createWriteStream(logFile);
    let output = '';
    let last = '';
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (chunk) => {
      const s = chunk.toString();
      log.write(s);
      output = tail(output + s, 400);
      for (const line of s.split(/\r?\n/)) {
        if (!line.trim()) continue;
        if (/^\[\d+\/\d+\]/.test(line)) last = line.replace(/CMakeFiles\/ngate\.dir\//, '');
        if (opts.onLine) opts.onLine(line);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = opts.onProgress ? setInterval(() => opts.onProgress(`${Math.round((Date.now() - started) / 1000)} s${last ? `, ${last}` : ''}`), 10000) : null;
    child.on('error', (e) => { if (timer) clearInterval(timer); log.end(); reject(e); });
    child.on('close', (code, signal) => {
      if (timer) clearInterval(timer);
      log.end();
      if (code !== 0) {
        const err = new Error(`the addon build failed (${signal || `exit ${code}`}); the last lines of ${logFile}:\n${tail(output.trimEnd(), 40)}`);
        err.logFile = logFile;
        reject(err);
        return;
      }
      const config = opts.debug || process.env.NGATE_DEBUG_BUILD ? 'Debug' : 'Release';
      const built = path.join(cmakeDir, config, 'ngate.node');
      const dest = path.join(base, 'addons', key);
      const tmp = `${dest}.tmp-${process.pid}`;
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.mkdirSync(tmp, { recursive: true });
      fs.copyFileSync(built, path.join(tmp, 'ngate.node'));
      const info = {
        key, sourcesHash: hash, platform: process.platform, arch: process.arch, builtAt: new Date().toISOString(),
        seconds: Math.round((Date.now() - started) / 100) / 10, node: process.version,
        libtorch: { key: torch.key, version: torch.version, cuda: torch.cuda, cxx11Abi: torch.cxx11Abi, source: torch.source, configDir: torch.configDir, libDir: torch.libDir },
        ...(torch.cuda ? { cudaArchitectures } : {}), debug: config === 'Debug',
      };
      fs.writeFileSync(path.join(tmp, 'build-info.json'), JSON.stringify(info, null, 2) + '\n');
      fs.rmSync(dest, { recursive: true, force: true });
      fs.renameSync(tmp, dest);
      pruneOldBuilds(base, torch, key);
      resolve({ file: path.join(dest, 'ngate.node'), dir: dest, info, logFile });
    });
  });
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; }
}

/**
 * The build for `torch` and the current sources, made if missing (or always,
 * with opts.force). One process builds at a time per libtorch: others wait for
 * its lock file and then use what it built.
 */
async function ensureBuild(torch, opts = {}) {
  if (!opts.force) {
    const found = findBuild(torch);
    if (found) return { ...found, built: false };
  }
  const lockDir = path.join(buildDir(), 'cmake');
  fs.mkdirSync(lockDir, { recursive: true });
  const lock = path.join(lockDir, `${process.platform}-${process.arch}-${torch.key}.lock`);
  const deadline = Date.now() + (opts.lockTimeoutMs || 60 * 60 * 1000);
  for (;;) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      const pid = Number(fs.readFileSync(lock, 'utf8')) || 0;
      if (pid > 0 && !alive(pid)) { fs.rmSync(lock, { force: true }); continue; }
      if (Date.now() > deadline) throw new Error(`another process (pid ${pid}) has been building the addon for too long; remove ${lock} if it is gone`);
      if (opts.onWait) opts.onWait(pid);
      await new Promise((r) => setTimeout(r, 1000));
      const done = findBuild(torch);
      if (done && !opts.force) return { ...done, built: false };
    }
  }
  try {
    const b = await buildAddon(torch, opts);
    return { ...b, built: true };
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

// Builds of the same libtorch from older sources are dead weight once a new one exists.
function pruneOldBuilds(base, torch, keep) {
  const addons = path.join(base, 'addons');
  for (const key of fs.readdirSync(addons)) {
    if (key === keep || key.endsWith(`.tmp-${process.pid}`)) continue;
    const info = readInfo(path.join(addons, key));
    if (info && info.libtorch && info.libtorch.key === torch.key && info.platform === process.platform && info.arch === process.arch) {
      fs.rmSync(path.join(addons, key), { recursive: true, force: true });
    }
  }
}

/**
 * Whether `file` loads in a fresh process (LD_BIND_NOW resolves every symbol
 * at load, so a binary with a missing symbol fails here and not at its first
 * call): null when it does, else the reason.
 */
function testLoad(file) {
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)}).info()`], {
    encoding: 'utf8', timeout: 120000, env: { ...process.env, LD_BIND_NOW: '1' },
  });
  if (r.status === 0) return null;
  return (r.stderr || (r.error && r.error.message) || `exit ${r.status === null ? r.signal : r.status}`).trim().split('\n').slice(-3).join(' ');
}

module.exports = { sourcesHash, addonKey, searchDirs, buildDir, listBuilds, findBuild, buildAddon, ensureBuild, testLoad, root };
