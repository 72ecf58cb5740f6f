// MiniGPT-4 (Llama-2 variant) as its users have it: a Llama-2-chat folder,
// `eva_vit_g.pth` and `pretrained_minigpt4_llama2_7b.pth`, named by a
// descriptor (`minigpt4.json`) or by the original's eval YAML. Every setting
// the original hard-codes (the ViT's sizes, the chat prompt, the image
// processor) defaults to MiniGPT4-llama2-7b's and can be overridden. This file
// also renders the model's prompts, so that every caller uses the ones
// MiniGPT-4 itself uses: the chat prompt of `Chat` (CONV_VISION_LLama2) and the
// training sequence of `MiniGPTBase.forward`.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import type { Tokenizer } from './tokenizer';
import { parseJson } from '../util/json';

export const MINIGPT4_DESCRIPTOR = 'minigpt4.json';

export interface MiniGpt4VisionConfig {
  imageSize: number;
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  /** int(embedDim · mlpRatio), as the original's Block computes it. */
  mlpHidden: number;
  normEps: number;
  lnVisionEps: number;
  /** Consecutive patch tokens concatenated into one image embedding. */
  tokensPerEmbedding: number;
}

export interface MiniGpt4Conversation {
  system: string;
  roles: [string, string];
  sep: string;
  /** The user message `upload_img` appends; holds the image placeholder once. */
  imageMessage: string;
}

export interface MiniGpt4Config {
  modelType: 'minigpt4';
  /** The descriptor or YAML it was read from. */
  file: string;
  llamaDir: string;
  ckpt: string;
  vitCheckpoint: string;
  vision: MiniGpt4VisionConfig;
  /** Image embeddings per image: patches / tokensPerEmbedding (64). */
  numImageTokens: number;
  imagePlaceholder: string;
  visProcessor: { imageSize: number; mean: [number, number, number]; std: [number, number, number] };
  conversation: MiniGpt4Conversation;
  /** The training instruction wrapper, "{}" marks the instruction. */
  promptTemplate: string;
  /** Appended to a target answer in the training sequence ("</s>"). */
  endSym: string;
}

// MiniGPT4-llama2-7b: create_eva_vit_g, BaseModel's ln_vision, encode_img,
// CONV_VISION_LLama2, Blip2ImageEvalProcessor and minigpt4_llama2_eval.yaml.
const DEFAULTS = {
  image_size: 224,
  vision_tower: { patch_size: 14, embed_dim: 1408, depth: 39, num_heads: 16, mlp_ratio: 4.3637, norm_eps: 1e-6, ln_vision_eps: 1e-5, tokens_per_embedding: 4 },
  image_placeholder: '<ImageHere>',
  mean: [0.48145466, 0.4578275, 0.40821073] as [number, number, number],
  std: [0.26862954, 0.26130258, 0.27577711] as [number, number, number],
  conversation: {
    system: 'Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. Please answer my questions.',
    roles: ['<s>[INST] ', ' [/INST] '] as [string, string],
    sep: '',
    image_message: '<Img><ImageHere></Img>',
  },
  prompt_template: '[INST] {} [/INST] ',
  end_sym: '</s>',
};

const DESCRIPTOR_KEYS = new Set(['arch', 'model_type', 'llama_model', 'ckpt', 'vit_checkpoint', 'image_size', 'vision_tower',
  'num_image_tokens', 'image_placeholder', 'vis_processor', 'conversation', 'prompt_template', 'end_sym']);

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + '...' : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Reader {
  constructor(private readonly obj: Record<string, unknown>, readonly file: string, private readonly prefix = '') {}
  fail(field: string, reason: string): never {
    throw new NgateError('ERR_CONFIG', reason, { file: this.file, field: this.prefix + field });
  }
  has(k: string): boolean { return this.obj[k] !== undefined && this.obj[k] !== null; }
  int(k: string, def: number): number {
    if (!this.has(k)) return def;
    const v = this.obj[k];
    if (!Number.isSafeInteger(v) || (v as number) <= 0) this.fail(k, `must be a positive integer, got ${show(v)}`);
    return v as number;
  }
  num(k: string, def: number): number {
    if (!this.has(k)) return def;
    const v = this.obj[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(k, `must be a positive number, got ${show(v)}`);
    return v;
  }
  str(k: string, def: string, nonEmpty = false): string {
    if (!this.has(k)) return def;
    const v = this.obj[k];
    if (typeof v !== 'string' || (nonEmpty && v === '')) this.fail(k, `must be a${nonEmpty ? ' non-empty' : ''} string, got ${show(v)}`);
    return v;
  }
  triple(k: string, def: [number, number, number], positive = false): [number, number, number] {
    if (!this.has(k)) return def;
    const v = this.obj[k];
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x) || (positive && x <= 0))) {
      this.fail(k, `must be three${positive ? ' positive' : ''} numbers, got ${show(v)}`);
    }
    return v as [number, number, number];
  }
  sub(k: string): Reader {
    if (!this.has(k)) return new Reader({}, this.file, `${this.prefix}${k}.`);
    const v = this.obj[k];
    if (!isObject(v)) this.fail(k, `must be an object, got ${show(v)}`);
    return new Reader(v, this.file, `${this.prefix}${k}.`);
  }
  keys(): string[] { return Object.keys(this.obj); }
}

/** A path of the descriptor, relative to `base`; the file must exist. */
function resolveFile(r: Reader, key: string, value: unknown, bases: string[], kind: 'file' | 'folder'): string {
  if (typeof value !== 'string' || value === '') r.fail(key, `must name the ${kind === 'folder' ? 'Llama folder' : 'file'} (a path), got ${show(value)}`);
  const tried = path.isAbsolute(value) ? [value] : bases.map((b) => path.resolve(b, value));
  for (const p of tried) {
    if (!fs.existsSync(p)) continue;
    const isDir = fs.statSync(p).isDirectory();
    if (kind === 'folder' ? isDir : !isDir) return p;
  }
  throw new NgateError('ERR_MISSING_FILE', `names ${kind === 'folder' ? 'a folder' : 'a file'} that does not exist: ${tried.join(', or ')}`,
    { file: r.file, field: key });
}

/** Validates a descriptor's settings (the JSON form, or the YAML merged into it). */
function parseSettings(json: Record<string, unknown>, file: string, bases: string[], opts: { vitFallback?: string[] } = {}): MiniGpt4Config {
  const r = new Reader(json, file);
  const arch = r.str('arch', 'minigpt4');
  if (arch !== 'minigpt4') r.fail('arch', `must be "minigpt4", got ${show(arch)}`);
  const modelType = r.str('model_type', 'pretrain_llama2');
  if (modelType !== 'pretrain_llama2') {
    r.fail('model_type', `${show(modelType)} is not supported: only the Llama-2 variant ("pretrain_llama2", no Q-Former) is`);
  }
  if (json.has_qformer === true) r.fail('has_qformer', 'is true: the Q-Former (Vicuna) variant is not supported, only the Llama-2 one');
  const llamaDir = resolveFile(r, 'llama_model', json.llama_model, bases, 'folder');
  const ckpt = resolveFile(r, 'ckpt', json.ckpt, bases, 'file');
  let vitCheckpoint: string;
  if (json.vit_checkpoint !== undefined && json.vit_checkpoint !== null) {
    vitCheckpoint = resolveFile(r, 'vit_checkpoint', json.vit_checkpoint, bases, 'file');
  } else {
    // The original downloads eva_vit_g.pth into torch's hub cache; look where it would be.
    const candidates = opts.vitFallback ?? [];
    const found = candidates.find((p) => fs.existsSync(p) && fs.statSync(p).isFile());
    if (!found) {
      r.fail('vit_checkpoint', `is not given${candidates.length ? `, and eva_vit_g.pth is not in ${candidates.join(', nor ')}` : ''}: name the EVA ViT-g file (eva_vit_g.pth)`);
    }
    vitCheckpoint = found!;
  }
  const imageSize = r.int('image_size', DEFAULTS.image_size);
  const vt = r.sub('vision_tower');
  const vd = DEFAULTS.vision_tower;
  const embedDim = vt.int('embed_dim', vd.embed_dim);
  const mlpRatio = vt.num('mlp_ratio', vd.mlp_ratio);
  const vision: MiniGpt4VisionConfig = {
    imageSize: vt.int('image_size', imageSize),
    patchSize: vt.int('patch_size', vd.patch_size),
    embedDim,
    depth: vt.int('depth', vd.depth),
    numHeads: vt.int('num_heads', embedDim === vd.embed_dim ? vd.num_heads : Math.floor(embedDim / 88) || 1),
    mlpRatio,
    mlpHidden: Math.trunc(embedDim * mlpRatio),
    normEps: vt.num('norm_eps', vd.norm_eps),
    lnVisionEps: vt.num('ln_vision_eps', vd.ln_vision_eps),
    tokensPerEmbedding: vt.int('tokens_per_embedding', vd.tokens_per_embedding),
  };
  for (const k of vt.keys()) {
    if (!['image_size', 'patch_size', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'norm_eps', 'ln_vision_eps', 'tokens_per_embedding'].includes(k)) {
      vt.fail(k, 'is not a setting of the vision tower (image_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, norm_eps, ln_vision_eps, tokens_per_embedding)');
    }
  }
  if (vision.imageSize % vision.patchSize !== 0) vt.fail('patch_size', `must divide image_size (${vision.imageSize}), got ${vision.patchSize}`);
  if (vision.embedDim % vision.numHeads !== 0) vt.fail('num_heads', `must divide embed_dim (${vision.embedDim}), got ${vision.numHeads}`);
  if (vision.mlpHidden < 1) vt.fail('mlp_ratio', `gives an MLP of ${vision.mlpHidden} units`);
  const patches = (vision.imageSize / vision.patchSize) ** 2;
  if (patches % vision.tokensPerEmbedding !== 0) {
    vt.fail('tokens_per_embedding', `the ${patches} patches of a ${vision.imageSize}px image in ${vision.patchSize}px patches cannot be grouped by ${vision.tokensPerEmbedding}: the patch count must be divisible by it`);
  }
  const numImageTokens = patches / vision.tokensPerEmbedding;
  if (r.has('num_image_tokens') && r.int('num_image_tokens', 0) !== numImageTokens) {
    r.fail('num_image_tokens', `is ${show(json.num_image_tokens)}, but the vision tower gives ${numImageTokens} embeddings per image`);
  }
  const vp = r.sub('vis_processor');
  const visProcessor = { imageSize: vp.int('image_size', vision.imageSize), mean: vp.triple('mean', DEFAULTS.mean), std: vp.triple('std', DEFAULTS.std, true) };
  if (visProcessor.imageSize !== vision.imageSize) {
    vp.fail('image_size', `is ${visProcessor.imageSize}, but the vision tower takes ${vision.imageSize}px images`);
  }
  const imagePlaceholder = r.str('image_placeholder', DEFAULTS.image_placeholder, true);
  const cv = r.sub('conversation');
  const cd = DEFAULTS.conversation;
  let roles = cd.roles;
  if (cv.has('roles')) {
    const v = (json.conversation as Record<string, unknown>).roles;
    if (!Array.isArray(v) || v.length !== 2 || v.some((x) => typeof x !== 'string')) cv.fail('roles', `must be two strings, got ${show(v)}`);
    roles = v as [string, string];
  }
  const conversation: MiniGpt4Conversation = {
    system: cv.str('system', cd.system), roles, sep: cv.str('sep', cd.sep), imageMessage: cv.str('image_message', cd.image_message, true),
  };
  if (conversation.imageMessage.split(imagePlaceholder).length !== 2) {
    cv.fail('image_message', `must hold the image placeholder ${show(imagePlaceholder)} exactly once`);
  }
  const promptTemplate = r.str('prompt_template', DEFAULTS.prompt_template);
  if (promptTemplate.split('{}').length !== 2) r.fail('prompt_template', `must hold "{}" exactly once, got ${show(promptTemplate)}`);
  return {
    modelType: 'minigpt4', file, llamaDir, ckpt, vitCheckpoint, vision, numImageTokens, imagePlaceholder, visProcessor,
    conversation, promptTemplate, endSym: r.str('end_sym', DEFAULTS.end_sym),
  };
}

function readText(file: string): string {
  regularFile(file, 'ERR_CONFIG');
  try {
    return fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NgateError('ERR_MISSING_FILE', 'file not found', { file, cause: e });
    throw new NgateError('ERR_CONFIG', `cannot read: ${(e as Error).message}`, { file, cause: e });
  }
}

/** Reads a `minigpt4.json` descriptor; paths in it are relative to its folder. */
export function readMiniGpt4Descriptor(file: string): MiniGpt4Config {
  let json: unknown;
  try {
    json = parseJson(readText(file));
  } catch (e) {
    if (e instanceof NgateError) throw e;
    throw new NgateError('ERR_CONFIG', `invalid JSON: ${(e as Error).message}`, { file, cause: e });
  }
  if (!isObject(json)) throw new NgateError('ERR_CONFIG', `must contain a JSON object, got ${show(json)}`, { file });
  for (const k of Object.keys(json)) {
    if (!DESCRIPTOR_KEYS.has(k)) throw new NgateError('ERR_CONFIG', `is not a descriptor setting (${[...DESCRIPTOR_KEYS].join(', ')})`, { file, field: k });
  }
  return parseSettings(json, file, [path.dirname(path.resolve(file))]);
}

function loadYaml(file: string): Record<string, unknown> {
  // js-yaml's safe schema: plain data only, no tags that construct objects.
  const yaml = require('js-yaml') as { safeLoad(text: string, opts?: { filename?: string }): unknown };
  let doc: unknown;
  try {
    doc = yaml.safeLoad(readText(file), { filename: file });
  } catch (e) {
    if (e instanceof NgateError) throw e;
    // js-yaml descends recursively: a deeply nested document overflows the stack inside it.
    if (e instanceof RangeError) throw new NgateError('ERR_CONFIG', 'invalid YAML: nests deeper than a configuration can (the parser ran out of stack)', { file, cause: e });
    throw new NgateError('ERR_CONFIG', `invalid YAML: ${(e as Error).message.split('\n')[0]}`, { file, cause: e });
  }
  if (!isObject(doc)) throw new NgateError('ERR_CONFIG', 'must contain a YAML mapping', { file });
  return doc;
}

/**
 * Reads the original's eval config (`eval_configs/minigpt4_llama2_eval.yaml`)
 * with the model defaults it merges: the repository's
 * `minigpt4/configs/models/minigpt4_llama2.yaml` when the file sits in a
 * checkout, else the same values built in. `vit_checkpoint` (our key) may name
 * the ViT file; without it, eva_vit_g.pth is looked for where the original
 * downloads it (torch's hub cache) and beside the YAML. Relative paths are
 * tried against the YAML's folder, then its parent (the repository root).
 */
export function readMiniGpt4Yaml(file: string): MiniGpt4Config {
  const doc = loadYaml(file);
  const model = doc.model;
  if (!isObject(model)) throw new NgateError('ERR_CONFIG', 'has no "model" section', { file, field: 'model' });
  const dir = path.dirname(path.resolve(file));
  const defaultsFile = path.resolve(dir, '..', 'minigpt4', 'configs', 'models', 'minigpt4_llama2.yaml');
  let merged: Record<string, unknown> = { ...model };
  if (fs.existsSync(defaultsFile)) {
    const d = loadYaml(defaultsFile).model;
    if (isObject(d)) merged = { ...d, ...model };
  }
  const settings: Record<string, unknown> = {};
  // The original's keys that matter, and any of the descriptor's (vit_checkpoint, vision_tower, ...) a user added.
  for (const k of [...DESCRIPTOR_KEYS, 'has_qformer']) {
    if (merged[k] !== undefined) settings[k] = merged[k];
  }
  // The image processor of the eval datasets section, when it names a size.
  const datasets = doc.datasets;
  if (isObject(datasets)) {
    for (const ds of Object.values(datasets)) {
      const vp = isObject(ds) && isObject(ds.vis_processor) ? ds.vis_processor : null;
      const proc = vp && (isObject(vp.eval) ? vp.eval : isObject(vp.train) ? vp.train : null);
      if (proc && proc.image_size !== undefined && settings.vis_processor === undefined) { settings.vis_processor = { image_size: proc.image_size }; break; }
    }
  }
  const hub = process.env.TORCH_HOME ? path.join(process.env.TORCH_HOME, 'hub') : path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'torch', 'hub');
  return parseSettings(settings, file, [dir, path.dirname(dir)],
    { vitFallback: [path.join(hub, 'checkpoints', 'eva_vit_g.pth'), path.join(dir, 'eva_vit_g.pth')] });
}

/** The MiniGPT-4 descriptor `p` names (a folder holding minigpt4.json, the file, or a YAML), or null when `p` is none. */
export function findMiniGpt4Config(p: string): MiniGpt4Config | null {
  if (!fs.existsSync(p)) return null;
  if (fs.statSync(p).isDirectory()) {
    const f = path.join(p, MINIGPT4_DESCRIPTOR);
    return fs.existsSync(f) ? readMiniGpt4Descriptor(f) : null;
  }
  if (/\.ya?ml$/i.test(p)) return readMiniGpt4Yaml(p);
  if (/\.json$/i.test(p)) return readMiniGpt4Descriptor(p);
  return null;
}

/** The descriptor of a saved model: every setting written out, paths relative to `dir`. */
export function serializeMiniGpt4Descriptor(c: MiniGpt4Config, paths: { llamaModel: string; ckpt: string; vitCheckpoint: string }): string {
  const v = c.vision;
  return JSON.stringify({
    arch: 'minigpt4', model_type: 'pretrain_llama2', llama_model: paths.llamaModel, ckpt: paths.ckpt, vit_checkpoint: paths.vitCheckpoint,
    image_size: v.imageSize,
    vision_tower: { image_size: v.imageSize, patch_size: v.patchSize, embed_dim: v.embedDim, depth: v.depth, num_heads: v.numHeads,
      mlp_ratio: v.mlpRatio, norm_eps: v.normEps, ln_vision_eps: v.lnVisionEps, tokens_per_embedding: v.tokensPerEmbedding },
    num_image_tokens: c.numImageTokens, image_placeholder: c.imagePlaceholder,
    vis_processor: { image_size: c.visProcessor.imageSize, mean: c.visProcessor.mean, std: c.visProcessor.std },
    conversation: { system: c.conversation.system, roles: c.conversation.roles, sep: c.conversation.sep, image_message: c.conversation.imageMessage },
    prompt_template: c.promptTemplate, end_sym: c.endSym,
  }, null, 2) + '\n';
}

// ---------------------------------------------------------------------------
// Prompts.

/**
 * The chat prompt `Chat` builds for one question (upload_img, ask,
 * answer_prepare, Conversation.get_prompt): system + sep + user role + message
 * + sep + assistant role, where the message is the image message and the
 * question joined by a space. Returns where the question starts in it.
 */
export function miniGpt4ChatPrompt(c: MiniGpt4Config, question: string, withImage: boolean): { prompt: string; queryStart: number } {
  const { system, roles, sep, imageMessage } = c.conversation;
  const head = system + sep + roles[0] + (withImage ? imageMessage + ' ' : '');
  return { prompt: head + question + sep + roles[1], queryStart: head.length };
}

/** The instruction of MiniGPTBase.forward: prompt_template around the image message and the question. */
export function miniGpt4TrainingPrompt(c: MiniGpt4Config, question: string, withImage: boolean): { prompt: string; queryStart: number } {
  const [before, after] = c.promptTemplate.split('{}');
  const head = before + (withImage ? c.conversation.imageMessage + ' ' : '');
  return { prompt: head + question + after, queryStart: head.length };
}

/**
 * Token ids of a prompt as the original feeds it: split at the image
 * placeholder, each piece tokenized alone (so each starts a fresh
 * sentencepiece word), the image's run of `imageTokens` ids in between.
 * `bos: 'first-segment'` is get_context_emb's (the first piece with the
 * tokenizer's special tokens, so BOS, the others without); `bos: 'prepend'` is
 * MiniGPTBase.forward's (no piece with special tokens, one BOS in front).
 * Offsets are character ranges in `prompt`; image positions have empty ones.
 */
export async function encodeMiniGpt4Prompt(tokenizer: Tokenizer, c: MiniGpt4Config, prompt: string,
  opts: { bos: 'first-segment' | 'prepend'; imageTokenId: number; bosId: number | null }): Promise<{ ids: number[]; offsets: [number, number][]; images: number }> {
  const segments = prompt.split(c.imagePlaceholder);
  const ids: number[] = [];
  const offsets: [number, number][] = [];
  if (opts.bos === 'prepend') {
    if (opts.bosId === null) throw new NgateError('ERR_TOKENIZER', 'the tokenizer has no BOS token, which MiniGPT-4\'s training sequence starts with');
    ids.push(opts.bosId);
    offsets.push([0, 0]);
  }
  let at = 0;
  for (const [i, seg] of segments.entries()) {
    if (i > 0) {
      for (let k = 0; k < c.numImageTokens; k++) { ids.push(opts.imageTokenId); offsets.push([at, at]); }
      at += c.imagePlaceholder.length;
    }
    if (seg.length > 0 || (i === 0 && opts.bos === 'first-segment')) {
      const enc = await tokenizer.encode(seg, { addSpecialTokens: i === 0 && opts.bos === 'first-segment' });
      ids.push(...enc.ids);
      for (const [s, e] of enc.offsets) offsets.push([at + s, at + e]);
    }
    at += seg.length;
  }
  return { ids, offsets, images: segments.length - 1 };
}
