// Input that used to be accepted silently is refused, with the field named:
// repeated layers or parameters (a double update), a gate whose keep is short
// (zero-filled) or not 0/1, empty answers, a save inside the source folder,
// and a loss that is no longer finite (a huge lr, or NaN weights), which stops
// the call at the step where it happened and leaves the weights as they were.
import * as fs from 'fs';
import * as path from 'path';
import { buildGate, gatedEdit, learnMask, loadModel, Model, readSafetensorsHeader } from '../lib';
import type { Gate, PrivacyPair } from '../lib';
import { makeTempDir, writeTinyLlama } from './fixtures/checkpoint';

const pairs: PrivacyPair[] = [
  { id: 'a', category: 'passport', subject: 'passport', sensitive: 'What is the passport number?', benign: 'What is the passport type?', benignAnswer: 'A blue one.' },
  { id: 'b', category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'What is the phone brand?', benignAnswer: 'An old brand.' },
];

let dir: string;
let model: Model;
let gate: Gate;
beforeAll(async () => {
  dir = writeTinyLlama(makeTempDir(), { seed: 12, numLayers: 3 }).dir;
  model = await loadModel(dir);
  gate = buildGate(await learnMask(model, pairs, { layers: [0, 1], steps: 2, lr: 0.5 }), { onWarning: () => undefined });
});
afterAll(() => model?.dispose());

const probe = async (m: Model) => Array.from((await m.forward([[1, 4, 9]])).logits);

test('repeated layers or parameters would be updated twice per step: refused', async () => {
  await expect(gatedEdit(model, pairs, null, { gated: false, layers: [1, 1] })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'layers' });
  await expect(gatedEdit(model, pairs, null, { gated: false, layers: [1], params: ['up_proj', 'up_proj'] })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'params' });
  expect(model.editedTensors.size).toBe(0);
});

test('a gate whose keep is short, or holds values other than 0 and 1, is refused', async () => {
  const short = { ...gate, keep: gate.keep.subarray(0, gate.keep.length - 1) };
  await expect(gatedEdit(model, pairs, short, { epochs: 1 })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'gate.keep' });
  const two = { ...gate, keep: Uint8Array.from(gate.keep, (v, i) => (i === 3 ? 2 : v)) };
  await expect(gatedEdit(model, pairs, two, { epochs: 1 })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'gate.keep', message: expect.stringMatching(/keep\[3\] is 2/) });
});

test('an empty benignAnswer or refusal is refused through the API, as the JSONL reader refuses it', async () => {
  await expect(gatedEdit(model, [{ ...pairs[0]!, benignAnswer: '' }], null, { gated: false, layers: [1] })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'pairs[0].benignAnswer' });
  await expect(learnMask(model, [{ ...pairs[0]!, refusal: '  ' }], { layers: [1] })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'pairs[0].refusal' });
});

test('save refuses a target inside the source folder, and creates nothing there', async () => {
  const before = fs.readdirSync(dir).sort();
  await expect(model.save(path.join(dir, 'edited', 'deeper'))).rejects.toMatchObject({ code: 'ERR_SAVE', message: expect.stringMatching(/inside the folder the model was loaded from/) });
  expect(fs.readdirSync(dir).sort()).toEqual(before);
});

test('lr 1e30 stops the edit at the step whose loss is no longer finite, names it, and leaves the weights as they were', async () => {
  const m = await loadModel(dir);
  const before = await probe(m);
  const e = await gatedEdit(m, pairs, null, { gated: false, layers: [1], lr: 1e30, epochs: 3, batchSize: 1 }).catch((x: Error) => x);
  expect(e).toMatchObject({ code: 'ERR_NATIVE', message: expect.stringMatching(/edit step \d+ \(epoch \d+, batch \d+\): the loss is not finite|the edited weights are no longer finite/) });
  expect(await probe(m)).toEqual(before);
  expect(m.editedTensors.size).toBe(0);
  await m.dispose();
});

test('NaN weights stop learnMask with the step named, instead of returning NaN masks', async () => {
  const bad = writeTinyLlama(makeTempDir(), { seed: 12, numLayers: 3 }).dir;
  const file = path.join(bad, 'model.safetensors');
  const entry = readSafetensorsHeader(file).tensors.get('model.layers.2.mlp.down_proj.weight')!;
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, new Uint8Array(new Float32Array([NaN]).buffer), 0, 4, entry.begin);
  fs.closeSync(fd);
  const m = await loadModel(bad);
  await expect(learnMask(m, pairs, { layers: [0], steps: 2 })).rejects.toMatchObject({ message: expect.stringMatching(/mask step 1 of the batch starting at pair 0: the loss is not finite/) });
  await m.dispose();
});
