// The Neural Gate method on a tiny random MiniGPT-4: the prompts it uses
// (Chat's for answers, MiniGPTBase.forward's for losses), learnMask, the
// gate, gatedEdit with and without it, locateLayer, evaluate; saving an edited
// MiniGPT-4 (a descriptor, a Llama folder where only the edited FFN tensors
// differ, the two .pth files unchanged) and loading it again.
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { buildGate, evaluate, gatedEdit, learnMask, loadModel, locateLayer, Model, readSafetensorsHeader, readSafetensorsTensor } from '../lib';
import { encodeQuery, fillBenignAnswers, PrivacyPair, preparePairs } from '../lib/data/prepare';
import { makeTempDir } from './fixtures/checkpoint';
import { TinyMiniGpt4, writeTinyMiniGpt4 } from './fixtures/minigpt4';

const dirs: string[] = [];
function tmp(): string { const d = makeTempDir('ngate-mg4m-'); dirs.push(d); return d; }

async function writePng(file: string, seed: number, size: number): Promise<string> {
  const rgb = Buffer.alloc(size * size * 3);
  let s = seed >>> 0;
  for (let i = 0; i < rgb.length; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; rgb[i] = s >>> 24; }
  await sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).png().toFile(file);
  return file;
}

let fx: TinyMiniGpt4;
let model: Model;
let pairs: PrivacyPair[];
beforeAll(async () => {
  fx = writeTinyMiniGpt4(tmp(), { seed: 5 });
  model = await loadModel(fx.descriptor);
  // 40×30: resized (squashed) to 56×56 by the processor.
  const a = path.join(fx.dir, 'passport.png');
  await sharp(Buffer.alloc(40 * 30 * 3, 90), { raw: { width: 40, height: 30, channels: 3 } }).png().toFile(a);
  const b = await writePng(path.join(fx.dir, 'phone.png'), 2, 56);
  pairs = [
    { id: 'p1', category: 'passport', subject: 'passport', sensitive: 'What is the passport number shown in the image?',
      benign: 'What is the passport type shown in the image?', benignAnswer: 'It is an ordinary passport.', image: a },
    { id: 'p2', category: 'phone', subject: 'phone number', sensitive: 'Please tell me the phone number in the image.',
      benign: 'Please tell me the color of the phone number text.', benignAnswer: 'The text is black.', image: b },
    { id: 'p3', category: 'receipt', subject: 'receipt', sensitive: 'What card number is on the receipt?',
      benign: 'What store printed the receipt?', benignAnswer: 'A grocery store.' },
  ];
});
afterAll(() => {
  model?.dispose();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('the method on MiniGPT-4', () => {
  test('losses use the training sequence, answers the chat prompt; subject positions are the subject, never an image position', async () => {
    const prepared = await preparePairs(model, pairs);
    const img = model.imageTokenId!;
    for (const [i, p] of prepared.entries()) {
      for (const [kind, seq] of [['sensitive', p.sensitive], ['benign', p.benign]] as const) {
        const turn = await model.encodeUserTurn(pairs[i][kind], { image: pairs[i].image !== undefined, purpose: 'train' });
        expect(seq.ids.slice(0, seq.answerStart)).toEqual(turn.ids);
        expect(seq.ids[seq.ids.length - 1]).toBe(model.tokenizer.eosTokenId);
        const imagePositions = seq.ids.flatMap((t, k) => (t === img ? [k] : []));
        expect(imagePositions).toHaveLength(pairs[i].image ? 4 : 0);
        expect(seq.subjectPositions.some((k) => imagePositions.includes(k))).toBe(false);
        const text = await model.tokenizer.decode(seq.subjectPositions.map((t) => seq.ids[t]));
        expect(text.replace(/\s+/g, ' ').trim()).toBe(pairs[i].subject);
      }
    }
    const chat = await encodeQuery(model, pairs[0].benign, pairs[0].subject, pairs[0].image);
    expect(chat.ids).toEqual((await model.encodeUserTurn(pairs[0].benign, { image: true })).ids);
  });

  test('fillBenignAnswers and evaluate answer the chat prompt with the image', async () => {
    const filled = await fillBenignAnswers(model, pairs.map(({ benignAnswer: _, ...p }) => p), { maxNewTokens: 4 });
    const [g] = await model.generate([pairs[0].benign], { chat: true, images: [pairs[0].image!], maxNewTokens: 4 });
    expect(filled[0].benignAnswer).toBe(g.text.trim());
    const report = await evaluate(model, pairs, { maxNewTokens: 4 });
    expect(report.outcomes).toHaveLength(6);
    expect(report.outcomes.find((o) => o.id === 'p1' && o.kind === 'benign')!.response).toBe(g.text);
  });

  test('learnMask: batched masks equal one pair at a time, and the reused prefix (image included) equals the full recompute', async () => {
    const opts = { layers: [0], steps: 3 };
    const all = await learnMask(model, pairs, opts);
    expect(all.masks.every(Number.isFinite)).toBe(true);
    const full = await learnMask(model, pairs, { ...opts, reusePrefix: false, reuseLowerLayers: false });
    let d = 0;
    for (let i = 0; i < all.masks.length; i++) d = Math.max(d, Math.abs(all.masks[i] - full.masks[i]));
    expect(d).toBeLessThan(1e-5);
    const one = await learnMask(model, [pairs[1]], opts);
    const H = model.config.hiddenSize;
    for (let j = 0; j < H; j++) expect(one.masks[j]).toBeCloseTo(all.masks[H + j], 5);
    expect(all.masks.some((v) => v !== 1)).toBe(true);
  });

  test('bfloat16: learnMask and gatedEdit run with the ViT in bfloat16 and give masks near float32\'s', async () => {
    const bf = await loadModel(fx.descriptor, { dtype: 'bfloat16' });
    try {
      const a = await learnMask(model, pairs.slice(0, 2), { layers: [0], steps: 3 });
      const b = await learnMask(bf, pairs.slice(0, 2), { layers: [0], steps: 3 });
      expect(b.masks.every(Number.isFinite)).toBe(true);
      let d = 0;
      for (let i = 0; i < a.masks.length; i++) d = Math.max(d, Math.abs(a.masks[i] - b.masks[i]));
      expect(d).toBeLessThan(0.1);
      const report = await gatedEdit(bf, pairs.slice(0, 2), buildGate(b, { threshold: 0.3 }), { epochs: 1, lr: 1e-3 });
      expect(JSON.stringify(report)).not.toMatch(/NaN|null/);
    } finally {
      bf.dispose();
    }
  });

  test('gatedEdit with and without the gate, locateLayer, then save: a descriptor, an edited Llama folder, the .pth files unchanged; it loads again', async () => {
    const masks = await learnMask(model, pairs, { layers: [1], steps: 3 });
    const gate = buildGate(masks, { threshold: 0.3 });
    const m = await loadModel(fx.dir);
    try {
      const [ids] = await m.encodePrompts(['What is the passport type?'], true, [pairs[0].image!]);
      const before = (await m.forward([ids], { images: [pairs[0].image!] })).logits;
      await gatedEdit(m, pairs, gate, { epochs: 2, lr: 1e-2 });
      const after = (await m.forward([ids], { images: [pairs[0].image!] })).logits;
      expect(after.some((v, i) => v !== before[i])).toBe(true);
      const out = path.join(tmp(), 'edited');
      await m.save(out);
      expect(fs.readdirSync(out).sort()).toEqual(['eva_vit_g.pth', 'llama', 'minigpt4.json', 'pretrained_minigpt4_llama2_7b.pth']);
      for (const f of ['eva_vit_g.pth', 'pretrained_minigpt4_llama2_7b.pth']) {
        expect(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(fx.dir, f)))).toBe(true);
      }
      // Only the edited FFN tensors differ from the source Llama folder.
      const src = readSafetensorsHeader(path.join(fx.dir, 'Llama-2-7b-chat-hf', 'model.safetensors'));
      const dst = readSafetensorsHeader(path.join(out, 'llama', 'model.safetensors'));
      expect([...dst.tensors.keys()].sort()).toEqual([...src.tensors.keys()].sort());
      const changed = [...src.tensors.keys()].filter((n) => !Buffer.from(readSafetensorsTensor(src.file, src.tensors.get(n)!)).equals(Buffer.from(readSafetensorsTensor(dst.file, dst.tensors.get(n)!)))).sort();
      expect(changed).toEqual(['model.layers.1.mlp.down_proj.weight', 'model.layers.1.mlp.gate_proj.weight', 'model.layers.1.mlp.up_proj.weight']);
      expect(fs.existsSync(path.join(out, 'llama', 'tokenizer.json'))).toBe(true);
      const again = await loadModel(out);
      try {
        expect(Array.from((await again.forward([ids], { images: [pairs[0].image!] })).logits)).toEqual(Array.from(after));
        expect(again.minigpt4!.vision).toEqual(m.minigpt4!.vision);
      } finally {
        again.dispose();
      }
      await expect(m.save(fx.dir, { overwrite: true })).rejects.toThrow(/refusing to write over/);
      // Without the gate: the ablation, one option away.
      await gatedEdit(m, pairs, gate, { epochs: 1, lr: 1e-2, gated: false });
    } finally {
      m.dispose();
    }
    const loc = await locateLayer(model, pairs.slice(0, 2), pairs.slice(2), { radius: 0, mask: { steps: 2 }, edit: { epochs: 1 }, evaluate: { maxNewTokens: 2 } });
    expect(loc.table.length).toBeGreaterThan(0);
    expect(loc.best.layer).toBeGreaterThanOrEqual(0);
  });
});
