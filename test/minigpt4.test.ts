// MiniGPT-4 (Llama-2 variant) from the files its users have: a tiny random
// one written in the original formats, its logits against a float64
// reference of the original's code path (eva_vit.py, encode_img,
// get_context_emb, MiniGPTBase.forward), the prompts token by token, the
// descriptor, the YAML, saving, and bad input.
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { loadModel, Model, readSafetensorsHeader } from '../lib';
import { NgateError } from '../lib/util/errors';
import { readMiniGpt4Descriptor } from '../lib/model/minigpt4';
import { makeTempDir } from './fixtures/checkpoint';
import { minigpt4EvalYaml, TinyMiniGpt4, writeTinyMiniGpt4 } from './fixtures/minigpt4';
import { ordered, PyTensor, torchSave } from './fixtures/torch-save';
import { referenceLogits } from './reference/llama-ref';
import { referenceMiniGpt4Embeddings } from './reference/minigpt4-ref';

const MEAN = [0.48145466, 0.4578275, 0.40821073], STD = [0.26862954, 0.26130258, 0.27577711];
const SYSTEM = 'Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. Please answer my questions.';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function randomRgb(seed: number, size: number): Buffer {
  const rgb = Buffer.alloc(size * size * 3);
  let s = seed >>> 0;
  for (let i = 0; i < rgb.length; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; rgb[i] = s >>> 24; }
  return rgb;
}

/** Blip2ImageEvalProcessor on an image already at the tower's size: /255, mean, std, channels first. */
function pixelsOf(rgb: Buffer, S: number): Float32Array {
  const out = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++) for (let i = 0; i < S * S; i++) out[c * S * S + i] = (Math.fround(rgb[i * 3 + c] / 255) - MEAN[c]) / STD[c];
  return out;
}

const dirs: string[] = [];
function tmp(): string { const d = makeTempDir('ngate-mg4-'); dirs.push(d); return d; }

let fx: TinyMiniGpt4;
let model: Model;
let rgb: Buffer;
let png: string;
beforeAll(async () => {
  fx = writeTinyMiniGpt4(tmp(), { seed: 3 });
  model = await loadModel(fx.dir);
  rgb = randomRgb(7, fx.dims.S);
  png = path.join(fx.dir, 'passport.png');
  await sharp(rgb, { raw: { width: fx.dims.S, height: fx.dims.S, channels: 3 } }).png().toFile(png);
});
afterAll(() => {
  model?.dispose();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** The float64 reference logits of ids whose image positions (id = vocabulary size) take the image's embeddings. */
function reference(ids: number[], withImage: boolean): Float64Array {
  const emb = withImage ? referenceMiniGpt4Embeddings(fx, pixelsOf(rgb, fx.dims.S)) : [];
  const first = ids.indexOf(model.config.vocabSize);
  return referenceLogits(fx.llama, ids, (t) => (withImage && t >= first && t < first + emb.length ? emb[t - first] : undefined));
}

const enc = async (text: string, special: boolean): Promise<number[]> => (await model.tokenizer.encode(text, { addSpecialTokens: special })).ids;

describe('MiniGPT-4 from its three files', () => {
  test('the descriptor: defaults of MiniGPT4-llama2-7b, the tiny sizes given, 64/4 = image embeddings per image', () => {
    const c = model.minigpt4!;
    expect(c.numImageTokens).toBe(fx.dims.tokens);
    expect(model.imageTokenCount).toBe(4);
    expect(model.imageTokenId).toBe(model.config.vocabSize);
    expect(c.vision).toMatchObject({ imageSize: 56, patchSize: 14, embedDim: 16, depth: 2, numHeads: 2, mlpHidden: 69, normEps: 1e-6, lnVisionEps: 1e-5, tokensPerEmbedding: 4 });
    expect(c.conversation).toEqual({ system: SYSTEM, roles: ['<s>[INST] ', ' [/INST] '], sep: '', imageMessage: '<Img><ImageHere></Img>' });
    expect([c.promptTemplate, c.endSym, c.imagePlaceholder]).toEqual(['[INST] {} [/INST] ', '</s>', '<ImageHere>']);
    // A descriptor with nothing but the three paths is MiniGPT4-llama2-7b.
    const d = tmp();
    fs.writeFileSync(path.join(d, 'minigpt4.json'), JSON.stringify({ llama_model: path.join(fx.dir, 'Llama-2-7b-chat-hf'), ckpt: path.join(fx.dir, 'pretrained_minigpt4_llama2_7b.pth'), vit_checkpoint: path.join(fx.dir, 'eva_vit_g.pth') }));
    const full = readMiniGpt4Descriptor(path.join(d, 'minigpt4.json'));
    expect(full.vision).toEqual({ imageSize: 224, patchSize: 14, embedDim: 1408, depth: 39, numHeads: 16, mlpRatio: 4.3637, mlpHidden: 6144, normEps: 1e-6, lnVisionEps: 1e-5, tokensPerEmbedding: 4 });
    expect(full.numImageTokens).toBe(64);
    expect(full.visProcessor).toEqual({ imageSize: 224, mean: MEAN, std: STD });
  });

  test('the chat prompt is Chat\'s, split at <ImageHere>: BOS on the first piece only (and the literal <s> a second BOS)', async () => {
    const q = 'What is the passport number shown in the image?';
    const [ids] = await model.encodePrompts([q], true, [png]);
    const bos = model.tokenizer.bosTokenId!;
    const expected = [...await enc(`${SYSTEM}<s>[INST] <Img>`, true), ...new Array(4).fill(model.config.vocabSize), ...await enc(`</Img> ${q} [/INST] `, false)];
    expect(ids).toEqual(expected);
    expect(ids.filter((t) => t === bos)).toHaveLength(2);
    expect(ids[0]).toBe(bos);
    // The same prompt written out by hand, as get_context_emb takes it.
    const [raw] = await model.encodePrompts([`${SYSTEM}<s>[INST] <Img><ImageHere></Img> ${q} [/INST] `], false, [png]);
    expect(raw).toEqual(ids);
    const turn = await model.encodeUserTurn(q, { image: true });
    expect(turn.ids).toEqual(ids);
    expect(turn.prompt.slice(turn.queryStart, turn.queryStart + q.length)).toBe(q);
  });

  test('logits of the chat prompt with an image equal the float64 reference (EVA ViT, ln_vision, 4 patches per embedding, llama_proj, Llama)', async () => {
    const [ids] = await model.encodePrompts(['What is shown?'], true, [png]);
    const { logits, shape } = await model.forward([ids], { images: [png] });
    expect(shape).toEqual([1, ids.length, model.config.vocabSize]);
    const d = maxAbsDiff(logits, reference(ids, true));
    if (process.env.NGATE_PRINT) console.log("max |dlogit| chat+image", d);
    expect(d).toBeLessThan(1e-4);
    // The image matters.
    const other = randomRgb(8, fx.dims.S);
    const { logits: l2 } = await model.forward([ids], { images: [await sharp(other, { raw: { width: 56, height: 56, channels: 3 } }).png().toBuffer()] });
    expect(maxAbsDiff(l2, logits)).toBeGreaterThan(1e-3);
  });

  test('the training sequence is MiniGPTBase.forward\'s: one BOS, [INST] <Img>, the image, </Img> question [/INST], answer and </s>; logits equal the reference', async () => {
    const q = 'What is the passport type?', answer = 'It is an ordinary passport.';
    const turn = await model.encodeUserTurn(q, { image: true, purpose: 'train' });
    const bos = model.tokenizer.bosTokenId!;
    expect(turn.ids).toEqual([bos, ...await enc('[INST] <Img>', false), ...new Array(4).fill(model.config.vocabSize), ...await enc(`</Img> ${q} [/INST] `, false)]);
    const ids = [...turn.ids, ...await enc(answer + '</s>', false)];
    expect(ids[ids.length - 1]).toBe(model.tokenizer.eosTokenId);
    const { logits } = await model.forward([ids], { images: [png] });
    expect(maxAbsDiff(logits, reference(ids, true))).toBeLessThan(1e-4);
  });

  test('text only: the chat prompt without an image runs the decoder alone and equals the reference', async () => {
    const [ids] = await model.encodePrompts(['Hello there'], true);
    expect(ids).toEqual([...await enc(`${SYSTEM}<s>[INST] Hello there [/INST] `, true)]);
    const { logits } = await model.forward([ids]);
    expect(maxAbsDiff(logits, reference(ids, false))).toBeLessThan(1e-4);
  });

  test('generate with an image: greedy tokens follow the reference argmax; a batch with and without images', async () => {
    const [g, h] = await model.generate(['What is shown?', 'Hello there'], { chat: true, images: [png, null], maxNewTokens: 3, returnLogits: true });
    expect(g.promptIds.filter((t) => t === model.imageTokenId)).toHaveLength(4);
    const ref = reference(g.promptIds, true);
    const V = model.config.vocabSize;
    const last = ref.subarray((g.promptIds.length - 1) * V, g.promptIds.length * V);
    expect(maxAbsDiff(g.logits!.subarray(0, V), last)).toBeLessThan(1e-4);
    expect(g.ids[0]).toBe(last.indexOf(Math.max(...last)));
    const [alone] = await model.generate(['Hello there'], { chat: true, maxNewTokens: 3 });
    expect(h.ids).toEqual(alone.ids);
  });

  test('bfloat16: the ViT and decoder in bfloat16 stay close to float32', async () => {
    const bf = await loadModel(fx.descriptor, { dtype: 'bfloat16' });
    try {
      const [ids] = await model.encodePrompts(['What is shown?'], true, [png]);
      const a = (await model.forward([ids], { images: [png] })).logits;
      const b = (await bf.forward([ids], { images: [png] })).logits;
      expect(b.every(Number.isFinite)).toBe(true);
      expect(maxAbsDiff(a, b)).toBeLessThan(0.25);
      expect(maxAbsDiff(a, b)).toBeGreaterThan(0);
    } finally {
      bf.dispose();
    }
  });

  test('a Llama folder of torch.save shards (with rotary inv_freq buffers) gives the same logits', async () => {
    const bin = writeTinyMiniGpt4(tmp(), { seed: 3, llamaFormat: 'bin' });
    expect(fs.existsSync(path.join(bin.dir, 'Llama-2-7b-chat-hf', 'model.safetensors'))).toBe(false);
    const m = await loadModel(bin.dir);
    try {
      const [ids] = await model.encodePrompts(['What is shown?'], true, [png]);
      expect(maxAbsDiff((await m.forward([ids], { images: [png] })).logits, (await model.forward([ids], { images: [png] })).logits)).toBe(0);
    } finally {
      m.dispose();
    }
  });

  test('the original eval YAML with the model defaults it merges, the ViT found in torch\'s hub cache', async () => {
    const repo = tmp();
    fs.mkdirSync(path.join(repo, 'eval_configs'));
    fs.mkdirSync(path.join(repo, 'minigpt4', 'configs', 'models'), { recursive: true });
    fs.writeFileSync(path.join(repo, 'minigpt4', 'configs', 'models', 'minigpt4_llama2.yaml'), `model:
  arch: minigpt4
  image_size: 224
  drop_path_rate: 0
  use_grad_checkpoint: False
  vit_precision: "fp16"
  freeze_vit: True
  has_qformer: False
  prompt: ""
  llama_model: "${path.join(fx.dir, 'Llama-2-7b-chat-hf')}"
`);
    const yaml = path.join(repo, 'eval_configs', 'minigpt4_llama2_eval.yaml');
    fs.writeFileSync(yaml, minigpt4EvalYaml(path.join(fx.dir, 'pretrained_minigpt4_llama2_7b.pth')));
    const torchHome = tmp();
    fs.mkdirSync(path.join(torchHome, 'hub', 'checkpoints'), { recursive: true });
    fs.copyFileSync(path.join(fx.dir, 'eva_vit_g.pth'), path.join(torchHome, 'hub', 'checkpoints', 'eva_vit_g.pth'));
    const saved = process.env.TORCH_HOME;
    process.env.TORCH_HOME = torchHome;
    try {
      // The tiny files are not MiniGPT4-llama2-7b's sizes: the ViT file says so, naming the tensor.
      await expect(loadModel(yaml)).rejects.toThrow(/eva_vit_g\.pth: tensor cls_token has shape \[1,1,16\], the descriptor \(minigpt4_llama2_eval\.yaml\) implies \[1,1,1408\]/);
      // With the tiny sizes added to the YAML's model section it loads and gives the descriptor's logits.
      fs.writeFileSync(yaml, fs.readFileSync(yaml, 'utf8')
        .replace('  ckpt:', '  image_size: 56\n  vision_tower: {patch_size: 14, embed_dim: 16, depth: 2, num_heads: 2}\n  ckpt:')
        .replace('        image_size: 224', '        image_size: 56'));
      const m = await loadModel(yaml);
      try {
        expect(m.minigpt4!.vitCheckpoint).toBe(path.join(torchHome, 'hub', 'checkpoints', 'eva_vit_g.pth'));
        const [ids] = await model.encodePrompts(['What is shown?'], true, [png]);
        expect(await m.encodePrompts(['What is shown?'], true, [png])).toEqual([ids]);
        expect(maxAbsDiff((await m.forward([ids], { images: [png] })).logits, (await model.forward([ids], { images: [png] })).logits)).toBe(0);
      } finally {
        m.dispose();
      }
    } finally {
      if (saved === undefined) delete process.env.TORCH_HOME; else process.env.TORCH_HOME = saved;
    }
  });
});

describe('bad MiniGPT-4 input: a clear NgateError naming the file and the reason', () => {
  async function loadError(p: string): Promise<NgateError> {
    let err: unknown;
    try { (await loadModel(p)).dispose(); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(NgateError);
    return err as NgateError;
  }
  function variant(edit: (dir: string) => void, opts: Parameters<typeof writeTinyMiniGpt4>[1] = {}): string {
    const v = writeTinyMiniGpt4(tmp(), { seed: 3, ...opts });
    edit(v.dir);
    return v.dir;
  }

  test('a descriptor that names a missing file or folder', async () => {
    for (const [key, value] of [['ckpt', 'nope.pth'], ['vit_checkpoint', 'gone/eva_vit_g.pth'], ['llama_model', 'no-llama']]) {
      const dir = variant(() => undefined, { descriptor: { [key]: value } });
      const e = await loadError(dir);
      expect(e.code).toBe('ERR_MISSING_FILE');
      expect(e.message).toContain(path.join(dir, 'minigpt4.json'));
      expect(e.message).toContain(`field "${key}"`);
      expect(e.message).toContain(path.join(dir, value));
    }
  });

  test('a ViT file whose shapes disagree with the descriptor', async () => {
    const dir = variant(() => undefined, { descriptor: { vision_tower: { patch_size: 14, embed_dim: 32, depth: 2, num_heads: 2 } } });
    const e = await loadError(dir);
    expect(e.code).toBe('ERR_CHECKPOINT');
    expect(e.message).toMatch(/eva_vit_g\.pth: tensor cls_token has shape \[1,1,16\], the descriptor \(minigpt4\.json\) implies \[1,1,32\]/);
    // More blocks than the file holds.
    const deep = await loadError(variant(() => undefined, { descriptor: { vision_tower: { patch_size: 14, embed_dim: 16, depth: 5, num_heads: 2 } } }));
    expect(deep.code).toBe('ERR_MISSING_TENSOR');
    expect(deep.message).toMatch(/eva_vit_g\.pth: tensor blocks\.3\.norm1\.weight is missing from the EVA ViT checkpoint/);
  });

  test('a stage-2 file without llama_proj, or without its "model" dict', async () => {
    const noProj = await loadError(variant((d) => torchSave(path.join(d, 'pretrained_minigpt4_llama2_7b.pth'),
      ordered({ model: ordered({ 'llama_model.model.layers.0.self_attn.rotary_emb.inv_freq': new PyTensor('F32', [2], [1, 2]) }), epoch: 1 }))));
    expect(noProj.code).toBe('ERR_MISSING_TENSOR');
    expect(noProj.message).toMatch(/pretrained_minigpt4_llama2_7b\.pth: tensor llama_proj\.weight is missing from the stage-2 checkpoint's "model" dict/);
    const noModel = await loadError(variant((d) => torchSave(path.join(d, 'pretrained_minigpt4_llama2_7b.pth'), ordered({ epoch: 1 }))));
    expect(noModel.message).toMatch(/pretrained_minigpt4_llama2_7b\.pth: has no "model" entry/);
  });

  test('a patch count not divisible by tokens_per_embedding', async () => {
    const e = await loadError(variant(() => undefined, { descriptor: { image_size: 42 } }));
    expect(e.code).toBe('ERR_CONFIG');
    expect(e.message).toMatch(/field "vision_tower\.tokens_per_embedding": the 9 patches of a 42px image in 14px patches cannot be grouped by 4/);
  });

  test('a truncated or non-zip .pth, and a pickle that asks for anything outside the list', async () => {
    const cut = await loadError(variant((d) => {
      const f = path.join(d, 'eva_vit_g.pth');
      fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 3000));
    }));
    expect(cut.code).toBe('ERR_CHECKPOINT');
    expect(cut.message).toMatch(/eva_vit_g\.pth: .*(truncated|not a zip)/);
    const text = await loadError(variant((d) => fs.writeFileSync(path.join(d, 'pretrained_minigpt4_llama2_7b.pth'), 'not a checkpoint')));
    expect(text.message).toMatch(/pretrained_minigpt4_llama2_7b\.pth: is not a torch\.save file/);
    const evil = await loadError(variant((d) => {
      const { PyRaw } = require('./fixtures/torch-save') as typeof import('./fixtures/torch-save');
      torchSave(path.join(d, 'pretrained_minigpt4_llama2_7b.pth'), ordered({ model: new PyRaw(Uint8Array.from([0x63, ...Buffer.from('os\nsystem\n'), 0x58, 2, 0, 0, 0, ...Buffer.from('id'), 0x85, 0x52])) }));
    }));
    expect(evil.message).toMatch(/pretrained_minigpt4_llama2_7b\.pth: data\.pkl asks for the global os\.system.*nothing was run/);
  });

  test('descriptor settings that are not MiniGPT-4 Llama-2\'s, or not settings at all', async () => {
    const vicuna = await loadError(variant(() => undefined, { descriptor: { model_type: 'pretrain_vicuna0' } }));
    expect(vicuna.message).toMatch(/field "model_type": "pretrain_vicuna0" is not supported/);
    const typo = await loadError(variant(() => undefined, { descriptor: { vit_chekpoint: 'x' } }));
    expect(typo.message).toMatch(/field "vit_chekpoint": is not a descriptor setting/);
    const proc = await loadError(variant(() => undefined, { descriptor: { vis_processor: { image_size: 224 } } }));
    expect(proc.message).toMatch(/field "vis_processor\.image_size": is 224, but the vision tower takes 56px images/);
    const tokens = await loadError(variant(() => undefined, { descriptor: { num_image_tokens: 32 } }));
    expect(tokens.message).toMatch(/field "num_image_tokens": is 32, but the vision tower gives 4/);
  });

  test('the image placeholder in a text-only prompt, and an image without a placeholder', async () => {
    await expect(model.forward([await model.encodePrompts(['<ImageHere> hi'], false).then((r) => r[0])])).rejects.toThrow(/holds the image token .* but no image is given/);
    const [ids] = await model.encodePrompts(['hi'], true);
    await expect(model.forward([ids], { images: [png] })).rejects.toThrow(/has no image token \(<ImageHere>\)/);
  });
});
