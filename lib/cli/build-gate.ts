// ngate build-gate: masks files (one run, or its shards) into the gate of eq. 6.
import { Command } from 'commander';
import { buildGate, DEFAULT_GATE_THRESHOLD, loadMasks, saveGate } from '../method/gate';
import { gateCountsText } from '../report/tables';
import { addDistOptions, addOutputOptions, Context, Define, DistOpts, ensureParent, finishGroup, joinGroup, outputFile, parseShare, requireFile } from './shared';

async function buildGateCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const files = (o.masks as string[]).map((f) => requireFile(f, 'masks file'));
  const out = outputFile(o.out as string);
  const threshold = o.threshold as number | undefined;
  const group = await joinGroup(ctx, o as DistOpts);
  // With several ranks each reads the files r, r + W, …; the counts are summed over the ranks.
  const gate = group
    ? await buildGate(files.filter((_, i) => i % group.size === group.rank).map((f) => loadMasks(f)), { threshold, group, onWarning: ctx.warn })
    : buildGate(files.map((f) => loadMasks(f)), { threshold, onWarning: ctx.warn });
  ctx.checkAborted();
  if (ctx.rank === 0) saveGate(gate, ensureParent(out));
  await finishGroup(group, o as DistOpts, undefined);
  const summary = out.endsWith('.safetensors') ? out.slice(0, -'.safetensors'.length) + '.json' : out + '.json';
  ctx.emit({ out, summary, masks: files, layers: gate.layers, hiddenSize: gate.hiddenSize, threshold: gate.threshold, pairCount: gate.pairCount, counts: gate.counts },
    [gateCountsText(gate.counts, gate.hiddenSize), '', `τ = ${gate.threshold}, N = ${gate.pairCount} pairs`, `wrote ${out} and ${summary}`].join('\n'));
}

export function addBuildGateCommand(define: Define): Command {
  return addDistOptions(addOutputOptions(define('build-gate', 'aggregate masks into the neural gate M_l (eq. 6) and print the per-layer neuron counts', buildGateCommand)
    .requiredOption('--masks <files...>', 'one or more masks files (shards of one run: same layers, distinct pairs)')
    .requiredOption('--out <file>', 'gate .safetensors (a .json summary is written beside it)')
    .option('--threshold <x>', `τ: M_l > τ is strongly active (default ${DEFAULT_GATE_THRESHOLD})`, parseShare)));
}
