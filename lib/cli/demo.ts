// ngate demo: the paper's protocol on the embedded model (runDemo), with its report folder.
import { Command, InvalidArgumentError } from 'commander';
import * as path from 'path';
import { DEMO_DEFAULTS, demoTables, runDemo } from '../demo/run';
import { ROW_IDS, RowId } from '../eval/compare';
import { setScore } from '../report/tables';
import { defined } from '../util/defined';
import {
  addModelOptions, addOutputOptions, Context, Define, ModelOpts, modelDirOf, parseLayers, parseNonNegative,
  parsePositiveInt, parseSeed, seconds, UsageError,
} from './shared';

function parseRows(s: string): RowId[] {
  const rows = s.split(',').map((x) => x.trim()).filter(Boolean);
  const bad = rows.find((r) => !ROW_IDS.includes(r as RowId));
  if (rows.length === 0 || bad !== undefined) throw new InvalidArgumentError(`expected rows among ${ROW_IDS.join(', ')}${bad ? `, got "${bad}"` : ''}.`);
  return rows as RowId[];
}

function parseAlphas(s: string): number[] {
  const xs = s.split(',').map((x) => x.trim());
  if (xs.some((x) => x === '' || !Number.isFinite(Number(x)) || Number(x) < 0)) throw new InvalidArgumentError(`"${s}" is not a list of non-negative numbers such as 1,1.25,1.5.`);
  return xs.map(Number);
}

function parseLayer(s: string): number {
  const v = Number(s);
  if (!/^\d+$/.test(s.trim())) throw new InvalidArgumentError(`"${s}" is not a layer index.`);
  return v;
}

async function demoCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const mo = o as ModelOpts;
  const modelDir = modelDirOf(mo);
  const outDir = path.resolve((o.out as string | undefined) ?? 'ngate-demo');
  if (outDir === modelDir) throw new UsageError(`--out must not be the model folder: ${outDir}`);
  const t0 = Date.now();
  const res = await runDemo({
    modelDir, outDir, seed: o.seed as number | undefined, device: mo.device, dtype: mo.dtype,
    signal: ctx.signal, onProgress: ctx.progress, log: (l) => ctx.log(l),
    singleLayer: o.layer as number | undefined, multiLayers: o.multiLayers as number[] | undefined,
    rows: o.rows as RowId[] | undefined, alphas: o.alphas as number[] | undefined,
    trainPairs: o.trainPairs as number | undefined, testPairs: o.testPairs as number | undefined, heldOutPairs: o.heldOutPairs as number | undefined,
    mask: defined({ steps: o.steps as number | undefined, lr: o.maskLr as number | undefined }),
    edit: defined({ epochs: o.epochs as number | undefined, lr: o.lr as number | undefined }),
    maxNewTokens: o.maxNewTokens as number | undefined,
    scan: o.scan === false ? false : undefined,
  });
  const r = res.report;
  const s = r.settings;
  ctx.emit({
    outDir, files: res.files, seconds: seconds(t0),
    scores: Object.fromEntries(r.rows.map((x) => [x.id, Object.fromEntries(Object.entries(x.results).map(([k, v]) => [k, setScore(v)]))])),
    layers: { single: s.singleLayer, multi: s.multiLayers, dinm: s.dinmLayer },
    scan: r.layers.map(({ negativeCounts: _n, ...rest }) => rest), alphaSweep: r.alphaSweep?.map((a) => ({ alpha: a.alpha, rows: a.rows.map((x) => ({ id: x.id, score: setScore(x.results['PrivacyPair-test']) })) })) ?? null,
    timings: r.timings,
  }, [
    res.table, '',
    `layers: single ${s.singleLayer}, multi ${s.multiLayers.join(', ')}${s.dinmLayer !== null ? `, DINM ${s.dinmLayer}` : ''} (${s.layerChoice})`,
    `report: ${res.files.summary}`, `        ${res.files.json}`, `        ${res.files.maskShare}`, `        ${res.files.strongShare}`,
  ].join('\n'));
}

export function addDemoCommand(define: Define): Command {
  return addOutputOptions(addModelOptions(define('demo', 'the paper\'s protocol on the demo model: masks and gates, the rows of Tables 1 and 2 (with DINM), their scores, a report folder', demoCommand)
    .option('--out <dir>', 'report folder', 'ngate-demo')
    .option('--seed <n>', 'seed of the pair builder', parseSeed, DEMO_DEFAULTS.seed)
    .option('--rows <list>', `rows to run (default all: ${ROW_IDS.join(',')})`, parseRows)
    .option('--alphas <list>', 'figure 4: also run the gated rows at these α, e.g. 1,1.25,1.5', parseAlphas)
    .option('--layer <n>', 'the single-layer rows\' layer (default: the scanned layer with the most strongly active neurons)', parseLayer)
    .option('--multi-layers <list>', 'the multi-layer rows\' layers (default: the layers around the single one)', parseLayers)
    .option('--no-scan', 'no per-layer masks for figure 2d (the single layer is then the middle of the early-to-middle range)')
    .option('--train-pairs <n>', 'training pairs', parsePositiveInt, DEMO_DEFAULTS.trainPairs)
    .option('--test-pairs <n>', 'PrivacyPair-test pairs', parsePositiveInt, DEMO_DEFAULTS.testPairs)
    .option('--held-out-pairs <n>', 'held-out pairs', parsePositiveInt, DEMO_DEFAULTS.heldOutPairs)
    .option('--steps <n>', 'mask steps', parsePositiveInt)
    .option('--mask-lr <x>', 'mask learning rate', parseNonNegative)
    .option('--epochs <n>', 'edit epochs', parsePositiveInt)
    .option('--lr <x>', 'edit learning rate (Neural Gate rows and DINM\'s paper variant)', parseNonNegative)
    .option('--max-new-tokens <n>', 'tokens per answer when scoring', parsePositiveInt)));
}

export { demoTables };
