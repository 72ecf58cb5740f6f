// Declarations of the native addon (ngate.node, built by scripts/addon.js).
// Only plain JavaScript values cross this boundary: no libtorch type leaks.

export interface NativeInfo {
  torchVersion: string;
  cuda: boolean;
  cudaDevices: number;
  fusedAttention: boolean;
  cxx11Abi: number;
  threads: number;
}

export interface NativeCancelToken {
  cancel(): void;
  readonly cancelled: boolean;
}

export interface NativeLlamaConfig {
  hiddenSize: number; intermediateSize: number; numLayers: number; numHeads: number; numKvHeads: number;
  headDim: number; vocabSize: number; rmsNormEps: number; ropeTheta: number;
  tieWordEmbeddings: boolean; attentionBias: boolean; mlpBias: boolean;
}

export interface NativeTensorSource {
  name: string; file: string; dtype: string; shape: number[];
  begin: number; end: number; // absolute byte range in `file`
}

/** LLaVA's vision side: the CLIP tower, the feature layers and the projector. */
export interface NativeLlavaConfig {
  vision: {
    hiddenSize: number; intermediateSize: number; numLayers: number; numHeads: number; numChannels: number;
    imageSize: number; patchSize: number; layerNormEps: number; hiddenAct: string;
  };
  featureLayers: number[]; keepCls: boolean; projectorAct: string; projectorBias: boolean; imageTokenId: number;
}

/** MiniGPT-4's image side: the EVA ViT, ln_vision, the grouping of patch tokens and llama_proj. */
export interface NativeMiniGpt4Config {
  vision: { imageSize: number; patchSize: number; width: number; depth: number; numHeads: number; mlpHidden: number; normEps: number };
  lnVisionEps: number; tokensPerEmbedding: number; imageTokenId: number;
}

/**
 * The preprocessed images of one call: `count` images of channels × size × size
 * float32 values, channels first; `rows[b]` is the image of batch row b (-1: none).
 */
export interface NativeImages { pixels: Float32Array; count: number; channels: number; size: number; rows?: Int32Array; }

export interface NativeLoadSpec {
  config: NativeLlamaConfig;
  llava?: NativeLlavaConfig;
  minigpt4?: NativeMiniGpt4Config;
  device: string;
  dtype: 'float32' | 'float16' | 'bfloat16';
  tensors: NativeTensorSource[];
}

export type NativeProgress = (done: number, total: number) => void;

export interface NativeGenerateOptions {
  maxNewTokens: number; eosIds: number[]; padId: number; keepLogits: boolean;
  /** 0 or absent: greedy. */
  temperature?: number; topK?: number; topP?: number; repetitionPenalty?: number; seed?: number;
  /** One flag per prompt, set by the caller while the call runs to stop that row (a stop string was seen). */
  stopRows?: Uint8Array;
}
export interface NativeGenerateResult {
  tokens: Int32Array[];
  stoppedAtEos: boolean[];
  stoppedByCaller: boolean[];
  logits?: Float32Array; // [B, steps, V] when keepLogits
  steps?: number;
}

export interface NativeParameterInfo { name: string; dtype: string; shape: number[]; }

/** One query with its target answer, as token ids (see lib/data/prepare.ts). */
export interface NativeSequence { ids: Int32Array; subjectPositions: Int32Array; answerStart: number; image?: number; }
export interface NativePair { sensitive: NativeSequence; benign: NativeSequence; }

export interface NativeMaskOptions {
  layers: number[]; hookPoint: 'ffn' | 'block'; alpha: number; l1: number; lr: number; steps: number;
  batchSize: number; padId: number; reuseLowerLayers?: boolean; reusePrefix?: boolean;
}
export interface NativeEditOptions {
  layers: number[]; params: string[]; gated: boolean; keep?: Uint8Array; // [layers, hiddenSize] when gated
  epochs: number; lr: number; alpha: number; batchSize: number; padId: number;
  reuseLowerLayers?: boolean;
  /** Data-parallel only: compare the weights across ranks every this many steps (0: first and last only). */
  checkEvery?: number;
  /** DINM's settings (see native/method/gated_edit.h); absent: eq. 7's edit. */
  sensitiveWeight?: number; benignLoss?: 'ce' | 'kl'; klGradient?: boolean; stepsPerBatch?: number;
  freshOptimizerPerBatch?: boolean; stopBelow?: number; normConstraint?: number;
}

/** What native/dist needs to join a c10d process group (lib/dist/ fills it from torchrun's environment). */
export interface NativeGroupOptions {
  rank: number; size: number; backend: 'gloo' | 'nccl';
  /** FileStore rendezvous at this path; else a TCPStore at host:port. */
  file?: string; host?: string; port?: number;
  /** Whether this rank hosts the TCPStore (default: rank 0). */
  storeServer?: boolean;
  prefix?: string;
  timeoutMs: number; storeTimeoutMs: number;
  /** Gloo's network device: an interface name, or a host name or address to bind. */
  interface?: string; bindHost?: string;
  cudaDevice?: number;
}

export type NativeReducible = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

/** One c10d process group; every call is a job on the addon's worker thread, in call order. */
export interface NativeProcessGroup {
  init(options: NativeGroupOptions): Promise<void>;
  /** A new array of the same kind holding the reduction over the ranks. */
  allreduce<T extends NativeReducible>(data: T, op: 'sum' | 'max' | 'min'): Promise<T>;
  destroy(): Promise<void>;
  /** True once a collective has failed: the group cannot be used again. */
  readonly failed: boolean;
}
export interface NativeEditResult { epochLosses: number[]; stepLosses: Float64Array; }
export interface NativeFfnProbe {
  x: Float32Array; g: Float32Array; u: Float32Array; delta: Float32Array; subject: Uint8Array;
  rows: number; length: number;
}

export interface NativeModel {
  load(spec: NativeLoadSpec, token?: NativeCancelToken, onProgress?: NativeProgress): Promise<void>;
  forward(ids: Int32Array, mask: Uint8Array, batch: number, length: number, lastOnly: boolean,
    token?: NativeCancelToken, images?: NativeImages): Promise<Float32Array>;
  generate(prompts: Int32Array[], options: NativeGenerateOptions, token?: NativeCancelToken,
    onProgress?: NativeProgress, images?: NativeImages,
    onTokens?: (step: number, ids: Int32Array) => void): Promise<NativeGenerateResult>;
  parameters(): NativeParameterInfo[];
  writeTensors(path: string, header: Uint8Array, names: string[], dtypes: string[],
    token?: NativeCancelToken): Promise<void>;
  learnMasks(pairs: NativePair[], options: NativeMaskOptions, token?: NativeCancelToken,
    onProgress?: NativeProgress, images?: NativeImages): Promise<{ masks: Float32Array; losses: Float32Array }>;
  maskedLogits(sequences: NativeSequence[], layers: number[], hookPoint: 'ffn' | 'block', masks: Float32Array,
    padId: number, images?: NativeImages): Promise<Float32Array>;
  gatedEdit(pairs: NativePair[], options: NativeEditOptions, token?: NativeCancelToken,
    onProgress?: NativeProgress, images?: NativeImages, group?: NativeProcessGroup): Promise<NativeEditResult>;
  /** DINM's layer distances: per pair, per decoder layer, between the hidden states of answers a and b. */
  answerDistances(answers: { a: Int32Array; b: Int32Array }[], token?: NativeCancelToken,
    onProgress?: NativeProgress): Promise<Float64Array>;
  editGradients(pairs: NativePair[], options: NativeEditOptions, images?: NativeImages): Promise<Float32Array[]>;
  probeFfn(pairs: NativePair[], layer: number, alpha: number, padId: number): Promise<NativeFfnProbe>;
  snapshotFfn(layers: number[]): Promise<number>;
  trainLm(sequences: NativeSequence[], options: { epochs: number; lr: number; weightDecay?: number; batchSize: number;
    warmupSteps?: number; seed: number; padId: number }, token?: NativeCancelToken, onProgress?: NativeProgress): Promise<{ losses: number[] }>;
  restoreFfn(id: number, drop: boolean): Promise<void>;
  dispose(): void;
  readonly disposed: boolean;
  readonly parameterBytes: number;
}

export interface NativeAddon {
  NativeModel: new () => NativeModel;
  CancelToken: new () => NativeCancelToken;
  NativeProcessGroup: new () => NativeProcessGroup;
  /** The c10d backends this build was compiled with. */
  distBackends(): { gloo: boolean; nccl: boolean };
  info(): NativeInfo;
  setAttentionKernel(kernel: 'auto' | 'explicit'): void;
  /** The explicit attention path's largest piece of scores in bytes (0: the whole batch at once). */
  setAttentionChunkBytes(bytes: number): void;
  /** libtorch's intra-op threads for the work (set on the worker thread); resolves to the count now in effect. */
  setThreads(n: number): Promise<number>;
  /** Native models alive in this process. */
  liveModels(): number;
}
