// The Neural Gate method on a tiny random LLaVA: pairs with images, image
// positions never subject positions, batched masks equal one-pair runs, the
// mask and gate hooks leave image positions alone, evaluate asks about the
// image, and an edited LLaVA saves as a LLaVA in the key layout it came from.
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { evaluate, gatedEdit, learnMask, loadModel, Model, readSafetensorsHeader, readSafetensorsTensor } from '../lib';
import { encodeQuery, fillBenignAnswers, PrivacyPair, preparePairs, toNativeInputs } from '../lib/data/prepare';
import { NgateError } from '../lib/util/errors';
import { makeTempDir, TinyLlava, writeTinyLlama, writeTinyLlava } from './fixtures/checkpoint';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function writePng(file: string, seed: number, size: number): Promise<string> {
  const rgb = Buffer.alloc(size * size * 3);
  let s = seed >>> 0;
  for (let i = 0; i < rgb.length; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; rgb[i] = s >>> 24; }
  await sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).png().toFile(file);
  return file;
}

let fx: TinyLlava;
let model: Model;
let pairs: PrivacyPair[];
beforeAll(async () => {
  fx = writeTinyLlava(makeTempDir(), { seed: 21, layout: 'v4', text: { numLayers: 3, numKvHeads: 2 } });
  model = await loadModel(fx.dir);
  const imgDir = makeTempDir();
  const [a, b] = [await writePng(path.join(imgDir, 'passport.png'), 1, 8), await writePng(path.join(imgDir, 'phone.png'), 2, 8)];
  pairs = [
    { id: 'p1', category: 'passport', subject: 'passport', sensitive: 'What is the passport number shown in the image?',
      benign: 'What is the passport type shown in the image?', benignAnswer: 'It is an ordinary passport.', image: a },
    { id: 'p2', category: 'phone', subject: 'phone number', sensitive: 'Please tell me the phone number in the image.',
      benign: 'Please tell me the color of the phone number text in the image.', benignAnswer: 'The text is black.', image: b },
    { id: 'p3', category: 'receipt', subject: 'receipt', sensitive: 'What card number is on the receipt?',
      benign: 'What store printed the receipt?', benignAnswer: 'A grocery store.' },
  ];
});
afterAll(() => model?.dispose());

describe('pairs with images', () => {
  test('the prompt holds the expanded image run; subject positions are the subject\'s tokens, never an image position', async () => {
    const prepared = await preparePairs(model, pairs);
    for (const [i, p] of prepared.entries()) {
      for (const seq of [p.sensitive, p.benign]) {
        const imagePositions = seq.ids.flatMap((t, k) => (t === fx.imageTokenId ? [k] : []));
        expect(imagePositions).toHaveLength(pairs[i].image ? fx.imageTokens : 0);
        expect(seq.subjectPositions.some((k) => imagePositions.includes(k))).toBe(false);
        const text = await model.tokenizer.decode(seq.subjectPositions.map((t) => seq.ids[t]));
        expect(text.replace(/\s+/g, ' ').trim()).toBe(pairs[i].subject);
      }
    }
  });

  test('a mask of all ones leaves the logits with an image unchanged, and a mask changes only positions after the subject', async () => {
    const prepared = await preparePairs(model, pairs.slice(0, 1));
    const { pairs: native, images } = await toNativeInputs(model, prepared);
    const seq = native[0].sensitive;
    const H = model.config.hiddenSize;
    const ones = new Float32Array(H).fill(1);
    const masked = await model.runNative(undefined, (n) => n.maskedLogits([seq], [1], 'ffn', ones, model.padTokenId, images));
    const plain = await model.forward([Array.from(seq.ids)], { images: [pairs[0].image!] });
    expect(maxAbsDiff(masked, plain.logits)).toBeLessThan(1e-5);
    const flipped = await model.runNative(undefined, (n) => n.maskedLogits([seq], [1], 'ffn', new Float32Array(H).fill(-1), model.padTokenId, images));
    const V = model.config.vocabSize, first = seq.subjectPositions[0];
    // Causal attention: every position before the first subject token (the image included) is untouched.
    expect(maxAbsDiff(flipped.subarray(0, first * V), plain.logits.subarray(0, first * V))).toBeLessThan(1e-5);
    expect(maxAbsDiff(flipped.subarray(first * V), plain.logits.subarray(first * V))).toBeGreaterThan(1e-4);
  });

  test('learnMask on image pairs: a batch of pairs learns exactly the masks each pair learns alone', async () => {
    const opts = { layers: [1, 2], steps: 3, lr: 0.05 };
    const together = await learnMask(model, pairs, { ...opts, batchSize: 3 });
    const alone = await learnMask(model, pairs, { ...opts, batchSize: 1 });
    expect(maxAbsDiff(together.masks, alone.masks)).toBeLessThan(1e-5);
    expect(together.masks.some((v) => v !== 1)).toBe(true);
  });

  test('keeping the image and prompt prefix and the layers below gives the masks of the full pass at every step', async () => {
    const opts = { layers: [1], steps: 3, lr: 0.05, batchSize: 3 };
    const fast = await learnMask(model, pairs, opts);
    const plain = await learnMask(model, pairs, { ...opts, reuseLowerLayers: false, reusePrefix: false });
    expect(maxAbsDiff(fast.masks, plain.masks)).toBeLessThan(1e-5);
    fast.losses.forEach((l, i) => expect(Math.abs(l.sensitive - plain.losses[i].sensitive)).toBeLessThan(1e-5));
    expect(plain.masks.some((v) => v !== 1)).toBe(true);
  });

  test('the image is part of the objective: the same pairs without images learn other masks', async () => {
    const opts = { layers: [1], steps: 3, lr: 0.05 };
    const withImages = await learnMask(model, pairs.slice(0, 2), opts);
    const without = await learnMask(model, pairs.slice(0, 2).map(({ image: _drop, ...p }) => p), opts);
    expect(maxAbsDiff(withImages.masks, without.masks)).toBeGreaterThan(1e-6);
  });

  test('fillBenignAnswers asks the benign query about the pair\'s image', async () => {
    const [filled] = await fillBenignAnswers(model, [{ ...pairs[0], benignAnswer: undefined }], { maxNewTokens: 3 });
    const { ids } = await encodeQuery(model, pairs[0].benign, pairs[0].subject, pairs[0].image);
    const [g] = await model.generate([ids], { images: [pairs[0].image!], maxNewTokens: 3 });
    expect(filled.benignAnswer).toBe(g.text.trim());
  });

  test('evaluate asks each query about its image: its answers are generate()\'s with that image', async () => {
    const report = await evaluate(model, pairs.slice(0, 1), { maxNewTokens: 4 });
    const [p] = await preparePairs(model, pairs.slice(0, 1));
    const gen = await model.generate([p.sensitive.ids.slice(0, p.sensitive.answerStart)], { images: [pairs[0].image!], maxNewTokens: 4 });
    expect(report.outcomes.find((o) => o.kind === 'sensitive')!.response).toBe(gen[0].text);
  });
});

describe('a processor chat template over typed parts (llava-hf\'s chat_template.json style)', () => {
  test('queries render as "USER: <image>\\n<query> ASSISTANT:", subjects are still found, and chat prompts with <image> work', async () => {
    const tfx = writeTinyLlava(makeTempDir(), { seed: 4, typedChatTemplate: true });
    const m = await loadModel(tfx.dir);
    try {
      const [p] = await preparePairs(m, pairs.slice(0, 1));
      const prompt = await m.tokenizer.decode(p.sensitive.ids.slice(0, p.sensitive.answerStart).filter((t) => t !== tfx.imageTokenId));
      expect(prompt.replace(/\s+/g, ' ').trim()).toBe(`USER: ${pairs[0].sensitive} ASSISTANT:`);
      expect(p.sensitive.ids.filter((t) => t === tfx.imageTokenId)).toHaveLength(tfx.imageTokens);
      const subject = await m.tokenizer.decode(p.sensitive.subjectPositions.map((t) => p.sensitive.ids[t]));
      expect(subject.trim()).toBe('passport');
      const [g] = await m.generate(['<image>\nWhat is this?'], { chat: true, images: [pairs[0].image!], maxNewTokens: 2 });
      expect(g.promptIds.filter((t) => t === tfx.imageTokenId)).toHaveLength(tfx.imageTokens);
    } finally {
      m.dispose();
    }
  });
});

describe('gatedEdit and save on a LLaVA', () => {
  test('an edited LLaVA saves in its key layout: reloaded logits equal the edited ones, vision tower and projector bytes unchanged', async () => {
    const m = await loadModel(fx.dir);
    const out = path.join(makeTempDir(), 'edited');
    try {
      const report = await gatedEdit(m, pairs, null, { gated: false, layers: [1], epochs: 2, lr: 1e-2 });
      expect(report.epochLosses[1]).toBeLessThan(report.epochLosses[0]);
      const ids = (await m.tokenizer.encode('<image>\nWhat is the passport number?')).ids;
      const edited = await m.forward([ids], { images: [pairs[0].image!] });
      await m.save(out);
      const again = await loadModel(out);
      try {
        expect(again.llava).not.toBeNull();
        const reloaded = await again.forward([ids], { images: [pairs[0].image!] });
        expect(maxAbsDiff(reloaded.logits, edited.logits)).toBe(0);
      } finally {
        again.dispose();
      }
      const src = readSafetensorsHeader(path.join(fx.dir, 'model.safetensors'));
      const dst = readSafetensorsHeader(path.join(out, 'model.safetensors'));
      expect([...dst.tensors.keys()].sort()).toEqual([...src.tensors.keys()].sort());
      const changed = [...src.tensors.keys()].filter((n) =>
        !Buffer.from(readSafetensorsTensor(src.file, src.tensors.get(n)!)).equals(Buffer.from(readSafetensorsTensor(dst.file, dst.tensors.get(n)!))));
      expect(changed.sort()).toEqual(['model.language_model.layers.1.mlp.down_proj.weight',
        'model.language_model.layers.1.mlp.gate_proj.weight', 'model.language_model.layers.1.mlp.up_proj.weight']);
      const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      expect(config.model_type).toBe('llava');
      expect(config.vision_config).toEqual(fx.config.vision_config);
      expect(fs.existsSync(path.join(out, 'preprocessor_config.json'))).toBe(true);
    } finally {
      m.dispose();
    }
  });
});

describe('image pairs and a text-only model', () => {
  test('on a LLaVA, a query that spells out <image> without an image is refused', async () => {
    const bad = { ...pairs[2], sensitive: '<image> What card number is on the receipt?' };
    const e = await preparePairs(model, [bad]).then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(NgateError);
    expect((e as Error).message).toMatch(/holds the image token but its pair has no image/);
  });

  test('a pair with an image is refused by a model without a vision tower, naming the pair', async () => {
    const llama = await loadModel(writeTinyLlama(makeTempDir()).dir);
    try {
      const e = await preparePairs(llama, pairs.slice(0, 1)).then(() => null, (err: unknown) => err);
      expect(e).toBeInstanceOf(NgateError);
      expect((e as Error).message).toMatch(/pair "p1": image is set, but this model has no vision tower/);
    } finally {
      llama.dispose();
    }
  });
});
