// LLaVA-1.5 through the addon: the vision tower, projector and merge against
// an independent float64 reference, every checkpoint key layout, batching,
// the KV cache, and the errors for bad image input.
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { loadModel, Model, parseModelConfig } from '../lib';
import { NgateError } from '../lib/util/errors';
import { serializeConfig } from '../lib/model/config';
import { makeTempDir, TinyLlava, writeTinyLlama, writeTinyLlava } from './fixtures/checkpoint';
import { referenceLogits } from './reference/llama-ref';
import { referenceImageFeatures } from './reference/llava-ref';

// NGATE_TEST_DEVICE=cuda and NGATE_TEST_DTYPE=bfloat16 rerun this file on a GPU.
const device = process.env.NGATE_TEST_DEVICE ?? 'cpu';
const dtype = (process.env.NGATE_TEST_DTYPE ?? 'float32') as 'float32' | 'bfloat16';
const loadOpts = { device, dtype };
// float32 agrees with the float64 reference to rounding; bfloat16 keeps ~3 significant digits.
const tol = dtype === 'float32' ? 2e-4 : 6e-2;
// Batched against alone: same arithmetic but other shapes, so other kernel choices.
const batchTol = dtype === 'float32' ? 5e-5 : 3e-2;

const MEAN = [0.48145466, 0.4578275, 0.40821073];
const STD = [0.26862954, 0.26130258, 0.27577711];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Seeded RGB bytes of a width × height image. */
function randomRgb(width: number, height: number, seed: number): Buffer {
  const out = Buffer.alloc(width * height * 3);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

async function png(rgb: Buffer, width: number, height: number): Promise<Buffer> {
  return sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** CLIP normalisation of an image already at the tower's size, computed here: [3, S, S]. */
function normalised(rgb: Buffer, S: number): Float32Array {
  const out = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++) for (let i = 0; i < S * S; i++) out[c * S * S + i] = (rgb[i * 3 + c] / 255 - MEAN[c]) / STD[c];
  return out;
}

function rows(logits: Float32Array, V: number, T: number, b: number, from: number, to: number): Float32Array {
  return logits.subarray((b * T + from) * V, (b * T + to) * V);
}

describe('LLaVA forward with images', () => {
  let fx: TinyLlava;
  let model: Model;
  let llamaDir: string;
  let rgbA: Buffer, rgbB: Buffer, imageA: Buffer, imageB: Buffer;
  const prompt = '<image>\nWhat is the passport number shown in the image?';

  beforeAll(async () => {
    llamaDir = makeTempDir();
    fx = writeTinyLlava(makeTempDir(), { seed: 3, llamaDir });
    model = await loadModel(fx.dir, loadOpts);
    rgbA = randomRgb(fx.imageSize, fx.imageSize, 1);
    rgbB = randomRgb(fx.imageSize, fx.imageSize, 2);
    imageA = await png(rgbA, fx.imageSize, fx.imageSize);
    imageB = await png(rgbB, fx.imageSize, fx.imageSize);
  });
  afterAll(() => model?.dispose());

  test('the config reads the decoder from text_config and counts the image tokens', () => {
    expect(model.llava).not.toBeNull();
    expect(model.config.hiddenSize).toBe(fx.textConfig.hidden_size);
    expect(model.config.vocabSize).toBe((fx.config.text_config as { vocab_size: number }).vocab_size);
    expect(model.llava!.imageTokenId).toBe(fx.imageTokenId);
    expect(model.llava!.imageTokens).toBe(fx.imageTokens);
    expect(model.imageToken).toBe('<image>');
    expect(model.padTokenId).toBe(fx.config.pad_token_id);
  });

  test('"<image>" in a prompt is one token, expanded to the patch count in the ids fed', async () => {
    const ids = (await model.tokenizer.encode(prompt)).ids;
    expect(ids.filter((t) => t === fx.imageTokenId)).toHaveLength(1);
    const res = await model.forward([ids], { images: [imageA] });
    expect(res.ids![0].filter((t) => t === fx.imageTokenId)).toHaveLength(fx.imageTokens);
    expect(res.shape).toEqual([1, ids.length - 1 + fx.imageTokens, model.config.vocabSize]);
  });

  test('logits with an image equal the float64 reference: CLIP, projector, features merged at the image tokens, LLaMA', async () => {
    const ids = (await model.tokenizer.encode(prompt)).ids;
    const { logits, ids: fed } = await model.forward([ids], { images: [imageA] });
    const features = referenceImageFeatures(fx, normalised(rgbA, fx.imageSize));
    expect(features).toHaveLength(fx.imageTokens);
    const at = fed![0].indexOf(fx.imageTokenId);
    const ref = referenceLogits({ config: fx.textConfig, tensors: fx.tensors }, fed![0],
      (t) => (fed![0][t] === fx.imageTokenId ? features[t - at] : undefined));
    expect(maxAbsDiff(logits, ref)).toBeLessThan(tol);
  });

  test('the image matters: another image gives other logits after the image tokens', async () => {
    const ids = (await model.tokenizer.encode(prompt)).ids;
    const a = await model.forward([ids], { images: [imageA], lastOnly: true });
    const b = await model.forward([ids], { images: [imageB], lastOnly: true });
    expect(maxAbsDiff(a.logits, b.logits)).toBeGreaterThan(1e-3);
  });

  test('ids that already carry the expanded run are taken as they are', async () => {
    const ids = (await model.tokenizer.encode(prompt)).ids;
    const once = await model.forward([ids], { images: [imageA] });
    const again = await model.forward(once.ids!, { images: [imageA] });
    expect(again.ids).toEqual(once.ids);
    expect(maxAbsDiff(again.logits, once.logits)).toBe(0);
  });

  test('a text-only prompt gives the logits of the same decoder loaded as a LLaMA checkpoint', async () => {
    const llama = await loadModel(llamaDir, loadOpts);
    try {
      const ids = (await model.tokenizer.encode('What is the passport type?')).ids;
      const a = await model.forward([ids]);
      const b = await llama.forward([ids]);
      expect(maxAbsDiff(a.logits, b.logits)).toBe(0);
    } finally {
      llama.dispose();
    }
  });

  test('a padded batch of prompts with and without images gives each row the logits it has alone', async () => {
    const texts = [prompt, 'What is the passport type?', '<image>\nHello'];
    const images = [imageA, null, imageB];
    const ids = await Promise.all(texts.map(async (t) => (await model.tokenizer.encode(t)).ids));
    const all = await model.forward(ids, { images });
    const V = model.config.vocabSize, T = all.shape[1];
    for (let b = 0; b < ids.length; b++) {
      const alone = await model.forward([ids[b]], { images: [images[b]] });
      const n = alone.shape[1];
      expect(maxAbsDiff(rows(all.logits, V, T, b, 0, n), alone.logits)).toBeLessThan(batchTol);
    }
  });

  test('decoding with the KV cache after an image gives the logits of a full recompute', async () => {
    const gens = await model.generate([prompt, 'What is the passport type?'], { images: [imageA, null], maxNewTokens: 5, returnLogits: true });
    const V = model.config.vocabSize;
    expect(gens[0].promptIds.filter((t) => t === fx.imageTokenId)).toHaveLength(fx.imageTokens);
    for (const [b, g] of gens.entries()) {
      const full = [...g.promptIds, ...g.ids];
      const { logits } = await model.forward([full], { images: [b === 0 ? imageA : null] });
      const steps = Math.min(g.logits!.length / V, g.ids.length);
      expect(steps).toBeGreaterThan(0);
      for (let s = 0; s < steps; s++) {
        const t = g.promptIds.length - 1 + s;
        expect(maxAbsDiff(g.logits!.subarray(s * V, (s + 1) * V), rows(logits, V, full.length, 0, t, t + 1))).toBeLessThan(batchTol);
      }
    }
  });

  test('a JPEG from a path and the same bytes as a Buffer give the same logits', async () => {
    const jpeg = await sharp(rgbA, { raw: { width: fx.imageSize, height: fx.imageSize, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    const file = path.join(makeTempDir(), 'photo.jpg');
    fs.writeFileSync(file, jpeg);
    const ids = (await model.tokenizer.encode(prompt)).ids;
    const a = await model.forward([ids], { images: [file] });
    const b = await model.forward([ids], { images: [jpeg] });
    expect(maxAbsDiff(a.logits, b.logits)).toBe(0);
  });
});

describe('every LLaVA key layout loads to the same model', () => {
  const layouts = ['hub', 'v4', 'v5'] as const;
  test.each(layouts)('layout %s: identical logits with an image, and the keys it was written with', async (layout) => {
    const ref = writeTinyLlava(makeTempDir(), { seed: 5, layout: 'hub' });
    const fx = writeTinyLlava(makeTempDir(), { seed: 5, layout });
    const img = await png(randomRgb(fx.imageSize, fx.imageSize, 9), fx.imageSize, fx.imageSize);
    const [a, b] = [await loadModel(ref.dir, loadOpts), await loadModel(fx.dir, loadOpts)];
    try {
      const ids = (await a.tokenizer.encode('<image>\nWhat is the name of the person in the image?')).ids;
      const la = await a.forward([ids], { images: [img] });
      const lb = await b.forward([ids], { images: [img] });
      expect(maxAbsDiff(la.logits, lb.logits)).toBe(0);
    } finally {
      a.dispose();
      b.dispose();
    }
    const keys = Object.keys(JSON.parse(fs.readFileSync(path.join(fx.dir, 'model.safetensors')).subarray(8, 8 + Number(fs.readFileSync(path.join(fx.dir, 'model.safetensors')).readBigUInt64LE(0))).toString('utf8')));
    const prefix = { hub: 'vision_tower.vision_model.', v4: 'model.vision_tower.vision_model.', v5: 'vision_tower.embeddings.' }[layout];
    expect(keys.some((k) => k.startsWith(prefix))).toBe(true);
  });
});

describe('LLaVA variants of the config', () => {
  test.each([
    ['"full" select strategy (CLS kept)', { selectStrategy: 'full' as const }],
    ['several feature layers concatenated', { featureLayer: [-3, -1] }],
    ['image_token_id instead of image_token_index', { imageTokenKey: 'image_token_id' as const, featureLayer: 1 }],
    ['a bfloat16 checkpoint (computed in float32)', { dtype: 'bfloat16' as const, layout: 'v5' as const }],
  ])('%s matches the float64 reference', async (_name, opts) => {
    const fx = writeTinyLlava(makeTempDir(), { seed: 11, ...opts });
    const model = await loadModel(fx.dir, loadOpts);
    try {
      const rgb = randomRgb(fx.imageSize, fx.imageSize, 4);
      const ids = (await model.tokenizer.encode('<image>\nWho is the person in the photo?')).ids;
      const { logits, ids: fed } = await model.forward([ids], { images: [await png(rgb, fx.imageSize, fx.imageSize)] });
      const features = referenceImageFeatures(fx, normalised(rgb, fx.imageSize));
      expect(model.llava!.imageTokens).toBe(fx.imageTokens);
      const at = fed![0].indexOf(fx.imageTokenId);
      const ref = referenceLogits({ config: fx.textConfig, tensors: fx.tensors }, fed![0],
        (t) => (fed![0][t] === fx.imageTokenId ? features[t - at] : undefined));
      expect(maxAbsDiff(logits, ref)).toBeLessThan(tol);
    } finally {
      model.dispose();
    }
  });
});

describe('bad image input is a clear NgateError', () => {
  let fx: TinyLlava;
  let model: Model;
  let good: Buffer;
  let ids: number[];
  beforeAll(async () => {
    fx = writeTinyLlava(makeTempDir(), { seed: 1 });
    model = await loadModel(fx.dir, loadOpts);
    good = await png(randomRgb(8, 8, 3), 8, 8);
    ids = (await model.tokenizer.encode('<image>\nWhat is this?')).ids;
  });
  afterAll(() => model?.dispose());

  async function failure(p: Promise<unknown>): Promise<NgateError> {
    const e = await p.then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(NgateError);
    return e as NgateError;
  }

  test('a missing file names the file', async () => {
    const file = path.join(makeTempDir(), 'nope.png');
    const e = await failure(model.forward([ids], { images: [file] }));
    expect(e.code).toBe('ERR_IMAGE');
    expect(e.message).toContain(file);
    expect(e.message).toMatch(/cannot read the image: ENOENT/);
  });

  test('a corrupt file (truncated PNG, or not an image at all) says it cannot be decoded', async () => {
    const dir = makeTempDir();
    const truncated = path.join(dir, 'cut.png');
    fs.writeFileSync(truncated, good.subarray(0, good.length - 20));
    const text = path.join(dir, 'notes.jpg');
    fs.writeFileSync(text, 'these are not pixels');
    for (const file of [truncated, text]) {
      const e = await failure(model.forward([ids], { images: [file] }));
      expect(e.code).toBe('ERR_IMAGE');
      expect(e.message).toContain(file);
      expect(e.message).toMatch(/cannot decode the image/);
    }
    const e = await failure(model.forward([ids], { images: [Buffer.from('garbage')] }));
    expect(e.message).toMatch(/images\[0\].*cannot decode the image/);
  });

  test('an image given to a text-only model', async () => {
    const llama = await loadModel(writeTinyLlama(makeTempDir()).dir);
    try {
      const e = await failure(llama.forward([[1, 5, 6]], { images: [good] }));
      expect(e.message).toMatch(/has no vision tower/);
      const g = await failure(llama.generate(['Hello'], { images: [good] }));
      expect(g.message).toMatch(/has no vision tower/);
    } finally {
      llama.dispose();
    }
  });

  test('an image for a prompt without <image>, and <image> without an image', async () => {
    const plain = (await model.tokenizer.encode('What is this?')).ids;
    const a = await failure(model.forward([plain], { images: [good] }));
    expect(a.message).toMatch(/images\[0\] is given but ids\[0\] has no image token \(<image>\)/);
    const b = await failure(model.forward([ids]));
    expect(b.message).toMatch(/ids\[0\] holds the image token .* but no image is given/);
    const c = await failure(model.forward([ids], { images: [null] }));
    expect(c.message).toMatch(/images\[0\] is null/);
    const d = await failure(model.generate(['What is this?'], { images: [good] }));
    expect(d.message).toMatch(/prompts\[0\] has no image token/);
  });

  test('an image count that does not match the sequences, and a broken run of image tokens', async () => {
    const a = await failure(model.forward([ids, ids], { images: [good] }));
    expect(a.message).toMatch(/one image \(or null\) per sequence: 2 expected, got 1/);
    const two = [...ids, fx.imageTokenId];
    const b = await failure(model.forward([two], { images: [good] }));
    expect(b.message).toMatch(/holds 2 image tokens/);
  });
});

describe('LLaVA config.json', () => {
  // llava-hf/llava-1.5-7b-hf's config.json: text_config lists only what differs from LlamaConfig's defaults.
  const hub = () => ({
    architectures: ['LlavaForConditionalGeneration'], ignore_index: -100, image_token_index: 32000, model_type: 'llava',
    pad_token_id: 32001, projector_hidden_act: 'gelu',
    text_config: { _name_or_path: 'lmsys/vicuna-7b-v1.5', architectures: ['LlamaForCausalLM'], max_position_embeddings: 4096,
      model_type: 'llama', rms_norm_eps: 1e-5, torch_dtype: 'float16', vocab_size: 32064 },
    tie_word_embeddings: false, torch_dtype: 'float16', transformers_version: '4.36.0.dev0',
    vision_config: { hidden_size: 1024, image_size: 336, intermediate_size: 4096, model_type: 'clip_vision_model',
      num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14, projection_dim: 768, vocab_size: 32000 },
    vision_feature_layer: -2, vision_feature_select_strategy: 'default', vocab_size: 32064,
  });

  test('the llava-1.5-7b-hf file reads as Vicuna-7B with CLIP ViT-L/14-336 and 576 image tokens', () => {
    const c = parseModelConfig(hub(), 'config.json');
    expect(c.modelType).toBe('llava');
    if (c.modelType !== 'llava') return;
    expect(c.text).toMatchObject({ hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKvHeads: 32,
      vocabSize: 32064, rmsNormEps: 1e-5, ropeTheta: 10000, padTokenId: 32001, tieWordEmbeddings: false });
    expect(c.vision).toMatchObject({ hiddenSize: 1024, numLayers: 24, imageSize: 336, patchSize: 14, hiddenAct: 'quick_gelu', layerNormEps: 1e-5 });
    expect(c).toMatchObject({ imageTokenId: 32000, imageTokens: 576, featureLayers: [-2], selectStrategy: 'default', projectorAct: 'gelu', dtype: 'float16' });
  });

  test('saving in another dtype writes it at the top level and in the sub-configs that state one', () => {
    const out = JSON.parse(serializeConfig(parseModelConfig(hub(), 'config.json'), { dtype: 'bfloat16' }));
    expect(out.torch_dtype).toBe('bfloat16');
    expect(out.text_config.torch_dtype).toBe('bfloat16');
    expect(out.vision_config.torch_dtype).toBeUndefined();
    expect(out.vision_config).toEqual(hub().vision_config);
  });

  test('no text_config or vision_config at all means LlavaConfig\'s defaults', () => {
    const c = parseModelConfig({ model_type: 'llava' }, 'config.json');
    if (c.modelType !== 'llava') throw new Error('not llava');
    expect(c.text.hiddenSize).toBe(4096);
    expect(c.text.vocabSize).toBe(32000);
    expect(c.vision).toMatchObject({ hiddenSize: 1024, numLayers: 24, imageSize: 336, patchSize: 14 });
  });

  test('unsupported parts are refused naming the field', () => {
    const bad = (patch: Record<string, unknown>) => () => parseModelConfig({ ...hub(), ...patch }, 'config.json');
    expect(bad({ vision_config: { ...hub().vision_config, model_type: 'siglip_vision_model' } }))
      .toThrow(/field "vision_config.model_type": unsupported vision tower "siglip_vision_model"/);
    expect(bad({ vision_feature_select_strategy: 'cls' })).toThrow(/field "vision_feature_select_strategy": must be "default" or "full"/);
    expect(bad({ vision_feature_layer: 30 })).toThrow(/field "vision_feature_layer": must be an index into the vision tower's 25 hidden states/);
    expect(bad({ text_config: { ...hub().text_config, hidden_act: 'gelu' } })).toThrow(/field "text_config.hidden_act": activation "gelu" is not supported/);
    expect(bad({ text_config: { ...hub().text_config, model_type: 'mistral' } })).toThrow(/field "text_config.model_type": unsupported language model "mistral"/);
    expect(bad({ projector_hidden_act: 'swish' })).toThrow(/field "projector_hidden_act"/);
  });
});
