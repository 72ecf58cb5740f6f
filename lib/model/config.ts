import * as fs from 'fs';
import * as path from 'path';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { parseJson } from '../util/json';

export type ModelDtype = 'float32' | 'float16' | 'bfloat16';

export interface LlamaConfig {
  modelType: 'llama';
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  mlpBias: boolean;
  hiddenAct: 'silu';
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /** From `torch_dtype` (transformers < 4.56) or `dtype` (newer); null when the file has neither. */
  dtype: ModelDtype | null;
  /** The parsed JSON as read, so the config can be written back unchanged apart from what we edit. */
  raw: Record<string, unknown>;
}

const MODEL_DTYPES: readonly ModelDtype[] = ['float32', 'float16', 'bfloat16'];
const DTYPE_KEYS = ['torch_dtype', 'dtype'] as const;

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Field readers; HF configs write `null` for unset fields, so null counts as absent throughout. */
class Fields {
  constructor(private readonly obj: Record<string, unknown>, private readonly file: string, private readonly prefix = '') {}

  fail(field: string, reason: string): never {
    throw new NgateError('ERR_CONFIG', reason, { file: this.file, field: this.prefix + field });
  }

  has(field: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.obj, field) && this.obj[field] !== null && this.obj[field] !== undefined;
  }

  get(field: string): unknown {
    return this.has(field) ? this.obj[field] : undefined;
  }

  positiveInt(field: string, def?: number): number {
    if (!this.has(field)) {
      if (def !== undefined) return def;
      this.fail(field, 'is required and must be a positive integer');
    }
    const v = this.obj[field];
    if (!Number.isSafeInteger(v) || (v as number) <= 0) this.fail(field, `must be a positive integer, got ${show(v)}`);
    return v as number;
  }

  positiveNumber(field: string, def: number): number {
    if (!this.has(field)) return def;
    const v = this.obj[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(field, `must be a positive number, got ${show(v)}`);
    return v;
  }

  bool(field: string, def: boolean): boolean {
    if (!this.has(field)) return def;
    const v = this.obj[field];
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${show(v)}`);
    return v;
  }

  tokenId(field: string, v: unknown = this.get(field)): number {
    if (!Number.isSafeInteger(v) || (v as number) < 0) this.fail(field, `must be a non-negative integer token id, got ${show(v)}`);
    return v as number;
  }
}

/**
 * Validates a parsed LLaMA-family config.json and maps it to our field names.
 * `file` is only used to name the file in errors.
 */
export function parseLlamaConfig(json: unknown, file: string): LlamaConfig {
  if (!isObject(json)) {
    throw new NgateError('ERR_CONFIG', `must contain a JSON object, got ${show(json)}`, { file });
  }
  const f = new Fields(json, file);

  const modelType = f.get('model_type');
  if (modelType !== 'llama') {
    if (modelType === 'llava') f.fail('model_type', 'is "llava": read this file with parseModelConfig');
    f.fail('model_type', `unsupported model type ${show(modelType)}; supported: llama, llava`);
  }

  const hiddenSize = f.positiveInt('hidden_size');
  const intermediateSize = f.positiveInt('intermediate_size');
  const numLayers = f.positiveInt('num_hidden_layers');
  const numHeads = f.positiveInt('num_attention_heads');
  const vocabSize = f.positiveInt('vocab_size');

  const numKvHeads = f.positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    f.fail('num_key_value_heads', `must divide num_attention_heads (${numHeads}), got ${numKvHeads}`);
  }

  let headDim: number;
  if (f.has('head_dim')) {
    headDim = f.positiveInt('head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) {
      f.fail('num_attention_heads', `must divide hidden_size (${hiddenSize}) when head_dim is not given, got ${numHeads}`);
    }
    headDim = hiddenSize / numHeads;
  }
  // RoPE rotates pairs of dimensions, so an odd head size cannot work.
  if (headDim % 2 !== 0) f.fail(f.has('head_dim') ? 'head_dim' : 'num_attention_heads', `head dimension must be even for RoPE, got ${headDim}`);

  const rmsNormEps = f.positiveNumber('rms_norm_eps', 1e-6);
  const ropeTheta = readRope(f, json, file);
  const maxPositionEmbeddings = f.positiveInt('max_position_embeddings', 2048);
  const tieWordEmbeddings = f.bool('tie_word_embeddings', false);
  const attentionBias = f.bool('attention_bias', false);
  const mlpBias = f.bool('mlp_bias', false);

  const hiddenAct = f.get('hidden_act') ?? 'silu';
  if (hiddenAct !== 'silu') f.fail('hidden_act', `activation ${show(hiddenAct)} is not supported; supported: silu`);

  const bosTokenId = f.has('bos_token_id') ? f.tokenId('bos_token_id') : null;
  // Some older LLaMA configs use pad_token_id -1 to mean "no padding token".
  const padRaw = f.get('pad_token_id');
  const padTokenId = padRaw === undefined || padRaw === -1 ? null : f.tokenId('pad_token_id');
  const eosRaw = f.get('eos_token_id');
  let eosTokenIds: number[];
  if (eosRaw === undefined) eosTokenIds = [];
  else if (Array.isArray(eosRaw)) eosTokenIds = eosRaw.map((v) => f.tokenId('eos_token_id', v));
  else eosTokenIds = [f.tokenId('eos_token_id')];

  return {
    modelType: 'llama',
    hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim,
    rmsNormEps, ropeTheta, vocabSize, maxPositionEmbeddings,
    tieWordEmbeddings, attentionBias, mlpBias, hiddenAct: 'silu',
    bosTokenId, eosTokenIds, padTokenId,
    dtype: readDtype(f),
    raw: json,
  };
}

/** RoPE settings moved from top-level `rope_theta`/`rope_scaling` into `rope_parameters` in transformers 5. */
function readRope(f: Fields, json: Record<string, unknown>, file: string): number {
  if (f.has('rope_scaling')) {
    const rs = json.rope_scaling;
    const type = isObject(rs) ? rs.rope_type ?? rs.type : rs;
    f.fail('rope_scaling', `rope scaling type ${show(type)} is not supported (only plain RoPE is implemented)`);
  }
  let theta: number | undefined;
  if (f.has('rope_parameters')) {
    const rp = json.rope_parameters;
    if (!isObject(rp)) f.fail('rope_parameters', `must be an object, got ${show(rp)}`);
    const p = new Fields(rp, file, 'rope_parameters.');
    const type = p.get('rope_type') ?? 'default';
    if (type !== 'default') p.fail('rope_type', `rope scaling type ${show(type)} is not supported (only plain RoPE is implemented)`);
    if (p.has('rope_theta')) theta = p.positiveNumber('rope_theta', 0);
  }
  if (f.has('rope_theta')) {
    const top = f.positiveNumber('rope_theta', 0);
    if (theta !== undefined && theta !== top) {
      f.fail('rope_theta', `is ${top} but rope_parameters.rope_theta is ${theta}; the file must agree with itself`);
    }
    theta = top;
  }
  return theta ?? 10000;
}

/** transformers renamed `torch_dtype` to `dtype`; files may carry either, or both. */
function readDtype(f: Fields): ModelDtype | null {
  let found: ModelDtype | null = null;
  let foundKey = '';
  for (const key of DTYPE_KEYS) {
    if (!f.has(key)) continue;
    const v = f.get(key);
    if (!MODEL_DTYPES.includes(v as ModelDtype)) {
      f.fail(key, `unsupported dtype ${show(v)}; supported: ${MODEL_DTYPES.join(', ')}`);
    }
    if (found !== null && found !== v) f.fail(key, `is ${show(v)} but ${foundKey} is ${show(found)}; the file must agree with itself`);
    found = v as ModelDtype;
    foundKey = key;
  }
  return found;
}

/** Reads and validates `dir/config.json`. */
export function readLlamaConfig(dir: string): LlamaConfig {
  const file = path.join(dir, 'config.json');
  return parseLlamaConfig(readConfigJson(file), file);
}

function readConfigJson(file: string): unknown {
  let text: string;
  regularFile(file, 'ERR_CONFIG');
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NgateError('ERR_MISSING_FILE', 'file not found', { file, cause: e });
    throw new NgateError('ERR_CONFIG', `cannot read: ${(e as Error).message}`, { file, cause: e });
  }
  let json: unknown;
  try {
    // Strip a BOM: some editors on Windows add one and JSON.parse rejects it.
    json = parseJson(text.replace(/^\uFEFF/, ''));
  } catch (e) {
    throw new NgateError('ERR_CONFIG', `invalid JSON: ${(e as Error).message}`, { file, cause: e });
  }
  return json;
}

/**
 * Serializes the config as it was read, with the dtype updated. The dtype is
 * written under whichever key(s) the file used, so older and newer
 * transformers versions both read it back; `torch_dtype` when it had neither.
 */
export function serializeConfig(cfg: { raw: Record<string, unknown>; dtype: ModelDtype | null }, overrides: { dtype?: ModelDtype } = {}): string {
  const out: Record<string, unknown> = JSON.parse(JSON.stringify(cfg.raw));
  const dtype = overrides.dtype ?? cfg.dtype;
  if (dtype !== null) {
    if (!MODEL_DTYPES.includes(dtype)) {
      throw new NgateError('ERR_INPUT', `unsupported dtype ${show(dtype)}; supported: ${MODEL_DTYPES.join(', ')}`);
    }
    const keys = DTYPE_KEYS.filter((k) => Object.prototype.hasOwnProperty.call(out, k));
    for (const k of keys.length > 0 ? keys : ['torch_dtype']) out[k] = dtype;
    // LLaVA: sub-configs that state a dtype are kept in agreement with the top level.
    for (const sub of ['text_config', 'vision_config']) {
      const o = out[sub];
      if (isObject(o)) for (const k of DTYPE_KEYS) if (o[k] !== undefined && o[k] !== null) o[k] = dtype;
    }
  }
  return JSON.stringify(out, null, 2) + '\n';
}

// ---------------------------------------------------------------------------
// LLaVA (transformers' LlavaConfig): a LLaMA text_config, a CLIP vision_config
// and the settings that join them.

/** The CLIP vision tower of a LLaVA checkpoint (transformers' CLIPVisionConfig). */
export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
  layerNormEps: number;
  hiddenAct: string;
}

export interface LlavaConfig {
  modelType: 'llava';
  /** The decoder: text_config with transformers' LlamaConfig defaults filled in. */
  text: LlamaConfig;
  vision: ClipVisionConfig;
  imageTokenId: number;
  /** vision_feature_layer: hidden-state indices (negative from the end); several are concatenated. */
  featureLayers: number[];
  /** The int-or-list form the file used, so it is written back the same way. */
  featureLayerIsList: boolean;
  selectStrategy: 'default' | 'full';
  projectorAct: string;
  projectorBias: boolean;
  /** Image tokens per image: the vision tower's patches, plus the CLS token with the "full" strategy. */
  imageTokens: number;
  dtype: ModelDtype | null;
  raw: Record<string, unknown>;
}

export type ModelConfig = LlamaConfig | LlavaConfig;

// transformers' LlamaConfig() defaults (Llama-2-7B sizes): what a LLaVA text_config
// that omits a field means, as the llava-hf files do for most of them.
const LLAMA_DEFAULTS: Record<string, unknown> = {
  model_type: 'llama', hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
  vocab_size: 32000, max_position_embeddings: 2048, rms_norm_eps: 1e-6, bos_token_id: 1, eos_token_id: 2,
  tie_word_embeddings: false, hidden_act: 'silu',
};
// CLIPVisionConfig() defaults, for a vision_config dict that omits fields.
const CLIP_DEFAULTS: Record<string, unknown> = {
  hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, num_channels: 3,
  image_size: 224, patch_size: 32, layer_norm_eps: 1e-5, hidden_act: 'quick_gelu',
};
// What LlavaConfig builds when vision_config is absent altogether: the CLIP ViT-L/14-336 of LLaVA-1.5.
const LLAVA_VISION_DEFAULTS: Record<string, unknown> = {
  ...CLIP_DEFAULTS, hidden_size: 1024, intermediate_size: 4096, patch_size: 14, image_size: 336,
  num_hidden_layers: 24, num_attention_heads: 16,
};
const VISION_ACTS = ['quick_gelu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu', 'silu'];

function withDefaults(obj: Record<string, unknown>, defaults: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...obj };
  for (const [k, v] of Object.entries(defaults)) if (out[k] === undefined || out[k] === null) out[k] = v;
  return out;
}

export function parseLlavaConfig(json: Record<string, unknown>, file: string): LlavaConfig {
  const f = new Fields(json, file);
  const textRaw = f.get('text_config');
  if (textRaw !== undefined && !isObject(textRaw)) f.fail('text_config', `must be an object, got ${show(textRaw)}`);
  const textJson = withDefaults((textRaw as Record<string, unknown>) ?? {}, LLAMA_DEFAULTS);
  if (textJson.model_type !== 'llama') {
    f.fail('text_config.model_type', `unsupported language model ${show(textJson.model_type)}; supported: llama`);
  }
  let text: LlamaConfig;
  try {
    text = parseLlamaConfig(textJson, file);
  } catch (e) {
    // Name the field inside text_config.
    if (e instanceof NgateError && e.field) {
      const reason = e.message.slice(`${file}: field "${e.field}": `.length);
      throw new NgateError('ERR_CONFIG', reason, { file, field: `text_config.${e.field}` });
    }
    throw e;
  }
  // LlavaConfig: a tied text config ties the whole model; the top level may say so too.
  const tied = text.tieWordEmbeddings || f.bool('tie_word_embeddings', false);
  // The padding id lives at the top level in llava-hf files.
  const pad = text.padTokenId ?? (f.has('pad_token_id') && f.get('pad_token_id') !== -1 ? f.tokenId('pad_token_id') : null);
  text = { ...text, tieWordEmbeddings: tied, padTokenId: pad };

  const visionRaw = f.get('vision_config');
  if (visionRaw !== undefined && !isObject(visionRaw)) f.fail('vision_config', `must be an object, got ${show(visionRaw)}`);
  const vj = visionRaw === undefined ? LLAVA_VISION_DEFAULTS : withDefaults(visionRaw as Record<string, unknown>, CLIP_DEFAULTS);
  const vtype = vj.model_type ?? 'clip_vision_model';
  const vf = new Fields(vj, file, 'vision_config.');
  if (vtype !== 'clip_vision_model') vf.fail('model_type', `unsupported vision tower ${show(vtype)}; supported: clip_vision_model`);
  const vision: ClipVisionConfig = {
    hiddenSize: vf.positiveInt('hidden_size'),
    intermediateSize: vf.positiveInt('intermediate_size'),
    numLayers: vf.positiveInt('num_hidden_layers'),
    numHeads: vf.positiveInt('num_attention_heads'),
    numChannels: vf.positiveInt('num_channels'),
    imageSize: vf.positiveInt('image_size'),
    patchSize: vf.positiveInt('patch_size'),
    layerNormEps: vf.positiveNumber('layer_norm_eps', 1e-5),
    hiddenAct: String(vj.hidden_act),
  };
  if (vision.hiddenSize % vision.numHeads !== 0) vf.fail('num_attention_heads', `must divide hidden_size (${vision.hiddenSize}), got ${vision.numHeads}`);
  if (vision.imageSize % vision.patchSize !== 0) vf.fail('patch_size', `must divide image_size (${vision.imageSize}), got ${vision.patchSize}`);
  if (!VISION_ACTS.includes(vision.hiddenAct)) vf.fail('hidden_act', `activation ${show(vj.hidden_act)} is not supported; supported: ${VISION_ACTS.join(', ')}`);

  // Newer files write image_token_id; LlavaConfig maps it onto image_token_index.
  const tokenKey = f.has('image_token_index') ? 'image_token_index' : 'image_token_id';
  const imageTokenId = f.has(tokenKey) ? f.tokenId(tokenKey) : 32000;

  const layerRaw = f.get('vision_feature_layer') ?? -2;
  const featureLayerIsList = Array.isArray(layerRaw);
  const featureLayers = (featureLayerIsList ? layerRaw as unknown[] : [layerRaw]).map((l) => {
    if (!Number.isSafeInteger(l) || (l as number) < -(vision.numLayers + 1) || (l as number) > vision.numLayers) {
      f.fail('vision_feature_layer', `must be an index into the vision tower's ${vision.numLayers + 1} hidden states (or a list of them), got ${show(layerRaw)}`);
    }
    return l as number;
  });
  if (featureLayers.length === 0) f.fail('vision_feature_layer', 'must name at least one layer');
  const strategy = f.get('vision_feature_select_strategy') ?? 'default';
  if (strategy !== 'default' && strategy !== 'full') {
    f.fail('vision_feature_select_strategy', `must be "default" or "full", got ${show(strategy)}`);
  }
  const projectorAct = (f.get('projector_hidden_act') ?? 'gelu') as string;
  if (!VISION_ACTS.includes(projectorAct)) f.fail('projector_hidden_act', `activation ${show(projectorAct)} is not supported; supported: ${VISION_ACTS.join(', ')}`);
  const patches = (vision.imageSize / vision.patchSize) ** 2;
  return {
    modelType: 'llava', text, vision, imageTokenId, featureLayers, featureLayerIsList,
    selectStrategy: strategy as 'default' | 'full', projectorAct,
    projectorBias: f.bool('multimodal_projector_bias', true),
    imageTokens: patches + (strategy === 'full' ? 1 : 0),
    dtype: readDtype(f) ?? text.dtype,
    raw: json,
  };
}

/** Validates a parsed config.json of any supported model type. */
export function parseModelConfig(json: unknown, file: string): ModelConfig {
  if (isObject(json) && json.model_type === 'llava') return parseLlavaConfig(json, file);
  return parseLlamaConfig(json, file);
}

/** Reads and validates `dir/config.json` of any supported model type. */
export function readModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  return parseModelConfig(readConfigJson(file), file);
}
