import { defineConfig } from 'tsup';

export default defineConfig({
  // index: the library; cli: what bin/ngate.js runs.
  entry: { index: 'lib/index.ts', cli: 'lib/cli/index.ts' },
  // CommonJS only: scripts/finish-dist.js writes the ESM entry over it, so that
  // import and require share one instance of the library.
  format: ['cjs'],
  dts: { entry: { index: 'lib/index.ts' } },
  clean: true,
  target: 'node20',
  // Packages with native parts or large trees stay in node_modules.
  external: ['tokenizers', '@huggingface/jinja', 'vega', 'vega-lite', 'sharp'],
});
