// loadModel and the Model object: a Hugging Face LLaMA-family checkpoint held
// by the native addon, with its tokenizer and chat template.
import { AsyncLocalStorage } from 'async_hooks';
import * as fs from 'fs';
import * as path from 'path';
import type { NativeCancelToken, NativeImages, NativeInfo, NativeModel, NativeTensorSource } from '../../types/native';
import { LlamaConfig, LlavaConfig, ModelDtype, readModelConfig, serializeConfig } from './config';
import { ImageInput, ImagePreprocessing, preprocessImage, readPreprocessorConfig } from './image';
import { abortError, isNgateError, NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { journalFor, recoverSwap, removeStaleTemps, swapInto, tempFolderFor } from './folder-swap';
import { checkLimit, limits } from '../util/limits';
import { ensureAddon, loadAddon, loadedAddon, setThreads } from './native';
import { encodeSafetensorsHeader, readSafetensorsHeader, SafetensorsDtype, TensorEntry } from './safetensors';
import { readTorchCheckpoint, stateDict } from './torch-checkpoint';
import {
  encodeMiniGpt4Prompt, findMiniGpt4Config, MiniGpt4Config, miniGpt4ChatPrompt, miniGpt4TrainingPrompt, MINIGPT4_DESCRIPTOR,
  serializeMiniGpt4Descriptor,
} from './minigpt4';
import { Tokenizer } from './tokenizer';
import { parseJson } from '../util/json';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

export interface Progress { stage: string; done: number; total: number; }
export type ProgressCallback = (p: Progress) => void;

export interface LoadOptions {
  /**
   * `cpu` (default), `cuda`, `cuda:N`, or `auto`: CUDA when the addon's
   * libtorch has it and a GPU is visible, else the CPU. `model.device` says
   * which one was taken.
   */
  device?: Device | 'auto' | string;
  /** Compute dtype; default float32 on the CPU, bfloat16 on CUDA. */
  dtype?: ModelDtype;
  /** libtorch's intra-op threads (as setThreads(): for the whole process, every model). Default: libtorch's (the cores, or OMP_NUM_THREADS). */
  threads?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface ForwardOptions {
  /** Return only the logits of each sequence's last token: shape [B, 1, V]. */
  lastOnly?: boolean;
  /**
   * LLaVA: one image per sequence (path or bytes of a JPEG/PNG, or null for
   * none). A sequence with an image holds the image token once (it is
   * expanded to the image's token count) or already expanded.
   */
  images?: (ImageInput | null)[];
  signal?: AbortSignal;
}

export interface ForwardResult {
  logits: Float32Array;
  shape: [number, number, number];
  /** The ids as fed to the model (image tokens expanded), when images were given. */
  ids?: number[][];
}

export interface GenerateOptions {
  /** Upper bound on new tokens per prompt (default 64). */
  maxNewTokens?: number;
  /** Wrap string prompts as one user turn of the model's chat template (default false). */
  chat?: boolean;
  /** Also return the logits of every decoding step (for checks; memory grows with steps × vocabulary). */
  returnLogits?: boolean;
  /** LLaVA: one image (or null) per prompt; a prompt with an image holds `<image>` once. */
  images?: (ImageInput | null)[];
  /**
   * Sampling temperature; 0 (the default) decodes greedily, exactly as when no
   * sampling option is given. With a temperature, topK and topP restrict the
   * draw (transformers' order: temperature, top-k, top-p).
   */
  temperature?: number;
  /** Draw only among the k most likely tokens (0 or absent: all). */
  topK?: number;
  /** Draw only among the most likely tokens whose probabilities add up to p (1 or absent: all). */
  topP?: number;
  /** transformers' repetition penalty (> 1 discourages tokens already in the prompt or answer; 1 or absent: off). Also applies to greedy decoding. */
  repetitionPenalty?: number;
  /** Seed of the draws, so that a sampled generation can be repeated (default 0). */
  seed?: number;
  /** An answer ends where one of these appears; the stop string is not part of `text`. */
  stop?: string[];
  /** Each new piece of an answer's text as soon as it is decoded (held back while it may be the start of a stop string). */
  onToken?: (token: GeneratedToken) => void;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

/** A piece of one answer, streamed by onToken or stream(). */
export interface GeneratedToken {
  /** Which prompt it answers. */
  index: number;
  /** The new text (may be empty while a multi-byte character or a possible stop string is incomplete). */
  text: string;
  /** The token ids decoded since the last piece of this answer. */
  ids: number[];
}

export interface Generation {
  /** The prompt's token ids as fed to the model. */
  promptIds: number[];
  /** New token ids, without the EOS that stopped decoding (up to the token that completed a stop string). */
  ids: number[];
  text: string;
  finishReason: 'eos' | 'length' | 'stop';
  /** [ids.length (+1 if stopped at EOS), V] step logits, when returnLogits. */
  logits?: Float32Array;
}

export interface SaveOptions {
  /** Write every tensor in this dtype; default: each tensor in the dtype its source file had. */
  dtype?: ModelDtype;
  /** Replace an existing, non-empty target folder (never the folder the model was loaded from). */
  overwrite?: boolean;
  /** Largest shard in bytes before the weights are split (default 5e9, as transformers). */
  maxShardBytes?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

const WEIGHT_INDEX = 'model.safetensors.index.json';
const SINGLE_WEIGHTS = 'model.safetensors';
const BIN_INDEX = 'pytorch_model.bin.index.json';
const SINGLE_BIN = 'pytorch_model.bin';
// Files besides the weights and config that make a checkpoint usable as it was.
const COMPANION_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model',
  'generation_config.json', 'chat_template.json', 'chat_template.jinja', 'added_tokens.json',
  'preprocessor_config.json', 'processor_config.json'];

const TO_SAFETENSORS: Record<ModelDtype, SafetensorsDtype> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

function checkDevice(device: string): void {
  if (device === 'cpu' || device === 'cuda' || device === 'auto' || /^cuda:\d+$/.test(device)) return;
  throw new NgateError('ERR_DEVICE', `unknown device "${device}" (expected cpu, cuda, cuda:N or auto)`, { field: 'device' });
}

/**
 * The device a load runs on: `auto` resolved, and `cuda` checked against what
 * the addon's libtorch can do, with the way out when it cannot.
 */
function resolveDevice(device: string, info: NativeInfo): string {
  if (device === 'auto') return info.cuda && info.cudaDevices > 0 ? 'cuda' : 'cpu';
  if (!device.startsWith('cuda')) return device;
  const built = loadedAddon()?.info?.libtorch;
  const where = built ? ` at ${built.configDir}` : '';
  // info.cuda is false both for a CPU-only libtorch and for a CUDA one that sees no GPU; the build says which.
  const cpuOnly = built ? !built.cuda : !info.cuda;
  if (cpuOnly) {
    throw new NgateError('ERR_DEVICE',
      `device ${device} was asked for, but the addon is built against libtorch ${info.torchVersion}${where}, a CPU-only build. ` +
      'For CUDA, install a CUDA libtorch (a CUDA `pip install torch`, or the CUDA libtorch zip with LIBTORCH=/path/to/libtorch); ' +
      'then `npx ngate build` builds an addon for it, and a CUDA libtorch is picked over a CPU one from then on.', { field: 'device' });
  }
  if (!info.cuda || info.cudaDevices === 0) {
    throw new NgateError('ERR_DEVICE',
      `device ${device} was asked for, but libtorch ${info.torchVersion}${where} (built for CUDA${built?.cuda && built.cuda !== 'unknown' ? ` ${built.cuda}` : ''}) ` +
      'sees no CUDA GPU: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES', { field: 'device' });
  }
  const index = device === 'cuda' ? 0 : Number(device.slice(5));
  if (index >= info.cudaDevices) {
    throw new NgateError('ERR_DEVICE', `device ${device} does not exist: ${info.cudaDevices} CUDA device(s) visible`, { field: 'device' });
  }
  return device;
}

// Every tensor of the checkpoint: model.safetensors or the shards an index
// names, else the torch.save files older saves have (pytorch_model.bin or its
// shards), read without executing their pickles.
function listCheckpointTensors(dir: string): Map<string, { file: string; entry: TensorEntry }> {
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  if (has(WEIGHT_INDEX)) return listIndexed(dir, WEIGHT_INDEX, safetensorsEntries);
  if (has(SINGLE_WEIGHTS)) return listSingle(path.join(dir, SINGLE_WEIGHTS), safetensorsEntries);
  if (has(BIN_INDEX)) return listIndexed(dir, BIN_INDEX, torchEntries);
  if (has(SINGLE_BIN)) return listSingle(path.join(dir, SINGLE_BIN), torchEntries);
  throw new NgateError('ERR_MISSING_FILE', `no weights: none of ${SINGLE_WEIGHTS}, ${WEIGHT_INDEX}, ${SINGLE_BIN}, ${BIN_INDEX} exists in this folder`, { file: dir });
}

/** The file that names the weights of `dir`, for messages. */
function weightsFileOf(dir: string): string {
  for (const f of [WEIGHT_INDEX, SINGLE_WEIGHTS, BIN_INDEX, SINGLE_BIN]) if (fs.existsSync(path.join(dir, f))) return path.join(dir, f);
  return dir;
}

function safetensorsEntries(file: string): Map<string, TensorEntry> {
  return readSafetensorsHeader(file).tensors;
}

/** The tensors of a torch.save state dict as byte ranges of the file. */
export function torchEntries(file: string, keyPath: string[] = []): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of stateDict(readTorchCheckpoint(file), keyPath)) {
    if (!t.contiguous) {
      // Only a dense row-major tensor is one range of the file that the addon can map.
      throw new NgateError('ERR_CHECKPOINT', `tensor ${name} is stored as a strided view of another tensor; resave the file with contiguous tensors`, { file });
    }
    out.set(name, { name, dtype: t.dtype, shape: t.shape, begin: t.begin, end: t.end });
  }
  return out;
}

function listSingle(file: string, read: (file: string) => Map<string, TensorEntry>): Map<string, { file: string; entry: TensorEntry }> {
  const out = new Map<string, { file: string; entry: TensorEntry }>();
  for (const [name, entry] of read(file)) out.set(name, { file, entry });
  return out;
}

function listIndexed(dir: string, indexName: string, read: (file: string) => Map<string, TensorEntry>): Map<string, { file: string; entry: TensorEntry }> {
  const out = new Map<string, { file: string; entry: TensorEntry }>();
  const indexFile = path.join(dir, indexName);
  let index: unknown;
  regularFile(indexFile, 'ERR_CHECKPOINT');
  try {
    index = parseJson(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    throw new NgateError('ERR_CHECKPOINT', `not valid JSON: ${(e as Error).message}`, { file: indexFile });
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (!map || typeof map !== 'object' || Array.isArray(map)) {
    throw new NgateError('ERR_CHECKPOINT', 'has no "weight_map" object', { file: indexFile, field: 'weight_map' });
  }
  const named = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
      throw new NgateError('ERR_CHECKPOINT', `weight_map entry for ${tensor} is not a file name in the folder`, { file: indexFile, field: `weight_map.${tensor}` });
    }
    named.set(tensor, shard);
  }
  const files = [...new Set(named.values())];
  for (const shard of files) {
    const file = path.join(dir, shard);
    if (!fs.existsSync(file)) {
      throw new NgateError('ERR_MISSING_FILE', `is named by ${indexName} but does not exist`, { file });
    }
  }
  for (const shard of files) {
    const file = path.join(dir, shard);
    for (const [name, entry] of read(file)) {
      if (out.has(name)) {
        throw new NgateError('ERR_CHECKPOINT', `tensor ${name} is stored twice (also in ${path.basename(out.get(name)!.file)})`, { file });
      }
      out.set(name, { file, entry });
    }
  }
  for (const [tensor, shard] of named) {
    const got = out.get(tensor);
    if (!got) throw new NgateError('ERR_MISSING_TENSOR', `tensor ${tensor} is not in ${shard}, where ${indexName} places it`, { file: path.join(dir, shard) });
  }
  return out;
}

// The weights a LLaMA of this config holds, by Hugging Face name and shape.
export function expectedLlamaTensors(c: LlamaConfig): { name: string; shape: number[] }[] {
  const H = c.hiddenSize, I = c.intermediateSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const out: { name: string; shape: number[] }[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, H] }];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [H] },
      { name: `${p}self_attn.q_proj.weight`, shape: [q, H] },
      { name: `${p}self_attn.k_proj.weight`, shape: [kv, H] },
      { name: `${p}self_attn.v_proj.weight`, shape: [kv, H] },
      { name: `${p}self_attn.o_proj.weight`, shape: [H, q] });
    if (c.attentionBias) {
      out.push({ name: `${p}self_attn.q_proj.bias`, shape: [q] }, { name: `${p}self_attn.k_proj.bias`, shape: [kv] },
        { name: `${p}self_attn.v_proj.bias`, shape: [kv] }, { name: `${p}self_attn.o_proj.bias`, shape: [H] });
    }
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [H] },
      { name: `${p}mlp.gate_proj.weight`, shape: [I, H] },
      { name: `${p}mlp.up_proj.weight`, shape: [I, H] },
      { name: `${p}mlp.down_proj.weight`, shape: [H, I] });
    if (c.mlpBias) {
      out.push({ name: `${p}mlp.gate_proj.bias`, shape: [I] }, { name: `${p}mlp.up_proj.bias`, shape: [I] },
        { name: `${p}mlp.down_proj.bias`, shape: [H] });
    }
  }
  out.push({ name: 'model.norm.weight', shape: [H] });
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, H] });
  return out;
}

// The LLaVA weights besides the decoder's, by our name and shape: the CLIP
// tower as "vision_tower.<CLIP vision_model name>", the projector as
// "multi_modal_projector.<name>" (the order of native/model/llava.cpp).
export function expectedLlavaVisionTensors(c: LlavaConfig): { name: string; shape: number[] }[] {
  const v = c.vision, D = v.hiddenSize, I = v.intermediateSize, t = 'vision_tower.';
  const patches = (v.imageSize / v.patchSize) ** 2;
  const out: { name: string; shape: number[] }[] = [
    { name: `${t}embeddings.class_embedding`, shape: [D] },
    { name: `${t}embeddings.patch_embedding.weight`, shape: [D, v.numChannels, v.patchSize, v.patchSize] },
    { name: `${t}embeddings.position_embedding.weight`, shape: [patches + 1, D] },
    { name: `${t}pre_layrnorm.weight`, shape: [D] }, { name: `${t}pre_layrnorm.bias`, shape: [D] },
  ];
  for (let i = 0; i < v.numLayers; i++) {
    const p = `${t}encoder.layers.${i}.`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) {
      out.push({ name: `${p}self_attn.${proj}.weight`, shape: [D, D] }, { name: `${p}self_attn.${proj}.bias`, shape: [D] });
    }
    out.push({ name: `${p}layer_norm1.weight`, shape: [D] }, { name: `${p}layer_norm1.bias`, shape: [D] },
      { name: `${p}mlp.fc1.weight`, shape: [I, D] }, { name: `${p}mlp.fc1.bias`, shape: [I] },
      { name: `${p}mlp.fc2.weight`, shape: [D, I] }, { name: `${p}mlp.fc2.bias`, shape: [D] },
      { name: `${p}layer_norm2.weight`, shape: [D] }, { name: `${p}layer_norm2.bias`, shape: [D] });
  }
  out.push({ name: `${t}post_layernorm.weight`, shape: [D] }, { name: `${t}post_layernorm.bias`, shape: [D] });
  const H = c.text.hiddenSize, m = 'multi_modal_projector.';
  out.push({ name: `${m}linear_1.weight`, shape: [H, D * c.featureLayers.length] });
  if (c.projectorBias) out.push({ name: `${m}linear_1.bias`, shape: [H] });
  out.push({ name: `${m}linear_2.weight`, shape: [H, H] });
  if (c.projectorBias) out.push({ name: `${m}linear_2.bias`, shape: [H] });
  return out;
}

/**
 * Our name of a tensor stored under any of the key layouts transformers has
 * written for LLaVA: llava-hf's `language_model.model.*`,
 * `language_model.lm_head`, `vision_tower.vision_model.*`; 4.5x's
 * `model.language_model.*`, top-level `lm_head`, `model.vision_tower.vision_model.*`;
 * 5.x's `vision_tower.embeddings.*` without `vision_model`; the projector
 * with or without `model.`. Null for tensors that are none of these.
 */
export function llavaCanonicalName(stored: string): string | null {
  let n = stored;
  if (/^model\.(language_model|vision_tower|multi_modal_projector)\./.test(n)) n = n.slice('model.'.length);
  if (n.startsWith('language_model.lm_head.')) return n.slice('language_model.'.length);
  if (n.startsWith('lm_head.')) return n;
  if (n.startsWith('language_model.model.')) return n.slice('language_model.'.length);
  if (n.startsWith('language_model.')) return 'model.' + n.slice('language_model.'.length);
  if (n.startsWith('vision_tower.vision_model.')) return 'vision_tower.' + n.slice('vision_tower.vision_model.'.length);
  if (n.startsWith('vision_tower.') || n.startsWith('multi_modal_projector.')) return n;
  return null;
}

// The llava-hf spelling of one of our names, for error messages.
function llavaExampleName(name: string): string {
  if (name.startsWith('model.')) return 'language_model.' + name;
  if (name.startsWith('lm_head.')) return 'language_model.' + name;
  if (name.startsWith('vision_tower.')) return 'vision_tower.vision_model.' + name.slice('vision_tower.'.length);
  return name;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

function readGenerationEos(dir: string): number[] {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return [];
  regularFile(file, 'ERR_CHECKPOINT');
  try {
    const g = parseJson(fs.readFileSync(file, 'utf8')) as { eos_token_id?: unknown };
    const e = g.eos_token_id;
    if (typeof e === 'number') return [e];
    if (Array.isArray(e)) return e.filter((x): x is number => typeof x === 'number');
  } catch (err) {
    throw new NgateError('ERR_CHECKPOINT', `not valid JSON: ${(err as Error).message}`, { file });
  }
  return [];
}

/**
 * What an aborted call rejects with: the signal's own reason (a
 * DOMException "TimeoutError" for AbortSignal.timeout, whatever was passed to
 * controller.abort(reason)), or an ERR_ABORTED NgateError when it has none.
 */
export function abortReason(signal: AbortSignal | undefined): unknown {
  return signal?.reason ?? abortError();
}

// One native call, cancellable through `signal`.
async function withToken<T>(signal: AbortSignal | undefined, run: (token: NativeCancelToken) => Promise<T>): Promise<T> {
  if (signal?.aborted) throw abortReason(signal);
  const addon = loadAddon();
  const token = new addon.CancelToken();
  const onAbort = () => token.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await run(token);
  } catch (e) {
    if (signal?.aborted) throw abortReason(signal);
    if ((e as { code?: string }).code === 'ERR_ABORTED' || token.cancelled) throw abortError();
    if (e instanceof NgateError) throw e;
    throw new NgateError('ERR_NATIVE', (e as Error).message, { cause: e });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

// The models the current async context holds (Model.hold).
const held = new AsyncLocalStorage<Set<Model>>();

function disposedError(): NgateError {
  return new NgateError('ERR_DISPOSED', 'the model has been disposed');
}

/** The native sampling options, checked; {} for greedy decoding. */
function checkSampling(o: GenerateOptions): { temperature?: number; topK?: number; topP?: number; repetitionPenalty?: number; seed?: number } {
  const out: { temperature?: number; topK?: number; topP?: number; repetitionPenalty?: number; seed?: number } = {};
  const num = (v: unknown, field: string, ok: (x: number) => boolean, what: string): number | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new NgateError('ERR_INPUT', `must be ${what}, got ${String(v)}`, { field });
    return v;
  };
  const t = num(o.temperature, 'temperature', (x) => x >= 0, 'a number ≥ 0');
  const k = num(o.topK, 'topK', (x) => Number.isInteger(x) && x >= 0, 'an integer ≥ 0');
  const p = num(o.topP, 'topP', (x) => x > 0 && x <= 1, 'a number in (0, 1]');
  const r = num(o.repetitionPenalty, 'repetitionPenalty', (x) => x > 0, 'a number > 0');
  const seed = num(o.seed, 'seed', (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
  if (t !== undefined && t > 0) out.temperature = t;
  if (k !== undefined && k > 0) out.topK = k;
  if (p !== undefined && p < 1) out.topP = p;
  if (r !== undefined && r !== 1) out.repetitionPenalty = r;
  if (seed !== undefined) out.seed = seed;
  if ((out.topK !== undefined || out.topP !== undefined) && out.temperature === undefined) {
    throw new NgateError('ERR_INPUT', 'topK and topP restrict sampling: give a temperature > 0 with them (greedy decoding ignores them)', { field: o.topK !== undefined ? 'topK' : 'topP' });
  }
  return out;
}

/**
 * The answers of one generate() call as they are decoded: each step's tokens
 * arrive from the worker, each answer is decoded again and its new text
 * streamed, and an answer whose text reaches a stop string is flagged for the
 * worker (stopRows) and cut there. Decoding is asynchronous, so the steps are
 * handled one after another on a promise chain.
 */
class AnswerStream {
  readonly stopRows: Uint8Array;
  /** Per answer: how many tokens it keeps when a stop string ended it. */
  readonly stopAt: (number | undefined)[];
  readonly texts: string[];
  private readonly ids: number[][];
  private readonly sent: number[];     // characters of each text already streamed
  private readonly sentIds: number[];  // ids already streamed
  private readonly ended: boolean[];
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly tokenizer: Tokenizer, n: number, private readonly stops: string[],
    private readonly onToken?: (t: GeneratedToken) => void) {
    this.stopRows = new Uint8Array(n);
    this.stopAt = new Array(n).fill(undefined);
    this.texts = new Array(n).fill('');
    this.ids = Array.from({ length: n }, () => []);
    this.sent = new Array(n).fill(0);
    this.sentIds = new Array(n).fill(0);
    this.ended = new Array(n).fill(false);
  }

  push(_step: number, step: Int32Array, eos: number[]): void {
    const ids = Array.from(step);
    this.chain = this.chain.then(() => this.handle(ids, eos));
  }

  private async handle(step: number[], eos: number[]): Promise<void> {
    const rows: number[] = [];
    step.forEach((id, b) => {
      if (this.ended[b]) return;
      if (eos.includes(id)) { this.ended[b] = true; rows.push(b); return; }
      this.ids[b].push(id);
      rows.push(b);
    });
    if (rows.length === 0) return;
    const V = this.tokenizer.vocabSize;
    const texts = await this.tokenizer.decodeBatch(rows.map((b) => this.ids[b].filter((id) => id < V)));
    rows.forEach((b, i) => this.update(b, texts[i], this.ended[b]));
  }

  private update(b: number, text: string, final: boolean): void {
    if (this.stopAt[b] !== undefined) return;
    let cut = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s, Math.max(0, this.sent[b] - s.length));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopRows[b] = 1;
      this.stopAt[b] = this.ids[b].length;
      this.ended[b] = true;
      text = text.slice(0, cut);
      final = true;
    }
    this.texts[b] = text;
    // Hold back an incomplete character and anything that may be the start of a stop string.
    let upto = text.length;
    if (!final) {
      if (text.endsWith('\uFFFD')) upto = text.length - 1;
      for (const s of this.stops) {
        for (let k = Math.min(s.length - 1, upto); k > 0; k--) {
          if (text.slice(upto - k, upto) === s.slice(0, k)) { upto -= k; break; }
        }
      }
    }
    if (upto > this.sent[b] || (final && this.ids[b].length > this.sentIds[b])) {
      const piece: GeneratedToken = { index: b, text: text.slice(this.sent[b], Math.max(upto, this.sent[b])), ids: this.ids[b].slice(this.sentIds[b]) };
      this.sent[b] = Math.max(upto, this.sent[b]);
      this.sentIds[b] = this.ids[b].length;
      this.onToken?.(piece);
    }
  }

  /** Waits for the last step, then flushes what was held back of answers that ended at their length limit. */
  async finish(res: { tokens: Int32Array[] }): Promise<void> {
    await this.chain;
    res.tokens.forEach((_, b) => this.update(b, this.texts[b], true));
  }
}

export class Model {
  /** The folder the checkpoint was loaded from (never written to). */
  readonly dir: string;
  /** The decoder's config (for LLaVA: its text_config, defaults filled in). */
  readonly config: LlamaConfig;
  /** The LLaVA config (vision tower, projector, image token), or null for a text-only model. */
  readonly llava: LlavaConfig | null;
  /** The MiniGPT-4 settings (descriptor, files, prompt), or null for other models. */
  readonly minigpt4: MiniGpt4Config | null;
  /** How images are preprocessed (LLaVA), from preprocessor_config.json. */
  readonly imagePreprocessing: ImagePreprocessing | null;
  /** Our tensor name → the name the checkpoint stored it under (they differ for LLaVA layouts). */
  private readonly storedNames: Map<string, string>;
  readonly tokenizer: Tokenizer;
  readonly device: string;
  readonly dtype: ModelDtype;
  /** Token ids that end generation: config, generation_config.json and tokenizer together. */
  readonly eosTokenIds: number[];
  readonly padTokenId: number;
  private native: NativeModel | null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly sourceDtypes: Map<string, SafetensorsDtype>;

  /** @internal use loadModel() */
  constructor(args: { dir: string; config: LlamaConfig; tokenizer: Tokenizer; device: string; dtype: ModelDtype;
    native: NativeModel; sourceDtypes: Map<string, SafetensorsDtype>; eosTokenIds: number[];
    llava?: LlavaConfig | null; imagePreprocessing?: ImagePreprocessing | null; storedNames?: Map<string, string>;
    minigpt4?: MiniGpt4Config | null }) {
    this.dir = args.dir;
    this.minigpt4 = args.minigpt4 ?? null;
    this.config = args.config;
    this.llava = args.llava ?? null;
    this.imagePreprocessing = args.imagePreprocessing ?? null;
    this.storedNames = args.storedNames ?? new Map();
    this.tokenizer = args.tokenizer;
    this.device = args.device;
    this.dtype = args.dtype;
    this.native = args.native;
    const size: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };
    this.weightBytes = args.native.parameters().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1) * (size[p.dtype] ?? 4), 0);
    this.sourceDtypes = args.sourceDtypes;
    this.eosTokenIds = args.eosTokenIds;
    this.padTokenId = args.config.padTokenId ?? args.tokenizer.padTokenId ?? args.eosTokenIds[0] ?? 0;
  }

  get disposed(): boolean { return this.native === null; }

  /** Bytes of weight memory the model holds on its device. */
  get parameterBytes(): number { return this.native ? this.weightBytes : 0; }
  // Counted once at load, in JS: asking the addon would wait for the model's lock, that is for a running call.
  private readonly weightBytes: number;

  /**
   * @internal Runs a native operation in this model's queue, cancellable
   * through `signal`: how learnMask, gatedEdit and evaluate reach the addon.
   */
  runNative<T>(signal: AbortSignal | undefined, op: (native: NativeModel, token: NativeCancelToken) => Promise<T>): Promise<T> {
    return this.exclusive((native) => withToken(signal, (token) => op(native, token)));
  }

  /** Hugging Face names of the weights an edit has changed since loading. */
  readonly editedTensors = new Set<string>();

  /**
   * Runs operations on this model one after another, never over each other.
   * Inside hold() (the same async context), an operation runs at once: the
   * held call already owns the model. A call that dispose() stopped rejects
   * with ERR_DISPOSED, not as aborted.
   */
  private exclusive<T>(op: (native: NativeModel) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (!this.native) throw disposedError();
      try {
        return await op(this.native);
      } catch (e) {
        if (this.native === null && isNgateError(e, 'ERR_ABORTED', 'ERR_NATIVE')) throw disposedError();
        throw e;
      }
    };
    if (held.getStore()?.has(this)) return run();
    const queued = this.queue.then(run);
    this.queue = queued.catch(() => undefined);
    return queued;
  }

  /**
   * Runs `body` as one call on this model: it starts when the calls made
   * before it have ended, no call made after it starts before it ends, and the
   * model calls `body` makes run at once, in its order. evaluate, learnMask,
   * gatedEdit, fillBenignAnswers and locateLayer hold the model this way, so
   * that an edit issued while one of them runs lands before or after it, never
   * in the middle (one report never mixes edited and unedited answers).
   */
  hold<T>(body: () => Promise<T>): Promise<T> {
    const holding = held.getStore();
    if (holding?.has(this)) return body();
    const inner = new Set(holding ?? []).add(this);
    return this.exclusive(() => held.run(inner, body));
  }

  /**
   * Every sequence (with `newTokens` to come) within the positions the model
   * has: past them its rotary positions were never trained, and the size of
   * attention and of the KV cache grows with the length the input asks for.
   */
  private checkPositions(rows: number[][], newTokens: number, where: string): void {
    const P = this.config.maxPositionEmbeddings;
    rows.forEach((r, i) => {
      if (r.length > P) {
        throw new NgateError('ERR_INPUT', `${where}[${i}] is ${r.length} tokens, past the model's ${P} positions (max_position_embeddings)`, { field: `${where}[${i}]` });
      }
      if (r.length + newTokens > P) {
        throw new NgateError('ERR_INPUT', `maxNewTokens ${newTokens} after the ${r.length} tokens of ${where}[${i}] goes past the model's ${P} positions ` +
          `(max_position_embeddings): at most ${P - r.length} new tokens`, { field: 'maxNewTokens' });
      }
    });
  }

  private checkIds(ids: number[], where: string): void {
    const V = this.config.vocabSize;
    const image = this.imageTokenId;
    for (const id of ids) {
      if ((!Number.isInteger(id) || id < 0 || id >= V) && id !== image) {
        throw new NgateError('ERR_INPUT', `${where}: token id ${id} is not an integer in [0, ${V})`, { field: where });
      }
    }
  }

  /** The image token's text in prompts ("<image>" for LLaVA-1.5), or null when the tokenizer has none. */
  get imageToken(): string | null {
    if (this.minigpt4) return this.minigpt4.imagePlaceholder;
    return this.llava ? this.tokenizer.idToToken(this.llava.imageTokenId) : null;
  }

  /**
   * The id that marks image positions in token ids, or null without a vision
   * side: LLaVA's image token; for MiniGPT-4, whose vocabulary has none, the
   * decoder's vocabulary size (one past its last id).
   */
  get imageTokenId(): number | null {
    if (this.minigpt4) return this.config.vocabSize;
    return this.llava ? this.llava.imageTokenId : null;
  }

  /** Positions one image takes in the ids (576 for LLaVA-1.5, 64 for MiniGPT-4), or 0 without a vision side. */
  get imageTokenCount(): number {
    return this.minigpt4 ? this.minigpt4.numImageTokens : this.llava ? this.llava.imageTokens : 0;
  }

  /**
   * Token ids of a query as this model's own prompt, and its character span
   * mapped to them: `offsets` index `prompt`, image positions have empty
   * ranges. `purpose: 'generate'` is the prompt a user turn gets when the
   * model answers (the chat template; MiniGPT-4's Chat prompt), `'train'` the
   * prompt of a loss toward a target answer (the same, except for MiniGPT-4,
   * whose training sequence of MiniGPTBase.forward differs from its chat
   * prompt). With an image, its run of image ids is in place.
   */
  async encodeUserTurn(query: string, opts: { image?: boolean; purpose?: 'generate' | 'train' } = {}):
    Promise<{ ids: number[]; offsets: [number, number][]; prompt: string; queryStart: number }> {
    const m = this.minigpt4;
    if (!m) throw new NgateError('ERR_INPUT', 'encodeUserTurn is for MiniGPT-4 models; other models render their chat template', { field: 'model' });
    const { prompt, queryStart } = opts.purpose === 'train' ? miniGpt4TrainingPrompt(m, query, !!opts.image) : miniGpt4ChatPrompt(m, query, !!opts.image);
    const enc = await this.encodeMiniGpt4(prompt, opts.purpose === 'train' ? 'prepend' : 'first-segment');
    if (enc.images !== (opts.image ? 1 : 0)) {
      throw new NgateError('ERR_INPUT', `the query ${JSON.stringify(query)} holds the image placeholder ${m.imagePlaceholder}`, { field: 'query' });
    }
    return { ids: enc.ids, offsets: enc.offsets, prompt, queryStart };
  }

  private encodeMiniGpt4(prompt: string, bos: 'first-segment' | 'prepend') {
    return encodeMiniGpt4Prompt(this.tokenizer, this.minigpt4!, prompt, { bos, imageTokenId: this.config.vocabSize, bosId: this.tokenizer.bosTokenId ?? this.config.bosTokenId });
  }

  /**
   * The chat-templated prompt of one user turn. Templates that take plain
   * text get `text` as it is; a processor template that takes typed parts
   * (llava-hf's chat_template.json renders {type: "image"} as "<image>\n"
   * and ignores plain strings) gets the image token as an image part and the
   * rest as text. Returns the prompt and the text part that must appear in it.
   */
  renderUserTurn(text: string): string {
    if (this.minigpt4) return miniGpt4ChatPrompt(this.minigpt4, text, false).prompt;
    let plain: string | null = null;
    let plainError: unknown = null;
    try {
      plain = this.tokenizer.applyChatTemplate([{ role: 'user', content: text }], { addGenerationPrompt: true });
    } catch (e) {
      plainError = e;  // e.g. a template that iterates over typed parts
    }
    const token = this.imageToken;
    const fallback = (): string => { if (plain === null) throw plainError; return plain; };
    if ((plain !== null && plain.includes(text)) || token === null || !text.includes(token)) return fallback();
    const segments = text.split(token);
    // The template writes the newline after each image itself.
    const rest = segments.map((s, i) => (i > 0 ? s.replace(/^\n/, '') : s)).join('');
    const parts = [...segments.slice(1).map(() => ({ type: 'image' as const })), { type: 'text' as const, text: rest }];
    let typed: string;
    try {
      typed = this.tokenizer.applyChatTemplate([{ role: 'user', content: parts }], { addGenerationPrompt: true });
    } catch {
      return fallback();
    }
    return typed.includes(rest) && typed.includes(token) ? typed : fallback();
  }

  /**
   * @internal Checks each row's image tokens against its image, expands a
   * single image token to the image's token count, and decodes and
   * preprocesses the images (each distinct path or buffer once).
   */
  async prepareImages(ids: number[][], images: (ImageInput | null)[] | undefined, where: string):
    Promise<{ ids: number[][]; native?: NativeImages; imageAt: number[] }> {
    const imageAt = ids.map(() => -1);
    const tok = this.imageTokenId;
    if (images === undefined || images === null) {
      if (tok !== null) {
        ids.forEach((r, i) => {
          if (r.includes(tok)) {
            throw new NgateError('ERR_INPUT', `${where}[${i}] holds the image token (id ${tok}) but no image is given for it`, { field: `${where}[${i}]` });
          }
        });
      }
      return { ids, imageAt };
    }
    if (tok === null) {
      throw new NgateError('ERR_INPUT', `images were given, but this model (model_type "${this.config.modelType}") has no vision tower`, { field: 'images' });
    }
    if (!Array.isArray(images) || images.length !== ids.length) {
      throw new NgateError('ERR_INPUT', `images must hold one image (or null) per sequence: ${ids.length} expected, got ${Array.isArray(images) ? images.length : typeof images}`, { field: 'images' });
    }
    const n = this.imageTokenCount;
    const out: number[][] = [];
    const keys = new Map<ImageInput, number>();
    const unique: { input: ImageInput; field: string }[] = [];
    const rows = new Int32Array(ids.length).fill(-1);
    ids.forEach((r, i) => {
      const img = images[i];
      const positions = r.flatMap((id, t) => (id === tok ? [t] : []));
      if (img === null || img === undefined) {
        if (positions.length > 0) {
          throw new NgateError('ERR_INPUT', `${where}[${i}] holds the image token (id ${tok}) but images[${i}] is null`, { field: `images[${i}]` });
        }
        out.push(r);
        return;
      }
      if (positions.length === 0) {
        throw new NgateError('ERR_INPUT', `images[${i}] is given but ${where}[${i}] has no image token (${this.imageToken ?? `id ${tok}`}) to put it at`, { field: `images[${i}]` });
      }
      const contiguous = positions[positions.length - 1] - positions[0] === positions.length - 1;
      if (positions.length === 1) {
        out.push([...r.slice(0, positions[0]), ...new Array<number>(n).fill(tok), ...r.slice(positions[0] + 1)]);
      } else if (positions.length === n && contiguous) {
        out.push(r);  // already expanded
      } else {
        throw new NgateError('ERR_INPUT', `${where}[${i}] holds ${positions.length} image tokens: expected one (expanded here) or one run of ${n}`, { field: `${where}[${i}]` });
      }
      imageAt[i] = positions[0];
      if (typeof img !== 'string' && !(img instanceof Uint8Array)) {
        throw new NgateError('ERR_INPUT', `images[${i}] must be a file path, a Buffer or null`, { field: `images[${i}]` });
      }
      let k = keys.get(img);
      if (k === undefined) {
        k = unique.length;
        keys.set(img, k);
        unique.push({ input: img, field: `images[${i}]` });
      }
      rows[i] = k;
    });
    if (unique.length === 0) return { ids: out, imageAt };
    const S = this.minigpt4 ? this.minigpt4.vision.imageSize : this.llava!.vision.imageSize, C = 3;
    const pixels = new Float32Array(unique.length * C * S * S);
    for (const [k, u] of unique.entries()) pixels.set(await preprocessImage(u.input, this.imagePreprocessing!, u.field), k * C * S * S);
    return { ids: out, imageAt, native: { pixels, count: unique.length, channels: C, size: S, rows } };
  }

  /**
   * Logits of a batch of token sequences of any lengths (right-padded
   * internally with an attention mask, so each row equals its own unpadded run).
   */
  async forward(input: number[][], opts: ForwardOptions = {}): Promise<ForwardResult> {
    if (!Array.isArray(input) || input.length === 0 || input.some((r) => !Array.isArray(r) || r.length === 0)) {
      throw new NgateError('ERR_INPUT', 'forward(ids): ids must be a non-empty array of non-empty token arrays', { field: 'ids' });
    }
    input.forEach((r, i) => this.checkIds(r, `ids[${i}]`));
    const { ids, native: images } = await this.prepareImages(input, opts.images, 'ids');
    const B = ids.length;
    const T = Math.max(...ids.map((r) => r.length));
    this.checkPositions(ids, 0, 'ids');
    // The logits come back whole, B × T × V float32: bounded before the addon allocates them.
    checkLimit(B * (opts.lastOnly ? 1 : T) * this.config.vocabSize * 4, limits().logitsBytes, 'ERR_INPUT', { field: 'ids' });
    const flat = new Int32Array(B * T).fill(this.padTokenId);
    const mask = new Uint8Array(B * T);
    ids.forEach((row, b) => { flat.set(row, b * T); mask.fill(1, b * T, b * T + row.length); });
    const logits = await this.exclusive((native) => withToken(opts.signal, (token) =>
      native.forward(flat, mask, B, T, !!opts.lastOnly, token, images)));
    const res: ForwardResult = { logits, shape: [B, opts.lastOnly ? 1 : T, this.config.vocabSize] };
    if (opts.images) res.ids = ids;
    return res;
  }

  /**
   * Turns prompts (text, or token ids as they are) into token ids. MiniGPT-4
   * text is encoded as get_context_emb does (split at the image placeholder,
   * BOS on the first piece, the image's run in between); with `chat`, a
   * question becomes its Chat prompt first, with the image message when
   * `images[i]` is given.
   */
  async encodePrompts(prompts: (string | number[])[], chat = false, images?: (ImageInput | null)[]): Promise<number[][]> {
    const out: number[][] = [];
    for (const [i, p] of prompts.entries()) {
      if (Array.isArray(p)) { this.checkIds(p, `prompts[${i}]`); out.push(p.slice()); continue; }
      if (typeof p !== 'string') throw new NgateError('ERR_INPUT', `prompts[${i}] must be a string or an array of token ids`, { field: `prompts[${i}]` });
      if (this.minigpt4) {
        const withImage = Array.isArray(images) && images[i] !== null && images[i] !== undefined;
        const text = chat ? miniGpt4ChatPrompt(this.minigpt4, p, withImage).prompt : p;
        out.push((await this.encodeMiniGpt4(text, 'first-segment')).ids);
      } else if (chat) {
        // The template writes the BOS text itself, as transformers' apply_chat_template does.
        const text = this.renderUserTurn(p);
        out.push((await this.tokenizer.encode(text, { addSpecialTokens: false })).ids);
      } else {
        out.push((await this.tokenizer.encode(p)).ids);
      }
      if (out[out.length - 1].length === 0) throw new NgateError('ERR_INPUT', `prompts[${i}] encodes to no tokens`, { field: `prompts[${i}]` });
    }
    return out;
  }

  /**
   * Batched decoding with a KV cache, greedy unless a temperature is given;
   * each prompt stops at EOS, at a stop string or at maxNewTokens.
   */
  async generate(prompts: (string | number[])[], opts: GenerateOptions = {}): Promise<Generation[]> {
    const maxNewTokens = opts.maxNewTokens ?? 64;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
      throw new NgateError('ERR_INPUT', `maxNewTokens must be a positive integer, got ${maxNewTokens}`, { field: 'maxNewTokens' });
    }
    if (!Array.isArray(prompts)) throw new NgateError('ERR_INPUT', 'prompts must be an array', { field: 'prompts' });
    const sampling = checkSampling(opts);
    const stops = opts.stop ?? [];
    if (!Array.isArray(stops) || stops.some((x) => typeof x !== 'string' || x.length === 0)) {
      throw new NgateError('ERR_INPUT', 'stop must be an array of non-empty strings', { field: 'stop' });
    }
    if (prompts.length === 0) return [];
    const onProgress = opts.onProgress;
    // Encoding happens inside the queue so that calls run in the order they were made.
    return this.exclusive(async (native) => {
      const { ids: encoded, native: images } = await this.prepareImages(await this.encodePrompts(prompts, !!opts.chat, opts.images), opts.images, 'prompts');
      this.checkPositions(encoded, maxNewTokens, 'prompts');
      const stream = stops.length > 0 || opts.onToken ? new AnswerStream(this.tokenizer, encoded.length, stops, opts.onToken) : null;
      const res = await withToken(opts.signal, (token) => native.generate(
        encoded.map((p) => Int32Array.from(p)),
        { maxNewTokens, eosIds: this.eosTokenIds, padId: this.padTokenId, keepLogits: !!opts.returnLogits, ...sampling,
          ...(stream && stops.length > 0 ? { stopRows: stream.stopRows } : {}) },
        token,
        onProgress ? (done, total) => onProgress({ stage: 'generate', done, total }) : undefined, images,
        stream ? (step, ids) => stream.push(step, ids, this.eosTokenIds) : undefined));
      if (stream) await stream.finish(res);
      const V = this.config.vocabSize;
      const ids = res.tokens.map((t, b) => Array.from(t).slice(0, stream?.stopAt[b] ?? t.length));
      // A checkpoint's vocabulary may be padded past the tokenizer's (LLaVA-1.5's is);
      // such ids have no text, so they are left out of `text` (but kept in `ids`).
      const TV = this.tokenizer.vocabSize;
      const texts = stream ? stream.texts : await this.tokenizer.decodeBatch(ids.map((t) => t.filter((id) => id < TV)));
      return encoded.map((promptIds, b): Generation => {
        const stopped = stream?.stopAt[b] !== undefined;
        const g: Generation = {
          promptIds, ids: ids[b], text: texts[b],
          finishReason: stopped ? 'stop' : res.stoppedAtEos[b] ? 'eos' : 'length',
        };
        if (res.logits && res.steps !== undefined) {
          const steps = Math.min(res.steps, g.ids.length + (!stopped && res.stoppedAtEos[b] ? 1 : 0));
          g.logits = res.logits.slice(b * res.steps * V, (b * res.steps + steps) * V);
        }
        return g;
      });
    });
  }

  /**
   * generate() as an async iterator of answer pieces, for one prompt or
   * several (`index` says which). Breaking out of the loop stops the generation.
   *
   *     for await (const t of model.stream('Who wrote Hamlet?', { chat: true })) process.stdout.write(t.text);
   */
  async *stream(prompts: string | number[] | (string | number[])[], opts: Omit<GenerateOptions, 'onToken'> = {}): AsyncGenerator<GeneratedToken, Generation[], undefined> {
    const list = typeof prompts === 'string' || (Array.isArray(prompts) && prompts.every((x) => typeof x === 'number'))
      ? [prompts as string | number[]] : prompts as (string | number[])[];
    const queue: GeneratedToken[] = [];
    let wake: (() => void) | null = null;
    const stop = new AbortController();
    const onAbort = () => stop.abort(opts.signal!.reason);
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let done = false;
    const run = this.generate(list, { ...opts, signal: stop.signal, onToken: (t) => { queue.push(t); wake?.(); } })
      .finally(() => { done = true; wake?.(); });
    run.catch(() => undefined);  // rethrown below, after the queue drains
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (done) return await run;
        await new Promise<void>((r) => { wake = r; });
        wake = null;
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (!done) {
        stop.abort(new NgateError('ERR_ABORTED', 'the stream was closed before the generation ended'));
        await run.catch(() => undefined);
      }
    }
  }

  /**
   * Writes a checkpoint transformers can load: config.json, safetensors
   * (sharded past maxShardBytes) and the tokenizer files. The folder appears
   * whole or not at all: it is written beside the target and renamed into place.
   */
  save(dir: string, opts: SaveOptions = {}): Promise<void> {
    return this.exclusive((native) => this.saveWith(native, dir, opts));
  }

  private async saveWith(native: NativeModel, dir: string, opts: SaveOptions): Promise<void> {
    const target = path.resolve(dir);
    const m = this.minigpt4;
    const sources = [this.dir, ...(m ? [m.llamaDir, path.dirname(m.ckpt), path.dirname(m.vitCheckpoint)] : [])].map((d) => fs.realpathSync(d));
    // The model's own folders may hold neither the target nor anything inside it
    // (a .pth file's folder only must not be replaced: saving beside it is fine).
    const owned = [this.dir, ...(m ? [m.llamaDir] : [])].map((d) => fs.realpathSync(d));
    // The target as it will resolve, links included, before anything is created.
    let head = target;
    const tail: string[] = [];
    while (!fs.existsSync(head) && path.dirname(head) !== head) { tail.unshift(path.basename(head)); head = path.dirname(head); }
    const realTarget = path.join(fs.realpathSync(head), ...tail);
    if (sources.some((source) => realTarget === source || source.startsWith(realTarget + path.sep))) {
      throw new NgateError('ERR_SAVE', 'refusing to write over the folder the model was loaded from', { file: target });
    }
    if (owned.some((source) => realTarget.startsWith(source + path.sep))) {
      throw new NgateError('ERR_SAVE', 'refusing to write inside the folder the model was loaded from: save it beside that folder', { file: target });
    }
    const parent = path.dirname(target);
    const writeError = (e: unknown) => new NgateError('ERR_WRITE', `cannot save: ${(e as Error).message}`, { file: target, cause: e });
    try {
      if (!fs.existsSync(parent)) fs.mkdirSync(parent, { recursive: true });
    } catch (e) {
      throw writeError(e);
    }
    if (fs.existsSync(target)) {
      if (!fs.statSync(target).isDirectory()) throw new NgateError('ERR_SAVE', 'exists and is not a folder', { file: target });
      if (fs.readdirSync(target).length > 0 && !opts.overwrite) {
        throw new NgateError('ERR_SAVE', 'exists and is not empty (pass { overwrite: true } to replace it)', { file: target });
      }
    }
    // MiniGPT-4: the decoder becomes a Llama folder; the image side stays in its two .pth files, copied unchanged.
    const params = native.parameters().filter((p) => !m || !(p.name.startsWith('visual_encoder.') || p.name.startsWith('llama_proj.')));
    const maxShard = opts.maxShardBytes ?? 5e9;
    const dtypeOf = (name: string): SafetensorsDtype =>
      opts.dtype ? TO_SAFETENSORS[opts.dtype] : (this.sourceDtypes.get(name) ?? TO_SAFETENSORS[this.dtype]);
    const bytesOf = (p: { name: string; shape: number[] }) =>
      p.shape.reduce((a, b) => a * b, 1) * ({ F32: 4, F16: 2, BF16: 2 } as Record<string, number>)[dtypeOf(p.name)];
    const shards: { name: string; shape: number[] }[][] = [[]];
    let current = 0;
    for (const p of params) {
      const n = bytesOf(p);
      if (current > 0 && current + n > maxShard) { shards.push([]); current = 0; }
      shards[shards.length - 1].push(p);
      current += n;
    }
    // A save that a crash interrupted is finished first, and temporary folders it left are removed.
    recoverSwap(target);
    removeStaleTemps(parent);
    const tmp = tempFolderFor(target);
    const out = m ? path.join(tmp, 'llama') : tmp;
    try {
      fs.mkdirSync(tmp);
      if (m) fs.mkdirSync(out);
      const names = shards.length === 1 ? [SINGLE_WEIGHTS]
        : shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`);
      const weightMap: Record<string, string> = {};
      let total = 0;
      for (const [i, shard] of shards.entries()) {
        const dtypes = shard.map((p) => dtypeOf(p.name));
        // Each tensor under the name the loaded checkpoint used, so a LLaVA keeps its key layout.
        const stored = (n: string) => this.storedNames.get(n) ?? n;
        const { header } = encodeSafetensorsHeader(shard.map((p, j) => ({ name: stored(p.name), dtype: dtypes[j], shape: p.shape })), { format: 'pt' });
        await withToken(opts.signal, (token) => native.writeTensors(path.join(out, names[i]), header, shard.map((p) => p.name), dtypes, token));
        for (const p of shard) { weightMap[stored(p.name)] = names[i]; total += bytesOf(p); }
        opts.onProgress?.({ stage: 'save', done: i + 1, total: shards.length });
      }
      if (shards.length > 1) {
        fs.writeFileSync(path.join(out, WEIGHT_INDEX), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
      }
      const savedDtypes = new Set(params.map((p) => dtypeOf(p.name)));
      const uniform = savedDtypes.size === 1 ? ([...savedDtypes][0] as SafetensorsDtype) : null;
      const fromSt: Record<string, ModelDtype> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };
      fs.writeFileSync(path.join(out, 'config.json'), serializeConfig(this.llava ?? this.config, uniform ? { dtype: fromSt[uniform] } : {}));
      for (const f of COMPANION_FILES) {
        const src = path.join(m ? m.llamaDir : this.dir, f);
        // Copied as they are, but only regular files: a FIFO named like one would block the copy forever.
        if (fs.existsSync(src)) { regularFile(src, 'ERR_CHECKPOINT', null); fs.copyFileSync(src, path.join(out, f)); }
      }
      if (m) {
        // The two .pth files as they were (a copy-on-write clone where the filesystem has one).
        const ckpt = path.basename(m.ckpt);
        const vit = path.basename(m.vitCheckpoint) === ckpt ? `vit-${path.basename(m.vitCheckpoint)}` : path.basename(m.vitCheckpoint);
        fs.copyFileSync(m.ckpt, path.join(tmp, ckpt), fs.constants.COPYFILE_FICLONE);
        fs.copyFileSync(m.vitCheckpoint, path.join(tmp, vit), fs.constants.COPYFILE_FICLONE);
        fs.writeFileSync(path.join(tmp, MINIGPT4_DESCRIPTOR), serializeMiniGpt4Descriptor(m, { llamaModel: 'llama', ckpt, vitCheckpoint: vit }));
      }
      if (opts.signal?.aborted) throw abortReason(opts.signal);
      // Into place: a crash before this line leaves only the hidden temp folder (removed by a later save),
      // one during the swap a journal the next save or load finishes from.
      swapInto(tmp, target);
    } catch (e) {
      try {
        if (!fs.existsSync(journalFor(target))) fs.rmSync(tmp, { recursive: true, force: true });
      } catch { /* the temporary folder was never made (a name too long, no permission) */ }
      if ((e instanceof NgateError && e.code !== 'ERR_NATIVE') || (e as Error)?.name === 'AbortError' || e === opts.signal?.reason) throw e;
      // A full disk, no permission, a name too long: the machine's failure, with the target named.
      throw writeError(e);
    }
  }

  /**
   * Frees the weights: at once when the model is idle, else as soon as the
   * running call stops (it is cancelled and rejects with ERR_DISPOSED), and so
   * do the calls queued behind it. Resolves when the weights are freed; later
   * calls reject with ERR_DISPOSED. Calling it again is harmless.
   */
  dispose(): Promise<void> {
    if (this.native) {
      this.native.dispose();
      this.native = null;
    }
    return this.queue.then(() => undefined);
  }

  /** `using model = await loadModel(…)`: frees the weights when the block ends (without waiting for a running call). */
  [Symbol.dispose](): void {
    void this.dispose();
  }

  /** `await using model = await loadModel(…)`: frees the weights when the block ends, after the running call stops. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/**
 * Loads a Hugging Face LLaMA-family checkpoint from a local folder:
 * config.json, model.safetensors or shards with model.safetensors.index.json,
 * tokenizer.json and tokenizer_config.json.
 */
export async function loadModel(dir: string, opts: LoadOptions = {}): Promise<Model> {
  checkDevice(opts.device ?? 'cpu');
  if (opts.dtype !== undefined && !(['float32', 'float16', 'bfloat16'] as string[]).includes(opts.dtype)) {
    throw new NgateError('ERR_INPUT', `unknown dtype "${opts.dtype}" (expected float32, float16 or bfloat16)`, { field: 'dtype' });
  }
  // A save into this folder that a crash interrupted is finished before it is read.
  recoverSwap(path.resolve(dir));
  // A MiniGPT-4 descriptor (folder with minigpt4.json, the file, or the original's YAML) names a Llama folder.
  const minigpt4 = fs.existsSync(dir) ? findMiniGpt4Config(dir) : null;
  if (!minigpt4 && (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())) {
    throw new NgateError('ERR_MISSING_FILE', 'is not a folder (nor a MiniGPT-4 descriptor)', { file: dir });
  }
  const addon = await ensureAddon();
  if (opts.threads !== undefined) await setThreads(opts.threads);
  const device = resolveDevice(opts.device ?? 'cpu', addon.info());
  const dtype: ModelDtype = opts.dtype ?? (device === 'cpu' ? 'float32' : 'bfloat16');
  if (device === 'cpu' && dtype === 'float16' && /^1\./.test(addon.info().torchVersion)) {
    throw new NgateError('ERR_DEVICE', `float16 on the CPU is not supported by libtorch ${addon.info().torchVersion} (no half-precision CPU matrix products); use float32 or bfloat16`, { field: 'dtype' });
  }
  const llmDir = minigpt4 ? minigpt4.llamaDir : dir;
  const modelConfig = readModelConfig(llmDir);
  if (minigpt4 && modelConfig.modelType !== 'llama') {
    throw new NgateError('ERR_CONFIG', `llama_model names a ${modelConfig.modelType} checkpoint; MiniGPT-4 needs a Llama folder`, { file: minigpt4.file, field: 'llama_model' });
  }
  const llava = modelConfig.modelType === 'llava' ? modelConfig : null;
  const config = llava ? llava.text : modelConfig as LlamaConfig;
  const imagePreprocessing = llava ? readPreprocessorConfig(dir, llava.vision) : minigpt4 ? miniGpt4Preprocessing(minigpt4) : null;
  const tokenizer = await Tokenizer.fromDir(llmDir);
  let stored = listCheckpointTensors(llmDir);
  const storedNames = new Map<string, string>();
  if (llava) {
    // Our names for the tensors of whichever key layout the file has.
    const renamed = new Map<string, { file: string; entry: TensorEntry }>();
    for (const [name, value] of stored) {
      const ours = llavaCanonicalName(name);
      if (ours === null) continue;
      const prev = storedNames.get(ours);
      if (prev !== undefined) {
        throw new NgateError('ERR_CHECKPOINT', `tensors ${prev} and ${name} are the same weight (${ours}) under two key layouts`, { file: value.file });
      }
      storedNames.set(ours, name);
      renamed.set(ours, value);
    }
    stored = renamed;
  }
  const tensors: NativeTensorSource[] = [];
  const sourceDtypes = new Map<string, SafetensorsDtype>();
  const expected = [...expectedLlamaTensors(config), ...(llava ? expectedLlavaVisionTensors(llava) : [])];
  for (const { name, shape } of expected) {
    const found = stored.get(name);
    if (!found) {
      const where = weightsFileOf(llmDir);
      const what = llava ? `${name} (in any LLaVA key layout, e.g. ${llavaExampleName(name)})` : name;
      throw new NgateError('ERR_MISSING_TENSOR', `tensor ${what} is missing from the checkpoint`, { file: where });
    }
    const e = found.entry;
    if (e.shape.length !== shape.length || e.shape.some((s, i) => s !== shape[i])) {
      throw new NgateError('ERR_CHECKPOINT', `tensor ${storedNames.get(name) ?? name} has shape [${e.shape}], config.json implies [${shape}]`, { file: found.file });
    }
    if (!FLOAT_DTYPES.has(e.dtype)) {
      throw new NgateError('ERR_CHECKPOINT', `tensor ${name} has dtype ${e.dtype}; weights must be F32, F16, BF16 or F64`, { file: found.file });
    }
    sourceDtypes.set(name, e.dtype === 'F64' ? 'F32' : e.dtype);
    tensors.push({ name, file: found.file, dtype: e.dtype, shape: e.shape, begin: e.begin, end: e.end });
  }
  if (minigpt4) tensors.push(...miniGpt4VisionTensors(minigpt4, config));
  const native = new addon.NativeModel();
  const onProgress = opts.onProgress;
  await withToken(opts.signal, (token) => native.load({
    config: {
      hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize, numLayers: config.numLayers,
      numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim, vocabSize: config.vocabSize,
      rmsNormEps: config.rmsNormEps, ropeTheta: config.ropeTheta, tieWordEmbeddings: config.tieWordEmbeddings,
      attentionBias: config.attentionBias, mlpBias: config.mlpBias,
    },
    llava: llava ? {
      vision: { ...llava.vision }, featureLayers: llava.featureLayers, keepCls: llava.selectStrategy === 'full',
      projectorAct: llava.projectorAct, projectorBias: llava.projectorBias, imageTokenId: llava.imageTokenId,
    } : undefined,
    minigpt4: minigpt4 ? {
      vision: { imageSize: minigpt4.vision.imageSize, patchSize: minigpt4.vision.patchSize, width: minigpt4.vision.embedDim,
        depth: minigpt4.vision.depth, numHeads: minigpt4.vision.numHeads, mlpHidden: minigpt4.vision.mlpHidden, normEps: minigpt4.vision.normEps },
      lnVisionEps: minigpt4.vision.lnVisionEps, tokensPerEmbedding: minigpt4.vision.tokensPerEmbedding, imageTokenId: config.vocabSize,
    } : undefined,
    device, dtype, tensors,
  }, token, onProgress ? (done, total) => onProgress({ stage: 'load', done, total }) : undefined)).catch((e) => {
    native.dispose();
    throw e;
  });
  const eos = [...new Set([...config.eosTokenIds, ...readGenerationEos(llmDir),
    ...(tokenizer.eosTokenId !== null ? [tokenizer.eosTokenId] : [])])];
  return new Model({ dir: minigpt4 ? path.dirname(path.resolve(minigpt4.file)) : path.resolve(dir), config, tokenizer, device, dtype, native, sourceDtypes, eosTokenIds: eos,
    llava, imagePreprocessing, storedNames, minigpt4 });
}

/** Blip2ImageEvalProcessor: a bicubic squash to the square size (no crop), /255, the mean and std. */
function miniGpt4Preprocessing(m: MiniGpt4Config): ImagePreprocessing {
  const S = m.visProcessor.imageSize;
  return { doResize: true, size: { height: S, width: S }, doCenterCrop: false, crop: { height: S, width: S },
    doRescale: true, rescaleFactor: 1 / 255, doNormalize: true, mean: m.visProcessor.mean, std: m.visProcessor.std, file: m.file };
}

/**
 * MiniGPT-4's image-side weights, as the addon names them: the ViT's from
 * eva_vit_g.pth ("visual_encoder.<key>"; the file's extra 40th block and any
 * other key the model does not build are skipped, as strict=False loading
 * does) and llama_proj from the stage-2 file's "model" dict (its other
 * entries, such as rotary inv_freq buffers, are not read).
 */
function miniGpt4VisionTensors(m: MiniGpt4Config, text: LlamaConfig): NativeTensorSource[] {
  const v = m.vision, D = v.embedDim;
  const grid = v.imageSize / v.patchSize;
  const expected: { name: string; shape: number[] }[] = [
    { name: 'cls_token', shape: [1, 1, D] }, { name: 'pos_embed', shape: [1, grid * grid + 1, D] },
    { name: 'patch_embed.proj.weight', shape: [D, 3, v.patchSize, v.patchSize] }, { name: 'patch_embed.proj.bias', shape: [D] },
  ];
  for (let i = 0; i < v.depth; i++) {
    const p = `blocks.${i}.`;
    expected.push({ name: `${p}norm1.weight`, shape: [D] }, { name: `${p}norm1.bias`, shape: [D] },
      { name: `${p}attn.q_bias`, shape: [D] }, { name: `${p}attn.v_bias`, shape: [D] }, { name: `${p}attn.qkv.weight`, shape: [3 * D, D] },
      { name: `${p}attn.proj.weight`, shape: [D, D] }, { name: `${p}attn.proj.bias`, shape: [D] },
      { name: `${p}norm2.weight`, shape: [D] }, { name: `${p}norm2.bias`, shape: [D] },
      { name: `${p}mlp.fc1.weight`, shape: [v.mlpHidden, D] }, { name: `${p}mlp.fc1.bias`, shape: [v.mlpHidden] },
      { name: `${p}mlp.fc2.weight`, shape: [D, v.mlpHidden] }, { name: `${p}mlp.fc2.bias`, shape: [D] });
  }
  const out: NativeTensorSource[] = [];
  const take = (entries: Map<string, TensorEntry>, file: string, name: string, shape: number[], ours: string, what: string): void => {
    const e = entries.get(name);
    if (!e) throw new NgateError('ERR_MISSING_TENSOR', `tensor ${name} is missing from ${what}`, { file });
    // The original resamples a position table of another square grid (interpolate_pos_embed); so does the addon.
    const resampled = name === 'pos_embed' && e.shape.length === 3 && e.shape[0] === 1 && e.shape[2] === D
      && Number.isInteger(Math.sqrt(e.shape[1] - 1)) && e.shape[1] > 1;
    if (!resampled && (e.shape.length !== shape.length || e.shape.some((s, i) => s !== shape[i]))) {
      throw new NgateError('ERR_CHECKPOINT', `tensor ${name} has shape [${e.shape}], the descriptor (${path.basename(m.file)}) implies [${shape}]`, { file });
    }
    if (!FLOAT_DTYPES.has(e.dtype)) throw new NgateError('ERR_CHECKPOINT', `tensor ${name} has dtype ${e.dtype}; weights must be floating point`, { file });
    out.push({ name: ours, file, dtype: e.dtype, shape: e.shape, begin: e.begin, end: e.end });
  };
  const vit = torchEntries(m.vitCheckpoint);
  for (const { name, shape } of expected) take(vit, m.vitCheckpoint, name, shape, `visual_encoder.${name}`, 'the EVA ViT checkpoint');
  const stage2 = torchEntries(m.ckpt, ['model']);
  const H = text.hiddenSize;
  take(stage2, m.ckpt, 'llama_proj.weight', [H, D * v.tokensPerEmbedding], 'llama_proj.weight', 'the stage-2 checkpoint\'s "model" dict (MiniGPT-4\'s projector)');
  take(stage2, m.ckpt, 'llama_proj.bias', [H], 'llama_proj.bias', 'the stage-2 checkpoint\'s "model" dict (MiniGPT-4\'s projector)');
  return out;
}
