// The package as another project sees it: what the tarball holds, its type
// declarations under TypeScript 5 and 7 and arethetypeswrong, one library
// instance (one NgateError class) whether it is imported or required, and an
// import that loads neither sharp nor vega. The consumer project links the
// package folder (dist/ must be built: `npm test` builds it first); the install
// of the packed tarball from npm is scripts/pack-check.sh's job (CI runs it).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { makeTempDir } from './fixtures/checkpoint';

const root = path.resolve(__dirname, '..');
const run = (cmd: string, args: string[], cwd: string) => spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 120000 });
const distBuilt = fs.existsSync(path.join(root, 'dist', 'index.mjs'));

describe('the tarball', () => {
  let files: string[] = [];
  let tarball = '';
  beforeAll(() => {
    const dest = makeTempDir('ngate-pack-');
    // --ignore-scripts: pack what dist/ holds now, without prepack's rebuild.
    const r = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], root);
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout)[0] as { filename: string; files: { path: string }[] };
    files = info.files.map((f) => f.path);
    tarball = path.join(dest, info.filename);
  });

  test('holds what a user runs: the bundles, the demo model, the native sources and the build scripts', () => {
    for (const f of ['dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts', 'dist/cli.js', 'bin/ngate.js',
      'models/demo/model.safetensors', 'models/demo/tokenizer.json', 'CMakeLists.txt', 'native/binding/addon.cpp',
      'scripts/install.js', 'scripts/build-native.js', 'scripts/find-libtorch.js', 'scripts/addon.js', 'scripts/native-sources.js',
      'README.md', 'LICENSE', 'package.json']) {
      expect(files).toContain(f);
    }
  });

  test('holds no binary, source map, GPU script, Python reference maker, test or TypeScript source', () => {
    const unwanted = files.filter((f) => /\.(node|map|py|so)$/.test(f) || /^(scripts\/gpu|test|benchmarks|lib|prebuilds|build)\//.test(f));
    expect(unwanted).toEqual([]);
  });

  (distBuilt ? test : test.skip)('arethetypeswrong finds no problem for import, require, node10 or bundlers', () => {
    const r = run(process.execPath, [path.join(root, 'node_modules', '@arethetypeswrong', 'cli', 'dist', 'index.js'), tarball, '--format', 'json'], root);
    const doc = JSON.parse(r.stdout) as { problems?: unknown; analysis?: { types?: unknown } };
    // attw lists problems by entry point and kind; none at all is the pass.
    expect(Object.values(doc.problems ?? {}).flat()).toEqual([]);
    expect(doc.analysis?.types).toEqual({ kind: 'included' });
    expect(r.status).toBe(0);
  });
});

(distBuilt ? describe : describe.skip)('a project that depends on it', () => {
  let project: string;
  beforeAll(() => {
    project = makeTempDir('ngate-consumer-');
    fs.mkdirSync(path.join(project, 'node_modules', '@ngate'), { recursive: true });
    fs.symlinkSync(root, path.join(project, 'node_modules', '@ngate', 'core'), 'dir');
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'commonjs' }));
    // Strict, with no ambient types at all (TypeScript 7's default): the declarations must bring what they use.
    fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, noUncheckedIndexedAccess: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', types: [], noEmit: true, skipLibCheck: false },
      files: ['esm.mts', 'cjs.cts'],
    }));
    const body = (imp: string) => [
      imp,
      'export async function main(): Promise<string> {',
      '  const model = await ngate.loadModel(ngate.demoModelDir(), { device: "auto", threads: 1 });',
      '  const [g] = await model.generate(["What is the passport type?"], { chat: true, maxNewTokens: 8, temperature: 0.7, topP: 0.9, seed: 1 });',
      '  for await (const t of model.stream("Hello", { maxNewTokens: 2 })) void t.text.length;',
      '  await model.dispose();',
      '  const code: ngate.NgateErrorCode = "ERR_INPUT";',
      '  try { ngate.buildGate([], {}); } catch (e) { if (ngate.isNgateError(e, code) && e instanceof ngate.NgateError) return e.code; }',
      '  return g?.text ?? "";',
      '}',
    ].join('\n');
    fs.writeFileSync(path.join(project, 'esm.mts'), body("import * as ngate from '@ngate/core';"));
    fs.writeFileSync(path.join(project, 'cjs.cts'), body("import ngate = require('@ngate/core');"));
  });

  test.each([
    ['TypeScript 5', path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')],
    ['TypeScript 7', path.join(root, 'node_modules', 'typescript-7', 'bin', 'tsc')],
  ])('type-checks from ESM and CommonJS under %s, strict, with no ambient types', (_name, tsc) => {
    const r = run(process.execPath, [tsc, '-p', 'tsconfig.json'], project);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('import and require give one library: the same NgateError class, errors caught across both', () => {
    fs.writeFileSync(path.join(project, 'same.mjs'), [
      "import * as esm from '@ngate/core';",
      "import { createRequire } from 'module';",
      "const cjs = createRequire(import.meta.url)('@ngate/core');",
      "let caught; try { cjs.buildGate([]); } catch (e) { caught = e; }",
      'console.log(JSON.stringify({ same: esm.NgateError === cjs.NgateError, loadModel: esm.loadModel === cjs.loadModel,',
      '  instance: caught instanceof esm.NgateError, is: esm.isNgateError(caught, "ERR_INPUT"), names: Object.keys(esm).length === Object.keys(cjs).length }));',
    ].join('\n'));
    const r = run(process.execPath, ['same.mjs'], project);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ same: true, loadModel: true, instance: true, is: true, names: true });
  });

  test('importing loads neither sharp nor vega (they load with the first image or figure)', () => {
    fs.writeFileSync(path.join(project, 'lazy.cjs'), [
      'const t0 = process.hrtime.bigint();',
      "require('@ngate/core');",
      'const ms = Number(process.hrtime.bigint() - t0) / 1e6;',
      "const loaded = Object.keys(require.cache).filter((f) => /node_modules[\\\\/](sharp|vega|vega-lite|@img)[\\\\/]/.test(f));",
      'console.log(JSON.stringify({ ms, loaded }));',
    ].join('\n'));
    const r = run(process.execPath, ['lazy.cjs'], project);
    expect(JSON.parse(r.stdout).loaded).toEqual([]);
  });
});
