// compare.json: what `ngate compare --config` runs. Paths are relative to the
// file. Checked whole: every bad field is named, with the reason, before any
// model is loaded.
import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import { NgateError } from '../util/errors';
import { ROW_IDS, RowId } from './compare';
import { BENCHMARK_KINDS, BenchmarkKind } from './types';
import { parseJson } from '../util/json';

const num = z.number();
const nonNeg = num.min(0);
const posInt = z.number().int().min(1);
const layer = z.number().int().min(0);
const params = z.array(z.enum(['gate_proj', 'up_proj', 'down_proj'])).min(1);

const schema = z.strictObject({
  /** A checkpoint folder or MiniGPT-4 descriptor; the command line's --model wins. */
  model: z.string().min(1).optional(),
  device: z.string().min(1).optional(),
  dtype: z.enum(['float32', 'float16', 'bfloat16']).optional(),
  pairs: z.strictObject({
    train: z.string().min(1),
    test: z.string().min(1),
    /** For the layer search of appendix 10.1 (layers.locate). */
    validation: z.string().min(1).optional(),
  }),
  rows: z.array(z.enum(ROW_IDS as [RowId, ...RowId[]])).min(1).optional(),
  layers: z.union([
    z.strictObject({ single: layer, multi: z.array(layer).min(1) }),
    z.strictObject({
      locate: z.strictObject({ radius: z.number().int().min(0).optional(), searchLayers: z.tuple([layer, layer]).optional() }),
      multiWidth: posInt.optional(),
    }),
  ]),
  threshold: nonNeg.max(1).optional(),
  mask: z.strictObject({
    steps: posInt.optional(), lr: nonNeg.optional(), alpha: nonNeg.optional(), l1: nonNeg.optional(), batchSize: posInt.optional(),
    hookPoint: z.enum(['ffn', 'block']).optional(), seed: z.number().int().optional(),
  }).optional(),
  edit: z.strictObject({
    epochs: posInt.optional(), lr: nonNeg.optional(), alpha: nonNeg.optional(), batchSize: posInt.optional(), params: params.optional(),
    refusal: z.string().min(1).optional(),
  }).optional(),
  dinm: z.strictObject({
    steps: posInt.optional(), lr: nonNeg.optional(), klFactor: nonNeg.optional(), stopBelow: nonNeg.optional(),
    normConstraint: nonNeg.optional(), params: params.optional(), klGradient: z.boolean().optional(),
  }).optional(),
  evaluate: z.strictObject({ maxNewTokens: posInt.optional(), batchSize: posInt.optional() }).optional(),
  benchmarks: z.array(z.strictObject({
    kind: z.enum(BENCHMARK_KINDS as [BenchmarkKind, ...BenchmarkKind[]]),
    data: z.string().min(1),
    images: z.string().min(1).optional(),
    limit: posInt.optional(),
    seed: z.number().int().optional(),
    split: z.string().min(1).optional(),
    language: z.string().min(1).optional(),
  })).optional(),
  /** The report folder (default compare-report/ beside the config). */
  out: z.string().min(1).optional(),
});

export type CompareConfig = z.infer<typeof schema> & { file: string };

/** Reads and checks compare.json; paths come back absolute. */
export function readCompareConfig(file: string): CompareConfig {
  const abs = path.resolve(file);
  if (!fs.existsSync(abs)) throw new NgateError('ERR_MISSING_FILE', 'the compare config does not exist', { file: abs });
  let raw: unknown;
  try {
    raw = parseJson(fs.readFileSync(abs, 'utf8'));
  } catch (e) {
    throw new NgateError('ERR_INPUT', `not valid JSON: ${(e as Error).message}`, { file: abs });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((iss) => {
      const where = iss.path.length ? iss.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '') : '(the file)';
      const msg = iss.code === 'unrecognized_keys' ? `unknown field${iss.keys.length === 1 ? '' : 's'} ${iss.keys.map((k) => JSON.stringify(k)).join(', ')}` : iss.message;
      return `${where}: ${msg}`;
    });
    const first = parsed.error.issues[0];
    throw new NgateError('ERR_INPUT', `is not a valid compare config:\n  ${lines.join('\n  ')}`,
      { file: abs, ...(first?.path.length ? { field: first.path.map(String).join('.') } : {}) });
  }
  const c = parsed.data;
  const dir = path.dirname(abs);
  const at = (p: string) => path.resolve(dir, p);
  if ('locate' in c.layers && !c.pairs.validation) {
    throw new NgateError('ERR_INPUT', 'layers.locate searches the layer by EtA on validation pairs: give pairs.validation', { file: abs, field: 'pairs.validation' });
  }
  return {
    ...c,
    file: abs,
    ...(c.model !== undefined ? { model: at(c.model) } : {}),
    pairs: { train: at(c.pairs.train), test: at(c.pairs.test), ...(c.pairs.validation ? { validation: at(c.pairs.validation) } : {}) },
    ...(c.benchmarks ? { benchmarks: c.benchmarks.map((b) => ({ ...b, data: at(b.data), ...(b.images ? { images: at(b.images) } : {}) })) } : {}),
    out: at(c.out ?? 'compare-report'),
  };
}
