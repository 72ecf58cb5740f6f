// The README's TypeScript examples, as a user copies them: each is type-checked
// in a project that depends on the package (tsc --strict with
// noUncheckedIndexedAccess, ESM, Node's types), and those that need no model
// of their own (no '/models/…' path: the embedded demo model or none) are
// compiled and run as written. dist/ must be built (`npm test` builds it first).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { makeTempDir } from './fixtures/checkpoint';

const root = path.resolve(__dirname, '..');
const distBuilt = fs.existsSync(path.join(root, 'dist', 'index.mjs'));

/** Every ```ts block of the README, with the line it starts on. */
export function readmeExamples(text: string): { line: number; code: string }[] {
  const out: { line: number; code: string }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '```ts') continue;
    const start = i + 1;
    let j = start;
    while (j < lines.length && lines[j]!.trim() !== '```') j++;
    out.push({ line: start + 1, code: lines.slice(start, j).join('\n') + '\n' });
    i = j;
  }
  return out;
}

const examples = readmeExamples(fs.readFileSync(path.join(root, 'README.md'), 'utf8'));
const runnable = (code: string) => !/['"]\/models\//.test(code);

test('the README has examples, most of them runnable on the demo model', () => {
  expect(examples.length).toBeGreaterThanOrEqual(4);
  expect(examples.filter((e) => runnable(e.code)).length).toBeGreaterThanOrEqual(3);
});

(distBuilt ? describe : describe.skip)('in a project that depends on the package', () => {
  let project: string;
  beforeAll(() => {
    project = makeTempDir('ngate-readme-');
    fs.mkdirSync(path.join(project, 'node_modules', '@ngate'), { recursive: true });
    fs.symlinkSync(root, path.join(project, 'node_modules', '@ngate', 'core'), 'dir');
    fs.symlinkSync(path.join(root, 'node_modules', '@types'), path.join(project, 'node_modules', '@types'), 'dir');
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'readme-examples', private: true, type: 'module' }));
    examples.forEach((e, i) => fs.writeFileSync(path.join(project, `example${i + 1}.mts`), e.code));
    fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, noUncheckedIndexedAccess: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022',
        types: ['node'], outDir: 'out', skipLibCheck: false },
      include: ['*.mts'],
    }));
  });

  test('every example type-checks under tsc --strict with noUncheckedIndexedAccess', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8', timeout: 120000 });
    // tsc names the file and line: exampleN.mts is the Nth block (README line in the list below).
    const where = examples.map((e, i) => `example${i + 1}.mts = README line ${e.line}`).join('\n');
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect({ status: r.status, where }).toEqual({ status: 0, where });
  });

  test.each(examples.map((e, i) => [i + 1, e.line, e.code] as const).filter(([, , code]) => runnable(code)))(
    'example %i (README line %i) runs as written on the demo model', (n) => {
      const r = spawnSync(process.execPath, [path.join('out', `example${n}.mjs`)], { cwd: project, encoding: 'utf8', timeout: 120000 });
      expect(r.stderr.replace(/^@ngate\/core: .*\n/gm, '')).toBe('');
      expect(r.status).toBe(0);
    });
});
