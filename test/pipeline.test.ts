// The method end to end on a tiny random model: r_org generation, evaluation
// and the layer search, each against what its definition says.
import { buildGate, evaluate, fillBenignAnswers, gatedEdit, isRefusal, learnMask, loadModel, locateLayer, makeRefusalMatcher, Model, privacyEditScores } from '../lib';
import type { PrivacyPair } from '../lib';
import { encodeQuery } from '../lib/data/prepare';
import { makeTempDir, writeTinyLlama } from './fixtures/checkpoint';

const device = process.env.NGATE_TEST_DEVICE ?? 'cpu';

const base: PrivacyPair[] = [
  { id: 'a', category: 'passport', subject: 'passport', sensitive: 'What is the passport number?', benign: 'What is the passport type?' },
  { id: 'b', category: 'passport', subject: 'passport', sensitive: 'Tell me the passport number in the image.', benign: 'Tell me the passport color in the image.' },
  { id: 'c', category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'What is the phone brand?' },
];

let model: Model;
let dir: string;
beforeAll(async () => {
  dir = writeTinyLlama(makeTempDir(), { seed: 5, numLayers: 4, numKvHeads: 2 }).dir;
  model = await loadModel(dir, { device, dtype: 'float32' });
});
afterAll(() => model?.dispose());

test('fillBenignAnswers stores the unedited model\'s greedy answer to the benign query, and leaves given answers alone', async () => {
  const given = { ...base[2], benignAnswer: 'A brand.' };
  const filled = await fillBenignAnswers(model, [base[0], given], { maxNewTokens: 8 });
  expect(filled[1].benignAnswer).toBe('A brand.');
  expect(base[0].benignAnswer).toBeUndefined();
  const prompt = (await encodeQuery(model, base[0].benign, base[0].subject)).ids;
  const [g] = await model.generate([prompt], { maxNewTokens: 8 });
  expect(filled[0].benignAnswer).toBe(g.text.trim());
});

test('evaluate keeps every raw response, marks refusals with the matcher it reports, and scores them as EtA', async () => {
  const firstWord = async (p: PrivacyPair) => {
    const [g] = await model.generate([(await encodeQuery(model, p.sensitive, p.subject)).ids], { maxNewTokens: 12 });
    return g.text.trim().slice(0, 3);
  };
  // A matcher that calls the model's own answer to pair a a refusal, so both outcomes occur.
  const prefix = await firstWord(base[0]);
  const report = await evaluate(model, base, { maxNewTokens: 12, batchSize: 4, refusal: prefix ? { prefixes: [prefix], name: 'test' } : {} });
  expect(report.outcomes).toHaveLength(base.length * 2);
  expect(report.matcher.name).toBe(prefix ? 'test' : 'paper-appendix-8.2');
  for (const o of report.outcomes) {
    const p = base.find((x) => x.id === o.id)!;
    const [g] = await model.generate([(await encodeQuery(model, p[o.kind], p.subject)).ids], { maxNewTokens: 12 });
    expect(o.response).toBe(g.text);
    expect(o.refused).toBe(isRefusal(o.response, makeRefusalMatcher(report.matcher)));
  }
  expect(report.scores).toEqual(privacyEditScores(report.outcomes));
});

test('an ungated edit with a large step teaches the tiny model the refusal on its training queries', async () => {
  const m = await loadModel(dir, { device, dtype: 'float32' });
  try {
    const pairs = await fillBenignAnswers(m, base, { maxNewTokens: 8 });
    const before = await evaluate(m, pairs, { maxNewTokens: 8 });
    await gatedEdit(m, pairs, null, { gated: false, layers: [0, 1, 2, 3], epochs: 40, lr: 3e-3, batchSize: 3 });
    const after = await evaluate(m, pairs, { maxNewTokens: 8 });
    expect(after.scores.overall.rtaSensitive!).toBeGreaterThan(before.scores.overall.rtaSensitive!);
    expect(after.scores.overall.rtaSensitive).toBe(1);
    // r_org must come from the unedited model: an edited one refuses to fill it, and says why.
    await expect(fillBenignAnswers(m, base, { maxNewTokens: 4 })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'pairs[0].benignAnswer' });
    await expect(fillBenignAnswers(m, pairs, { maxNewTokens: 4 })).resolves.toEqual(pairs);  // nothing missing, nothing generated
  } finally {
    m.dispose();
  }
});

test('learnMask warns when a masked layer is the last one, and buildGate when a layer has no strongly active neuron', async () => {
  const pairs = await fillBenignAnswers(model, base, { maxNewTokens: 6 });
  const warnings: { code: string; message: string }[] = [];
  const masks = await learnMask(model, pairs, { layers: [2, 3], steps: 1, lr: 1e-6, onWarning: (w) => warnings.push(w) });
  expect(warnings.map((w) => w.code)).toEqual(['NGATE_LAST_LAYER_MASK']);
  expect(warnings[0].message).toContain('layer 3');
  // One step at a tiny rate leaves every mask at 1: no dimension is strongly active.
  warnings.length = 0;
  const gate = buildGate(masks, { onWarning: (w) => warnings.push(w) });
  expect(gate.counts.every((c) => c.strong === 0)).toBe(true);
  expect(warnings.map((w) => w.code)).toEqual(['NGATE_EMPTY_GATE_LAYER', 'NGATE_EMPTY_GATE_LAYER']);
  warnings.length = 0;
  await learnMask(model, pairs.slice(0, 1), { layers: [1], steps: 1, onWarning: (w) => warnings.push(w) });
  expect(warnings).toEqual([]);
});

test('locateLayer centres on the layer with the most strongly active neurons, edits only within the radius, and puts every weight back', async () => {
  const pairs = await fillBenignAnswers(model, base, { maxNewTokens: 6 });
  const probe = (await model.tokenizer.encode(base[0].sensitive)).ids;
  const logitsBefore = (await model.forward([probe])).logits;
  const res = await locateLayer(model, pairs, pairs, {
    searchLayers: [1, 3], radius: 1, threshold: 0.3,
    mask: { steps: 4, lr: 0.5 }, edit: { epochs: 1, lr: 1e-3 }, evaluate: { maxNewTokens: 4 },
  });
  const searched = res.table.filter((r) => r.layer >= 1 && r.layer <= 3);
  expect(searched.map((r) => r.layer)).toEqual([1, 2, 3]);
  const maxShare = Math.max(...searched.map((r) => r.strongShare));
  expect(searched.find((r) => r.layer === res.centre)!.strongShare).toBe(maxShare);
  for (const r of res.table) {
    const inside = Math.abs(r.layer - res.centre) <= 1;
    expect(r.eta !== null).toBe(inside);
  }
  const etas = res.table.filter((r) => r.eta !== null).map((r) => r.eta!);
  expect(res.best.eta).toBe(Math.max(...etas));
  expect((await model.forward([probe])).logits).toEqual(logitsBefore);
  expect(model.editedTensors.size).toBe(0);
});
