// ngate locate: the layer search of appendix 10.1 (centre by strong share, then
// one trial edit per layer of the radius, scored on validation pairs).
import { Command } from 'commander';
import { DEFAULT_GATE_THRESHOLD } from '../method/gate';
import { EDIT_DEFAULTS } from '../method/gated-edit';
import { MASK_DEFAULTS } from '../method/learn-mask';
import { locateLayer } from '../method/locate';
import { DEMO_DEFAULTS } from '../demo/run';
import { fmt, textTable } from '../report/tables';
import { defined } from '../util/defined';
import {
  addDistOptions, addModelOptions, addOutputOptions, addRefusalOptions, Context, Define, DistOpts, finishGroup, joinGroup, matcherOf,
  ModelOpts, openModel, parseNonNegative, parseNonNegativeInt, parsePositiveInt, parseSearch, parseShare, partsDirOf, readPairs, seconds,
  withBenignAnswers, withDemoSettings,
} from './shared';

async function locateCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const refusal = matcherOf(o);
  const train = await readPairs(ctx, o.train as string, 'training pairs file');
  const val = await readPairs(ctx, o.val as string, 'validation pairs file');
  const group = await joinGroup(ctx, o as DistOpts);
  const partsDir = partsDirOf(o as DistOpts, group, undefined);
  const model = await openModel(ctx, o as ModelOpts, group);
  try {
    const t0 = Date.now();
    const filled = (await withBenignAnswers(ctx, model, train, group, partsDir)).pairs;
    const search = (o.search as [number, number] | undefined) ?? [3, 19];
    ctx.log(`single-layer masks on layers ${search[0]}–${Math.min(search[1], model.config.numLayers - 1)}, then single-layer edits within radius ${o.radius ?? 3} of the centre`);
    const tuned = withDemoSettings(ctx, o as ModelOpts,
      { steps: o.steps as number | undefined, maskLr: o.maskLr as number | undefined, epochs: o.epochs as number | undefined, lr: o.lr as number | undefined },
      { steps: DEMO_DEFAULTS.mask.steps, maskLr: DEMO_DEFAULTS.mask.lr, epochs: DEMO_DEFAULTS.edit.epochs, lr: DEMO_DEFAULTS.edit.lr }, 'mask and edit');
    const res = await locateLayer(model, filled, val, {
      searchLayers: search, ...defined({ radius: o.radius as number | undefined, threshold: o.threshold as number | undefined }),
      mask: defined({ steps: tuned.steps, lr: tuned.maskLr, l1: o.l1 as number | undefined, alpha: o.alpha as number | undefined }),
      edit: { ...defined({ epochs: tuned.epochs, lr: tuned.lr, alpha: o.alpha as number | undefined }), gated: o.gate !== false },
      evaluate: { ...defined({ maxNewTokens: o.maxNewTokens as number | undefined }), refusal },
      ...(group ? { group } : {}), ...(partsDir !== undefined ? { partsDir } : {}),
      signal: ctx.signal, onProgress: ctx.progress,
    });
    await finishGroup(group, o as DistOpts, partsDir);
    ctx.emit({ model: model.dir, seconds: seconds(t0), ...res }, [
      textTable(['layer', 'strong share', 'EtA', 'RtA(sens)', '1−RtA(benign)', 'note'],
        res.table.map((r) => [String(r.layer), `${(100 * r.strongShare).toFixed(1)}%`, fmt(r.eta), fmt(r.rtaSensitive), fmt(r.nonRefusalBenign),
          [r.layer === res.centre ? 'centre' : '', r.layer === res.best.layer ? 'best' : ''].filter(Boolean).join(', ')])),
      '', `search centre ${res.centre}, radius ${res.radius}; best layer ${res.best.layer} (EtA ${fmt(res.best.eta)})`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}

export function addLocateCommand(define: Define): Command {
  return addDistOptions(addOutputOptions(addModelOptions(addRefusalOptions(define('locate', 'find the layer to edit: centre by strong share, then edit each layer within the radius (appendix 10.1)', locateCommand)
    .requiredOption('--train <file>', 'pairs to learn masks and edit on')
    .requiredOption('--val <file>', 'pairs to score each trial edit on')
    .option('--search <first,last>', 'layers searched for the centre (default 3,19, clamped to the model)', parseSearch)
    .option('--radius <n>', 'search radius r (default 3)', parseNonNegativeInt)
    .option('--threshold <x>', `τ (default ${DEFAULT_GATE_THRESHOLD})`, parseShare)
    .option('--steps <n>', `mask steps (default ${MASK_DEFAULTS.steps})`, parsePositiveInt)
    .option('--mask-lr <x>', `mask learning rate (default ${MASK_DEFAULTS.lr})`, parseNonNegative)
    .option('--l1 <x>', `λ (default ${MASK_DEFAULTS.l1})`, parseNonNegative)
    .option('--alpha <x>', `α (default ${EDIT_DEFAULTS.alpha})`, parseNonNegative)
    .option('--epochs <n>', `edit epochs (default ${EDIT_DEFAULTS.epochs})`, parsePositiveInt)
    .option('--lr <x>', `edit learning rate (default ${EDIT_DEFAULTS.lr})`, parseNonNegative)
    .option('--no-gate', 'trial edits without the gate')
    .option('--max-new-tokens <n>', 'tokens per answer (default 32)', parsePositiveInt)))));
}
