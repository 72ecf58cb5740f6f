// ngate edit: the gated FFN edit of eq. 7 (or the same edit without the gate),
// saved as a new checkpoint beside, never over or inside, the source.
import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import type { Gate } from '../../types/results';
import { loadGate } from '../method/gate';
import { EDIT_DEFAULTS, FfnParam, gatedEdit } from '../method/gated-edit';
import { DEMO_DEFAULTS } from '../demo/run';
import { fmt, textTable } from '../report/tables';
import { defined } from '../util/defined';
import {
  addDistOptions, addModelOptions, addOutputOptions, checkLayers, Context, Define, DistOpts, finishGroup, joinGroup, ModelOpts, modelDirOf,
  openModel, parseLayers, parseNonNegative, parseNonNegativeInt, parseParams, parsePositiveInt, partsDirOf, readPairs, requireFile, seconds,
  UsageError, withBenignAnswers, withDemoSettings,
} from './shared';

/** Whether `inner` is `outer` or lies inside it (after resolving links where they exist). */
function within(inner: string, outer: string): boolean {
  const real = (p: string) => {
    let head = p; const tail: string[] = [];
    while (!fs.existsSync(head) && path.dirname(head) !== head) { tail.unshift(path.basename(head)); head = path.dirname(head); }
    return path.join(fs.realpathSync(head), ...tail);
  };
  const a = real(path.resolve(inner)), b = real(path.resolve(outer));
  return a === b || a.startsWith(b + path.sep);
}

async function editCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const out = path.resolve(o.out as string);
  const modelDir = modelDirOf(o as ModelOpts);
  if (within(out, modelDir) || within(modelDir, out)) {
    throw new UsageError(`refusing to write the edited checkpoint over or inside the model folder: --out ${out}, model ${modelDir}`);
  }
  if (fs.existsSync(out) && (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0) && !o.overwrite) {
    throw new UsageError(`the output folder exists and is not empty: ${out} (pass --overwrite to replace it)`);
  }
  const gated = o.gate !== false;
  if (gated && typeof o.gate !== 'string') throw new UsageError('edit needs --gate FILE, or --no-gate for the edit without the gate (then --layers)');
  if (!gated && o.layers === undefined) throw new UsageError('--no-gate needs --layers: without a gate there is nothing to take the layers from');
  let gate: Gate | null = null;
  if (gated) gate = loadGate(requireFile(o.gate as string, 'gate file'));
  let pairs = await readPairs(ctx, o.pairs as string);
  const group = await joinGroup(ctx, o as DistOpts);
  const partsDir = partsDirOf(o as DistOpts, group, out);
  const model = await openModel(ctx, o as ModelOpts, group);
  try {
    const t0 = Date.now();
    const layers = (o.layers as number[] | undefined) ?? gate!.layers;
    checkLayers(model, layers);
    pairs = (await withBenignAnswers(ctx, model, pairs, group, partsDir)).pairs;
    ctx.log(`editing layer${layers.length > 1 ? 's' : ''} ${layers.join(', ')} ${gated ? 'through the gate' : 'without the gate'} on ${pairs.length} pairs`);
    const tuned = withDemoSettings(ctx, o as ModelOpts,
      { epochs: o.epochs as number | undefined, lr: o.lr as number | undefined, batchSize: o.batchSize as number | undefined },
      { ...DEMO_DEFAULTS.edit }, 'edit');
    const report = await gatedEdit(model, pairs, gate, {
      gated, layers, ...defined({
        epochs: tuned.epochs, lr: tuned.lr, alpha: o.alpha as number | undefined,
        batchSize: tuned.batchSize, params: o.params as FfnParam[] | undefined,
        checkEvery: o.checkEvery as number | undefined,
      }),
      ...(group ? { group } : {}),
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.checkAborted();
    // Every rank holds the same weights (checked at the end of the edit); rank 0 writes them.
    if (ctx.rank === 0) {
      ctx.log(`saving ${out}`);
      await model.save(out, { overwrite: !!o.overwrite, signal: ctx.signal, onProgress: ctx.progress });
    }
    await finishGroup(group, o as DistOpts, partsDir);
    ctx.emit({ out, model: model.dir, ...report, seconds: seconds(t0) }, [
      textTable(['epoch', 'loss'], report.epochLosses.map((l, i) => [String(i + 1), fmt(l, 4)])), '',
      `edited ${report.editedTensors.length} tensors of layer${report.layers.length > 1 ? 's' : ''} ${report.layers.join(', ')} (${report.params.join(', ')}), ${report.gated ? 'with' : 'without'} the gate`,
      `wrote ${out}`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}

export function addEditCommand(define: Define): Command {
  return addDistOptions(addOutputOptions(addModelOptions(define('edit', 'fine-tune the FFN of the gate\'s layers with the gated gradient (eq. 7) and save the checkpoint', editCommand)
    .requiredOption('--pairs <file>', 'training pairs JSONL')
    .option('--gate <file>', 'gate .safetensors from build-gate')
    .option('--no-gate', 'the same edit without the gate (the paper\'s "w/o gate" ablation); needs --layers')
    .option('--layers <list>', 'layers to edit (default: the gate\'s)', parseLayers)
    .option('--epochs <n>', `epochs (default ${EDIT_DEFAULTS.epochs})`, parsePositiveInt)
    .option('--lr <x>', `Adam learning rate (default ${EDIT_DEFAULTS.lr})`, parseNonNegative)
    .option('--alpha <x>', `α, weight of L_benign (default ${EDIT_DEFAULTS.alpha})`, parseNonNegative)
    .option('--batch-size <n>', `pairs per step (default ${EDIT_DEFAULTS.batchSize})`, parsePositiveInt)
    .option('--params <list>', 'FFN weights to train (default gate_proj,up_proj,down_proj)', parseParams)
    .requiredOption('--out <dir>', 'folder for the edited checkpoint (never the model folder)')
    .option('--check-every <n>', 'with several ranks: compare the weights across ranks every n steps (default 50; 0: after the last only)', parseNonNegativeInt)
    .option('--overwrite', 'replace a non-empty output folder'))));
}
