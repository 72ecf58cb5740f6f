import { defineConfig } from 'tsup';

export default defineConfig({
  // index: the library; cli: what bin/ngate.js runs.
  entry: { index: 'lib/index.ts', cli: 'lib/cli/index.ts' },
  format: ['cjs', 'esm'],
  dts: { entry: { index: 'lib/index.ts' } },
  shims: true, // __dirname in the ESM build, used to find the addon
  clean: true,
  sourcemap: true,
  target: 'node18',
  // Packages with native parts or large trees stay in node_modules.
  external: ['tokenizers', '@huggingface/jinja', 'vega', 'vega-lite', 'sharp'],
});
