#!/usr/bin/env node
'use strict';
// After tsup: the ESM entry (dist/index.mjs, dist/index.d.mts) over the
// CommonJS bundle, so that `import` re-exports what `require` loads and both
// share one module instance (one NgateError class for instanceof, one addon,
// one set of models) instead of two copies of the library side by side; and a
// reference to Node's types in the declarations, which use Buffer and
// AbortSignal (TypeScript 7 no longer includes @types/node by default).
const fs = require('fs');
const path = require('path');

const dist = path.resolve(__dirname, '..', 'dist');
const js = fs.readFileSync(path.join(dist, 'index.js'), 'utf8');
// esbuild annotates its CommonJS output so that Node can see the names from ESM.
if (!/0 && \(module\.exports = \{/.test(js)) throw new Error('dist/index.js lacks the export annotation Node reads its names from');
fs.writeFileSync(path.join(dist, 'index.mjs'), [
  '// The ESM entry: the CommonJS bundle re-exported, so that import and require share one instance.',
  "export * from './index.js';",
  '',
].join('\n'));
const reference = '/// <reference types="node" />\n';
let dts = fs.readFileSync(path.join(dist, 'index.d.ts'), 'utf8');
if (!dts.startsWith(reference)) dts = reference + dts;
fs.writeFileSync(path.join(dist, 'index.d.ts'), dts);
// The same declarations, as an ES module's.
fs.writeFileSync(path.join(dist, 'index.d.mts'), dts);
