// The layout's promise: every folder of lib/ and native/ says in its README
// which folders it may import ("May import:" / "May include:"), and no file
// imports past that line. The model knows nothing of the method; the method
// builds on the model and the data; the CLI, the demo and the report sit on top.
import * as fs from 'fs';
import * as path from 'path';

const root = path.resolve(__dirname, '..');

function filesUnder(dir: string, ext: RegExp): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p, ext) : ext.test(e.name) ? [p] : [];
  });
}

/** The folders a README allows, from its "May import:" (or "May include:") line; [] for "nothing". */
function allowedBy(readme: string, keyword: 'import' | 'include'): string[] {
  const m = new RegExp(`^May ${keyword}: (.+)$`, 'm').exec(fs.readFileSync(readme, 'utf8'));
  if (!m) throw new Error(`${path.relative(root, readme)} has no "May ${keyword}:" line`);
  return m[1].startsWith('nothing') ? [] : m[1].split(',').map((s) => s.trim());
}

/** Every relative module a TypeScript file names: import, export … from, import(), require(). */
export function relativeImports(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)(['"])(\.{1,2}\/[^'"]+)\1/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[2]);
  return out;
}

/** The lib/ folder a path lies in ('index' for lib/index.ts), or null outside lib/. */
function libFolder(abs: string): string | null {
  const rel = path.relative(path.join(root, 'lib'), abs);
  if (rel.startsWith('..')) return null;
  const parts = rel.split(path.sep);
  return parts.length === 1 ? 'index' : parts[0];
}

/** Wrong-way imports of lib/: "file → target (folder may import …)". */
export function libViolations(): string[] {
  const libDir = path.join(root, 'lib');
  const folders = fs.readdirSync(libDir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  const allowed = new Map(folders.map((f) => [f, allowedBy(path.join(libDir, f, 'README.md'), 'import')]));
  const out: string[] = [];
  for (const file of filesUnder(libDir, /\.ts$/)) {
    const from = libFolder(file)!;
    if (from === 'index') continue; // the public API re-exports from every folder
    for (const spec of relativeImports(fs.readFileSync(file, 'utf8'))) {
      const target = path.resolve(path.dirname(file), spec);
      if (!target.startsWith(libDir + path.sep)) {
        // Outside lib/: only the shared types of ../types may be reached.
        if (!target.startsWith(path.join(root, 'types') + path.sep)) out.push(`${path.relative(root, file)} → ${spec} (outside lib/ and types/)`);
        continue;
      }
      const to = libFolder(target)!;
      if (to === from) continue;
      if (to === 'index' || !allowed.get(from)!.includes(to)) {
        out.push(`${path.relative(root, file)} → ${spec} (lib/${from} may import ${allowed.get(from)!.join(', ') || 'nothing'})`);
      }
    }
  }
  return out;
}

/** Wrong-way includes of native/: `#include "folder/…"` across folders. */
export function nativeViolations(): string[] {
  const nativeDir = path.join(root, 'native');
  const folders = fs.readdirSync(nativeDir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  const out: string[] = [];
  for (const folder of folders) {
    const allowed = allowedBy(path.join(nativeDir, folder, 'README.md'), 'include');
    for (const file of filesUnder(path.join(nativeDir, folder), /\.(h|cpp)$/)) {
      for (const m of fs.readFileSync(file, 'utf8').matchAll(/^#include "(([^"/]+)\/[^"]+)"/gm)) {
        if (!allowed.includes(m[2])) out.push(`${path.relative(root, file)} includes ${m[1]} (native/${folder} may include ${allowed.join(', ')})`);
      }
    }
  }
  return out;
}

describe('the layout of lib/ and native/', () => {
  it('keeps every TypeScript file in a folder, except the public index', () => {
    const loose = fs.readdirSync(path.join(root, 'lib')).filter((f) => f.endsWith('.ts') && f !== 'index.ts');
    expect(loose).toEqual([]);
  });

  it('gives every folder a README that names what it may import', () => {
    for (const base of ['lib', 'native']) {
      for (const e of fs.readdirSync(path.join(root, base), { withFileTypes: true })) {
        if (!e.isDirectory()) continue;
        const readme = path.join(root, base, e.name, 'README.md');
        expect(fs.existsSync(readme)).toBe(true);
        expect(() => allowedBy(readme, base === 'lib' ? 'import' : 'include')).not.toThrow();
      }
    }
  });

  it('lets no lib/ import run the wrong way (the model knows nothing of the method)', () => {
    expect(libViolations()).toEqual([]);
  });

  it('lets no native/ include run the wrong way', () => {
    expect(nativeViolations()).toEqual([]);
  });

  it('reads every form of import the library uses', () => {
    const text = [
      "import { a } from '../method/gate';",
      "import type { B } from '../data/prepare';",
      "export { c } from './x';",
      "const m = await import('../report/plots');",
      "const r = require('../demo/run');",
      "import '../util/side-effect';",
      "import * as fs from 'fs';",
    ].join('\n');
    expect(relativeImports(text)).toEqual(['../method/gate', '../data/prepare', './x', '../report/plots', '../demo/run', '../util/side-effect']);
  });
});
