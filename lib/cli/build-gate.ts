// ngate build-gate: masks files (one run, or its shards) into the gate of eq. 6.
import { Command } from 'commander';
import { buildGate, DEFAULT_GATE_THRESHOLD, loadMasks, saveGate } from '../method/gate';
import { gateCountsText } from '../report/tables';
import { addOutputOptions, Context, Define, outputFile, parseShare, requireFile } from './shared';

async function buildGateCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const files = (o.masks as string[]).map((f) => requireFile(f, 'masks file'));
  const out = outputFile(o.out as string);
  const sets = files.map((f) => loadMasks(f));
  const gate = buildGate(sets, { threshold: o.threshold as number | undefined, onWarning: ctx.warn });
  ctx.checkAborted();
  saveGate(gate, out);
  const summary = out.endsWith('.safetensors') ? out.slice(0, -'.safetensors'.length) + '.json' : out + '.json';
  ctx.emit({ out, summary, masks: files, layers: gate.layers, hiddenSize: gate.hiddenSize, threshold: gate.threshold, pairCount: gate.pairCount, counts: gate.counts },
    [gateCountsText(gate.counts, gate.hiddenSize), '', `τ = ${gate.threshold}, N = ${gate.pairCount} pairs`, `wrote ${out} and ${summary}`].join('\n'));
}

export function addBuildGateCommand(define: Define): Command {
  return addOutputOptions(define('build-gate', 'aggregate masks into the neural gate M_l (eq. 6) and print the per-layer neuron counts', buildGateCommand)
    .requiredOption('--masks <files...>', 'one or more masks files (shards of one run: same layers, distinct pairs)')
    .requiredOption('--out <file>', 'gate .safetensors (a .json summary is written beside it)')
    .option('--threshold <x>', `τ: M_l > τ is strongly active (default ${DEFAULT_GATE_THRESHOLD})`, parseShare));
}
