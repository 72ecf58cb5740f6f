// What a user's program does with the installed package, timed step by step:
// the method end to end on the embedded demo model. scripts/pack-check.sh also
// makes a CommonJS copy (use.cts, the import line turned into a require), so
// that both module systems are type-checked and run.
import * as ngate from '@ngate/core';

const times: Record<string, number> = {};
async function step<T>(name: string, f: () => Promise<T> | T): Promise<T> {
  const t0 = performance.now();
  const out = await f();
  times[name] = Math.round(performance.now() - t0) / 1000;
  return out;
}

async function main(): Promise<void> {
  const addon = await step('addon (built on first use when missing)', () => ngate.nativeInfo());
  const model = await step('loadModel', () => ngate.loadModel(ngate.demoModelDir()));
  const splits = ngate.buildPrivacyPairs({ seed: 1 });
  const train = await step('fillBenignAnswers', () => ngate.fillBenignAnswers(model, ngate.takeBalanced(splits.train, 12)));
  const test = await step('fillBenignAnswers (test)', () => ngate.fillBenignAnswers(model, ngate.takeBalanced(splits.test, 12)));
  const masks = await step('learnMask', () => ngate.learnMask(model, train, { layers: [1], steps: 20, lr: 0.1 }));
  const gate = await step('buildGate', () => ngate.buildGate(masks, { onWarning: () => undefined }));
  const before = await step('evaluate (unedited)', () => ngate.evaluate(model, test, { maxNewTokens: 24 }));
  const edit = await step('gatedEdit', () => ngate.gatedEdit(model, train, gate, { epochs: 10, lr: 3e-3, batchSize: 4 }));
  const after = await step('evaluate (edited)', () => ngate.evaluate(model, test, { maxNewTokens: 24 }));
  await model.dispose();
  let caught: unknown;
  try { ngate.buildGate([]); } catch (e) { caught = e; }
  console.log(JSON.stringify({
    module: typeof require === 'undefined' ? 'esm' : 'cjs', torch: addon.torchVersion, addon: addon.addonFile,
    edited: edit.editedTensors.length, strong: gate.counts.map((c) => c.strong),
    etaBefore: before.scores.overall.eta, etaAfter: after.scores.overall.eta,
    typedError: caught instanceof ngate.NgateError && ngate.isNgateError(caught, 'ERR_INPUT'),
    seconds: times,
  }));
}

main().catch((e) => { console.error(e); process.exit(1); });
