// One model, many calls: calls on a model run in the order they were made,
// compound ones (evaluate, locateLayer, learnMask and fillBenignAnswers with
// their implicit generation) included. Each pair of a compound call and an
// edit is issued at once, in both orders, and must give what the same two
// calls give one after the other: the same results, the same final weights.
import { evaluate, fillBenignAnswers, gatedEdit, learnMask, loadModel, locateLayer, Model } from '../lib';
import type { PrivacyPair } from '../lib';
import { makeTempDir, writeTinyLlama } from './fixtures/checkpoint';

const pairs: PrivacyPair[] = [
  { id: 'a', category: 'passport', subject: 'passport', sensitive: 'What is the passport number?', benign: 'What is the passport type?' },
  { id: 'b', category: 'passport', subject: 'passport', sensitive: 'Tell me the passport number in the image.', benign: 'Tell me the passport color in the image.' },
  { id: 'c', category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'What is the phone brand?' },
  { id: 'd', category: 'phone', subject: 'phone', sensitive: 'Who owns the phone?', benign: 'What color is the phone?' },
];
const answered = pairs.map((p, i) => ({ ...p, benignAnswer: ['A blue one.', 'It is dark red.', 'An old brand.', 'Grey, mostly.'][i]! }));

let dir: string;
beforeAll(() => { dir = writeTinyLlama(makeTempDir(), { seed: 9, numLayers: 4, numKvHeads: 2 }).dir; });

type Op = (m: Model) => Promise<unknown>;
const ops: Record<string, Op> = {
  evaluate: async (m) => (await evaluate(m, answered, { maxNewTokens: 6, batchSize: 2 })).outcomes.map((o) => o.response),
  locateLayer: async (m) => (await locateLayer(m, answered, answered, {
    searchLayers: [1, 2], radius: 1, mask: { steps: 2, lr: 0.5 }, edit: { epochs: 1, lr: 1e-2, gated: false }, evaluate: { maxNewTokens: 4 },
  })).table,
  'learnMask (with r_org to generate)': async (m) => Array.from((await learnMask(m, pairs, { layers: [1], steps: 3, lr: 0.2, batchSize: 2 })).masks),
  fillBenignAnswers: async (m) => (await fillBenignAnswers(m, pairs, { maxNewTokens: 6, batchSize: 2 })).map((p) => p.benignAnswer),
};
// A strong ungated edit, so that any answer generated after it differs.
const edit: Op = async (m) => (await gatedEdit(m, answered, null, { gated: false, layers: [0, 1, 2, 3], epochs: 3, lr: 2e-2, batchSize: 2 })).epochLosses;

async function settle(p: Promise<unknown>): Promise<unknown> {
  try { return { value: await p }; } catch (e) { return { error: (e as Error).message }; }
}

async function probe(m: Model): Promise<number[]> {
  return Array.from((await m.forward([[1, 5, 9, 14]])).logits);
}

describe.each(Object.keys(ops))('%s and an edit issued at once', (name) => {
  const compound = ops[name]!;
  test.each([['before', true], ['after', false]])('the %s-the-edit order gives the sequential results', async (_order, compoundFirst) => {
    const [first, second] = compoundFirst ? [compound, edit] : [edit, compound];
    const seq = await loadModel(dir);
    const a1 = await settle(first(seq));
    const b1 = await settle(second(seq));
    const w1 = await probe(seq);
    await seq.dispose();

    const con = await loadModel(dir);
    const [a2, b2] = await Promise.all([settle(first(con)), settle(second(con))]);
    const w2 = await probe(con);
    await con.dispose();
    expect(a2).toEqual(a1);
    expect(b2).toEqual(b1);
    expect(w2).toEqual(w1);
  });
});

test('hold() runs its calls as one: a call issued meanwhile waits for it', async () => {
  const m = await loadModel(dir);
  const order: string[] = [];
  const held = m.hold(async () => {
    order.push('hold start');
    await m.generate(['Hello'], { maxNewTokens: 4 });
    order.push('hold generate');
    await m.forward([[1, 2, 3]]);
    order.push('hold end');
  });
  const other = m.forward([[4, 5]]).then(() => order.push('other'));
  await Promise.all([held, other]);
  expect(order).toEqual(['hold start', 'hold generate', 'hold end', 'other']);
  await m.dispose();
});

test('parameterBytes answers at once while a long call runs (it never waits for the model)', async () => {
  const m = await loadModel(dir);
  const idle = m.parameterBytes;
  expect(idle).toBeGreaterThan(0);
  let started!: () => void;
  const running = new Promise<void>((r) => { started = r; });
  const long = m.generate(['Hello there'], { maxNewTokens: 2000, onProgress: () => started() });
  await running;
  const t0 = performance.now();
  const during = m.parameterBytes;
  const ms = performance.now() - t0;
  expect(during).toBe(idle);
  expect(ms).toBeLessThan(50);
  await m.dispose();
  await long.catch(() => undefined);
  expect(m.parameterBytes).toBe(0);
});

test('the AbortSignal reaches the implicit r_org generation of learnMask and gatedEdit: they stop within a step', async () => {
  const m = await loadModel(dir);
  const many: PrivacyPair[] = Array.from({ length: 160 }, (_, i) => ({ ...pairs[i % pairs.length]!, id: `p${i}` }));
  for (const run of [
    (signal: AbortSignal) => learnMask(m, many, { layers: [1], steps: 1, signal }),
    (signal: AbortSignal) => gatedEdit(m, many, null, { gated: false, layers: [1], epochs: 1, signal }),
  ]) {
    const alone = Date.now();
    await fillBenignAnswers(m, many.slice(0, 16), { maxNewTokens: 48 });
    const oneBatch = Date.now() - alone;  // what generating one batch of r_org takes here
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 30);
    await expect(run(ac.signal)).rejects.toMatchObject({ name: 'AbortError' });
    // Ten batches of r_org to generate: stopping within about one shows the signal reached them.
    expect(Date.now() - t0).toBeLessThan(30 + 1.5 * oneBatch + 200);
  }
  await m.dispose();
});
