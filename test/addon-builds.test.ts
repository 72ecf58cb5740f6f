// Built addons are keyed by the libtorch they link and the sources they were
// compiled from: a build for another libtorch, or from other sources, is never
// loaded; a CUDA libtorch is preferred over a CPU one unless LIBTORCH says
// otherwise; NGATE_BUILD=never turns a missing build into an error that says
// how to build. Fake libtorch folders and a scratch cache stand in for other
// installations; the real build is copied into the cache to be found there.
import * as fs from 'fs';
import * as path from 'path';
import { buildTools, loadedAddon, loadAddon, preferredLibtorch } from '../lib/model/native';
import { makeTempDir } from './fixtures/checkpoint';

const saved: Record<string, string | undefined> = {};
function setEnv(vars: Record<string, string | undefined>): void {
  for (const [k, v] of Object.entries(vars)) {
    if (!(k in saved)) saved[k] = process.env[k];
    if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
}
afterEach(() => {
  for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  for (const k of Object.keys(saved)) delete saved[k];
});

/** A folder that looks like a pip-installed torch's libtorch: CMake files, version.py, libraries. */
function fakeLibtorch(cuda: string | null): string {
  const root = path.join(makeTempDir('ngate-fake-torch-'), 'torch');
  const cfg = path.join(root, 'share', 'cmake', 'Torch');
  fs.mkdirSync(cfg, { recursive: true });
  fs.mkdirSync(path.join(root, 'include', 'torch'), { recursive: true });
  fs.mkdirSync(path.join(root, 'lib'), { recursive: true });
  fs.writeFileSync(path.join(cfg, 'TorchConfig.cmake'), 'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")\n');
  fs.writeFileSync(path.join(cfg, 'TorchConfigVersion.cmake'), 'set(PACKAGE_VERSION "2.11.0")\n');
  fs.writeFileSync(path.join(root, 'version.py'), `__version__ = '2.11.0${cuda ? '+cu' + cuda.replace('.', '') : '+cpu'}'\ncuda = ${cuda ? `'${cuda}'` : 'None'}\n`);
  for (const lib of ['torch', 'torch_cpu', 'c10', ...(cuda ? ['torch_cuda', 'c10_cuda'] : [])]) fs.writeFileSync(path.join(root, 'lib', `lib${lib}.so`), '');
  return path.join(root, 'share', 'cmake');
}

test('a CUDA libtorch is preferred over a CPU one, LIBTORCH overrides the choice, and keys tell them apart', () => {
  const cpu = preferredLibtorch();
  expect(cpu).not.toBeNull();
  const cudaPrefix = fakeLibtorch('12.4');
  setEnv({ CMAKE_PREFIX_PATH: cudaPrefix, LIBTORCH: undefined });
  const picked = preferredLibtorch()!;
  expect(picked.cuda).toBe('12.4');
  expect(picked.version).toBe('2.11.0');
  expect(picked.key).toMatch(/^torch2\.11\.0-cu124-abi1-[0-9a-f]{8}$/);
  expect(picked.key).not.toBe(cpu!.key);
  setEnv({ LIBTORCH: cpu!.root === '/usr' ? path.dirname(cpu!.configDir) : cpu!.root });
  expect(preferredLibtorch()!.key).toBe(cpu!.key);
  // Two CPU builds at different paths are different libtorches too.
  setEnv({ LIBTORCH: undefined, CMAKE_PREFIX_PATH: fakeLibtorch(null) });
  const other = buildTools().findAllLibtorch().find((t) => t.version === '2.11.0')!;
  expect(other.cuda).toBeNull();
  expect(other.key).not.toBe(cpu!.key);
});

describe('which build is loaded', () => {
  const real = (() => { loadAddon(); return loadedAddon()!; })();

  function cacheWith(edit?: (info: Record<string, unknown>) => void): string {
    const cache = makeTempDir('ngate-cache-');
    const key = edit ? 'edited' : path.basename(path.dirname(real.file));
    const dir = path.join(cache, 'addons', key);
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(real.file, path.join(dir, 'ngate.node'));
    const info = JSON.parse(fs.readFileSync(path.join(path.dirname(real.file), 'build-info.json'), 'utf8'));
    edit?.(info);
    fs.writeFileSync(path.join(dir, 'build-info.json'), JSON.stringify(info));
    return cache;
  }

  function freshLoader(): typeof import('../lib/model/native') {
    let mod!: typeof import('../lib/model/native');
    jest.isolateModules(() => { mod = require('../lib/model/native'); });
    return mod;
  }

  test('the build made for this libtorch and these sources is found in the cache folder', () => {
    setEnv({ NGATE_CACHE_DIR: cacheWith(), NGATE_BUILD: 'never' });
    const loader = freshLoader();
    expect(typeof loader.loadAddon().info).toBe('function');
    expect(loader.loadedAddon()!.file.startsWith(process.env.NGATE_CACHE_DIR!)).toBe(true);
  });

  test.each([
    ['another libtorch', (i: Record<string, any>) => { i.key = i.key.replace(i.libtorch.key, 'torch2.11.0-cu124-abi1-0badc0de'); i.libtorch.key = 'torch2.11.0-cu124-abi1-0badc0de'; i.libtorch.configDir = '/nonexistent/cmake/Torch'; }],
    ['other sources', (i: Record<string, any>) => { i.key = i.key.replace(/-src[0-9a-f]+$/, '-src000000000000'); i.sourcesHash = '000000000000'; }],
  ])('a build for %s is never loaded; with NGATE_BUILD=never the error says how to build', async (_what, edit) => {
    setEnv({ NGATE_CACHE_DIR: cacheWith(edit), NGATE_BUILD: 'never' });
    const loader = freshLoader();
    expect(() => loader.loadAddon()).toThrow(/no addon is built for libtorch .*npx ngate build/);
    await expect(loader.ensureAddon()).rejects.toMatchObject({ code: 'ERR_ADDON' });
  });

  test('NGATE_BUILD takes never, auto or force only', async () => {
    setEnv({ NGATE_BUILD: 'sometimes' });
    await expect(freshLoader().ensureAddon()).rejects.toMatchObject({ code: 'ERR_ADDON', field: 'NGATE_BUILD' });
  });

  test('NGATE_ADDON names the binary to use, and a broken one is refused with the reason', () => {
    const bad = path.join(makeTempDir(), 'broken.node');
    fs.writeFileSync(bad, 'not a shared object');
    setEnv({ NGATE_ADDON: bad });
    expect(() => freshLoader().loadAddon()).toThrow(/does not load/);
  });
});
