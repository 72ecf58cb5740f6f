// ngate learn-mask: the vectors m_l of eq. 2–5 per pair, saved as a masks file,
// with the per-layer statistics `inspect` also prints for a masks file.
import { Command, Option } from 'commander';
import type { MaskSet } from '../../types/results';
import { writePairsFile } from '../data/pairs-file';
import { buildGate, DEFAULT_GATE_THRESHOLD, saveMasks } from '../method/gate';
import { learnMask, MASK_DEFAULTS } from '../method/learn-mask';
import { DEMO_DEFAULTS } from '../demo/run';
import { fmt, textTable } from '../report/tables';
import { defined } from '../util/defined';
import {
  addDistOptions, addModelOptions, addOutputOptions, checkLayers, Context, Define, DistOpts, finishGroup, joinGroup, mean, ModelOpts,
  ensureParent, openModel, outputFile, parseLayers, parseNonNegative, parsePositiveInt, parseSeed, partsDirOf, readPairs, seconds, withBenignAnswers,
  withDemoSettings,
} from './shared';

async function learnMaskCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const out = outputFile(o.out as string);
  let pairs = await readPairs(ctx, o.pairs as string);
  const group = await joinGroup(ctx, o as DistOpts);
  const partsDir = partsDirOf(o as DistOpts, group, out);
  const model = await openModel(ctx, o as ModelOpts, group);
  try {
    const t0 = Date.now();
    checkLayers(model, o.layers as number[]);
    const filled = await withBenignAnswers(ctx, model, pairs, group, partsDir);
    pairs = filled.pairs;
    if (o.pairsOut !== undefined && filled.filled > 0 && ctx.rank === 0) {
      const f = outputFile(o.pairsOut as string);
      ctx.checkAborted();
      await writePairsFile(ensureParent(f), pairs);
      ctx.log(`wrote the pairs with r_org to ${f}`);
    }
    const layers = o.layers as number[];
    ctx.log(`learning masks for ${pairs.length} pairs on layer${layers.length > 1 ? 's' : ''} ${layers.join(', ')}`);
    const tuned = withDemoSettings(ctx, o as ModelOpts, { steps: o.steps as number | undefined, lr: o.lr as number | undefined },
      { steps: DEMO_DEFAULTS.mask.steps, lr: DEMO_DEFAULTS.mask.lr }, 'mask');
    const masks = await learnMask(model, pairs, {
      layers, onWarning: ctx.warn, ...defined({
        steps: tuned.steps, lr: tuned.lr, l1: o.l1 as number | undefined,
        alpha: o.alpha as number | undefined, batchSize: o.batchSize as number | undefined,
        hookPoint: o.hookPoint as 'ffn' | 'block' | undefined, seed: o.seed as number | undefined,
      }),
      ...(group ? { group } : {}), ...(partsDir !== undefined ? { partsDir } : {}),
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.checkAborted();
    if (ctx.rank === 0) saveMasks(masks, ensureParent(out));
    await finishGroup(group, o as DistOpts, partsDir);
    const stats = maskStats(masks);
    ctx.emit({
      out, pairCount: masks.pairIds.length, layers: masks.layers, hiddenSize: masks.hiddenSize, hookPoint: masks.hookPoint,
      options: masks.options, benignAnswersGenerated: filled.filled, layerStats: stats,
      meanLoss: meanLoss(masks), seconds: seconds(t0),
    }, [
      maskStatsText(masks, stats), '',
      `mean loss at the last step: L_sen ${fmt(meanLoss(masks).sensitive)}, L_benign ${fmt(meanLoss(masks).benign)}, L1 ${fmt(meanLoss(masks).l1, 4)}`,
      `wrote ${out}`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}

export interface MaskLayerStats { layer: number; negativeShare: number; dimsEverNegative: number; strongAtDefaultThreshold: number }

export function maskStats(masks: MaskSet): MaskLayerStats[] {
  const { layers, hiddenSize: d, pairIds } = masks;
  const gate = buildGate(masks, { onWarning: () => undefined });  // statistics only: the gate itself is build-gate's
  return layers.map((layer, li) => {
    let neg = 0;
    for (let p = 0; p < pairIds.length; p++) {
      const base = (p * layers.length + li) * d;
      for (let j = 0; j < d; j++) if (masks.masks[base + j] < 0) neg++;
    }
    const c = gate.counts[li];
    return { layer, negativeShare: neg / (pairIds.length * d), dimsEverNegative: d - c.inactive, strongAtDefaultThreshold: c.strong };
  });
}

export function maskStatsText(masks: MaskSet, stats: MaskLayerStats[]): string {
  return textTable(['layer', 'entries m < 0', 'dims ever < 0', `strong (τ ${DEFAULT_GATE_THRESHOLD})`],
    stats.map((s) => [String(s.layer), `${(100 * s.negativeShare).toFixed(1)}%`, `${s.dimsEverNegative}/${masks.hiddenSize}`, String(s.strongAtDefaultThreshold)]));
}

export function meanLoss(masks: MaskSet): { sensitive: number; benign: number; l1: number } {
  return {
    sensitive: mean(masks.losses.map((l) => l.sensitive)), benign: mean(masks.losses.map((l) => l.benign)), l1: mean(masks.losses.map((l) => l.l1)),
  };
}

export function addLearnMaskCommand(define: Define): Command {
  return addDistOptions(addOutputOptions(addModelOptions(define('learn-mask', 'learn the vectors m_l per pair (eq. 2–5; several layers jointly, eq. 8)', learnMaskCommand)
    .requiredOption('--pairs <file>', 'pairs JSONL (r_org is generated where missing)')
    .requiredOption('--layers <list>', 'decoder layers, e.g. 2,3 or 2-4', parseLayers)
    .requiredOption('--out <file>', 'masks .safetensors')
    .option('--steps <n>', `Adam steps (default ${MASK_DEFAULTS.steps})`, parsePositiveInt)
    .option('--lr <x>', `mask learning rate (default ${MASK_DEFAULTS.lr})`, parseNonNegative)
    .option('--l1 <x>', `λ of ‖m − 1‖₁ (default ${MASK_DEFAULTS.l1})`, parseNonNegative)
    .option('--alpha <x>', `α, weight of L_benign (default ${MASK_DEFAULTS.alpha})`, parseNonNegative)
    .option('--batch-size <n>', `pairs per batch (default ${MASK_DEFAULTS.batchSize}; does not change the result)`, parsePositiveInt)
    .addOption(new Option('--hook-point <where>', 'where m_l scales the features (default ffn)').choices(['ffn', 'block']))
    .option('--seed <n>', 'recorded with the masks', parseSeed)
    .option('--pairs-out <file>', 'also write the pairs with the generated r_org, to reuse them'))));
}
