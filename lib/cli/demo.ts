// ngate demo: the whole method on the embedded model (runDemo), with its report folder.
import { Command } from 'commander';
import * as path from 'path';
import { DEMO_DEFAULTS, runDemo } from '../demo/run';
import { scoresText } from '../report/tables';
import { defined } from '../util/defined';
import {
  addModelOptions, addOutputOptions, Context, Define, ModelOpts, modelDirOf, parseLayers, parseNonNegative,
  parsePositiveInt, parseSeed, seconds, UsageError,
} from './shared';

async function demoCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const mo = o as ModelOpts;
  const modelDir = modelDirOf(mo);
  const outDir = path.resolve((o.out as string | undefined) ?? 'ngate-demo');
  if (outDir === modelDir) throw new UsageError(`--out must not be the model folder: ${outDir}`);
  const t0 = Date.now();
  const res = await runDemo({
    modelDir, outDir, seed: o.seed as number | undefined, device: mo.device, dtype: mo.dtype,
    signal: ctx.signal, onProgress: ctx.progress, log: (l) => ctx.log(l),
    layers: o.layers as number[] | undefined,
    trainPairs: o.trainPairs as number | undefined, heldOutPairs: o.heldOutPairs as number | undefined,
    mask: defined({ steps: o.steps as number | undefined, lr: o.maskLr as number | undefined }),
    edit: defined({ epochs: o.epochs as number | undefined, lr: o.lr as number | undefined }),
    maxNewTokens: o.maxNewTokens as number | undefined,
    scan: o.scan === false ? false : undefined,
  });
  const r = res.report;
  ctx.emit({
    outDir, files: res.files, seconds: seconds(t0),
    scores: Object.fromEntries(r.runs.map((x) => [x.name, { seen: x.seen.scores.overall, heldOut: x.heldOut.scores.overall }])),
    editLayers: r.settings.editLayers, layers: r.layers.map(({ negativeCounts: _n, ...rest }) => rest), timings: r.timings,
  }, [
    scoresText(r), '',
    `edited layer${r.settings.editLayers.length > 1 ? 's' : ''} ${r.settings.editLayers.join(', ')} (${r.settings.layerChoice})`,
    `report: ${res.files.summary}`, `        ${res.files.json}`, `        ${res.files.maskShare}`, `        ${res.files.strongShare}`,
  ].join('\n'));
}

export function addDemoCommand(define: Define): Command {
  return addOutputOptions(addModelOptions(define('demo', 'the whole method on the demo model: pairs, masks, gate, gated and ungated edit, scores, report folder', demoCommand)
    .option('--out <dir>', 'report folder', 'ngate-demo')
    .option('--seed <n>', 'seed of the pair builder', parseSeed, DEMO_DEFAULTS.seed)
    .option('--layers <list>', 'edit these layers (default: the scanned layer with the most strongly active neurons)', parseLayers)
    .option('--no-scan', 'learn masks on the edited layers only (no per-layer scan for figure 2d)')
    .option('--train-pairs <n>', 'training (seen) pairs', parsePositiveInt, DEMO_DEFAULTS.trainPairs)
    .option('--held-out-pairs <n>', 'held-out pairs', parsePositiveInt, DEMO_DEFAULTS.heldOutPairs)
    .option('--steps <n>', 'mask steps', parsePositiveInt)
    .option('--mask-lr <x>', 'mask learning rate', parseNonNegative)
    .option('--epochs <n>', 'edit epochs', parsePositiveInt)
    .option('--lr <x>', 'edit learning rate', parseNonNegative)
    .option('--max-new-tokens <n>', 'tokens per answer when scoring', parsePositiveInt)));
}
