import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { NgateError } from '../lib/util/errors';
import { parseLlamaConfig, readLlamaConfig, serializeConfig } from '../lib/model/config';

const FILE = 'config.json';

/** The shape of meta-llama/Llama-2-7b-hf's config as written by transformers 4.x. */
function legacyConfig(): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    vocab_size: 32000,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    rope_scaling: null,
    hidden_act: 'silu',
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: null,
    torch_dtype: 'float16',
    transformers_version: '4.31.0',
  };
}

/** The same model as transformers 5 writes it: RoPE settings in rope_parameters, `dtype` instead of `torch_dtype`. */
function v5Config(): Record<string, unknown> {
  const { rope_theta: _t, rope_scaling: _s, torch_dtype: _d, ...rest } = legacyConfig();
  return { ...rest, rope_parameters: { rope_theta: 500000.0, rope_type: 'default' }, dtype: 'bfloat16', transformers_version: '5.0.0' };
}

function minimalConfig(): Record<string, unknown> {
  return { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 };
}

function configError(json: unknown): NgateError {
  try {
    parseLlamaConfig(json, FILE);
  } catch (e) {
    expect(e).toBeInstanceOf(NgateError);
    const err = e as NgateError;
    expect(err.code).toBe('ERR_CONFIG');
    expect(err.file).toBe(FILE);
    expect(err.message.startsWith(`${FILE}: `)).toBe(true);
    return err;
  }
  throw new Error('expected an error');
}

describe('parseLlamaConfig', () => {
  it('reads a transformers 4 config (top-level rope_theta, torch_dtype)', () => {
    const cfg = parseLlamaConfig(legacyConfig(), FILE);
    expect(cfg).toMatchObject({
      modelType: 'llama', hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKvHeads: 32,
      headDim: 128, rmsNormEps: 1e-5, ropeTheta: 10000, vocabSize: 32000, maxPositionEmbeddings: 4096,
      tieWordEmbeddings: false, attentionBias: false, mlpBias: false, hiddenAct: 'silu',
      bosTokenId: 1, eosTokenIds: [2], padTokenId: null, dtype: 'float16',
    });
    expect(cfg.raw).toEqual(legacyConfig());
  });

  it('reads a transformers 5 config (rope_parameters, dtype)', () => {
    const cfg = parseLlamaConfig(v5Config(), FILE);
    expect(cfg.ropeTheta).toBe(500000);
    expect(cfg.dtype).toBe('bfloat16');
    expect(cfg.headDim).toBe(128);
  });

  it('fills in defaults for absent optional fields', () => {
    const cfg = parseLlamaConfig(minimalConfig(), FILE);
    expect(cfg).toMatchObject({
      numKvHeads: 4, headDim: 16, rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false, attentionBias: false, mlpBias: false, hiddenAct: 'silu',
      bosTokenId: null, eosTokenIds: [], padTokenId: null, dtype: null,
    });
  });

  it('accepts eos_token_id as an array', () => {
    expect(parseLlamaConfig({ ...minimalConfig(), eos_token_id: [2, 32000] }, FILE).eosTokenIds).toEqual([2, 32000]);
  });

  it('accepts grouped-query attention when the KV heads divide the heads', () => {
    const cfg = parseLlamaConfig({ ...minimalConfig(), num_attention_heads: 8, num_key_value_heads: 2 }, FILE);
    expect(cfg.numKvHeads).toBe(2);
    expect(cfg.headDim).toBe(8);
  });

  it('rejects KV heads that do not divide the heads', () => {
    const err = configError({ ...minimalConfig(), num_attention_heads: 8, num_key_value_heads: 3 });
    expect(err.field).toBe('num_key_value_heads');
    expect(err.message).toMatch(/num_key_value_heads.*must divide num_attention_heads \(8\), got 3/);
  });

  it('uses head_dim when given, even if it differs from hidden_size / heads', () => {
    expect(parseLlamaConfig({ ...minimalConfig(), head_dim: 32 }, FILE).headDim).toBe(32);
    expect(parseLlamaConfig({ ...minimalConfig(), head_dim: null }, FILE).headDim).toBe(16);
  });

  it('rejects heads that do not divide hidden_size when head_dim is absent', () => {
    const err = configError({ ...minimalConfig(), num_attention_heads: 5 });
    expect(err.message).toMatch(/num_attention_heads.*must divide hidden_size \(64\)/);
  });

  it('rejects model types other than llama, naming the supported one', () => {
    const err = configError({ ...minimalConfig(), model_type: 'mistral' });
    expect(err.field).toBe('model_type');
    expect(err.message).toMatch(/"mistral".*supported: llama/);
  });

  it('refuses a llava file and points to parseModelConfig, which reads it', () => {
    expect(configError({ ...minimalConfig(), model_type: 'llava' }).message).toMatch(/"llava": read this file with parseModelConfig/);
  });

  it('rejects a missing model_type', () => {
    const { model_type: _m, ...rest } = minimalConfig();
    expect(configError(rest).field).toBe('model_type');
  });

  it.each([
    ['num_attention_heads', 'x', /field "num_attention_heads": must be a positive integer, got "x"/],
    ['hidden_size', 0, /field "hidden_size": must be a positive integer, got 0/],
    ['num_hidden_layers', 2.5, /field "num_hidden_layers": must be a positive integer, got 2.5/],
    ['vocab_size', undefined, /field "vocab_size": is required/],
    ['rms_norm_eps', '1e-5', /field "rms_norm_eps": must be a positive number, got "1e-5"/],
    ['tie_word_embeddings', 'false', /field "tie_word_embeddings": must be true or false, got "false"/],
    ['hidden_act', 'gelu', /field "hidden_act": activation "gelu" is not supported/],
    ['eos_token_id', [2, 'x'], /field "eos_token_id": must be a non-negative integer token id, got "x"/],
    ['bos_token_id', -3, /field "bos_token_id": must be a non-negative integer token id, got -3/],
    ['torch_dtype', 'float64', /field "torch_dtype": unsupported dtype "float64"/],
    ['rope_scaling', { rope_type: 'linear', factor: 2 }, /field "rope_scaling": rope scaling type "linear" is not supported/],
    ['rope_parameters', { rope_type: 'llama3', rope_theta: 500000 }, /field "rope_parameters.rope_type": rope scaling type "llama3" is not supported/],
    ['rope_parameters', { rope_theta: 'big' }, /field "rope_parameters.rope_theta": must be a positive number, got "big"/],
  ])('rejects a bad %s (%j), naming the field and value', (field, value, reason) => {
    const json: Record<string, unknown> = { ...minimalConfig(), [field]: value };
    if (value === undefined) delete json[field];
    const err = configError(json);
    expect(err.field).toEqual(field === 'rope_parameters' ? expect.stringMatching(/^rope_parameters\./) : field);
    expect(err.message).toMatch(reason);
  });

  it('rejects a config that is not a JSON object', () => {
    expect(configError([1, 2]).message).toMatch(/must contain a JSON object/);
  });

  it('rejects torch_dtype and dtype that disagree', () => {
    expect(configError({ ...minimalConfig(), torch_dtype: 'float16', dtype: 'bfloat16' }).message).toMatch(/agree/);
  });
});

describe('readLlamaConfig', () => {
  let dir: string;
  beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngate-')); });
  afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  it('reads dir/config.json', () => {
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(legacyConfig()));
    expect(readLlamaConfig(dir).numLayers).toBe(32);
  });

  it('reports a missing config.json as ERR_MISSING_FILE naming the path', () => {
    const empty = fs.mkdtempSync(path.join(dir, 'empty-'));
    const file = path.join(empty, 'config.json');
    expect(() => readLlamaConfig(empty)).toThrow(expect.objectContaining({ code: 'ERR_MISSING_FILE', file }));
  });

  it('reports bad JSON as ERR_CONFIG naming the path', () => {
    const bad = fs.mkdtempSync(path.join(dir, 'bad-'));
    const file = path.join(bad, 'config.json');
    fs.writeFileSync(file, '{"model_type": "llama",');
    expect(() => readLlamaConfig(bad)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG', file }));
    expect(() => readLlamaConfig(bad)).toThrow(/invalid JSON/);
  });
});

describe('serializeConfig', () => {
  it('writes the dtype back under torch_dtype for a transformers 4 file, keeping everything else', () => {
    const out = serializeConfig(parseLlamaConfig(legacyConfig(), FILE), { dtype: 'bfloat16' });
    expect(JSON.parse(out)).toEqual({ ...legacyConfig(), torch_dtype: 'bfloat16' });
    expect(out).toMatch(/^\{\n {2}"architectures"/);
    expect(out.endsWith('}\n')).toBe(true);
  });

  it('writes the dtype back under dtype for a transformers 5 file', () => {
    const parsed = JSON.parse(serializeConfig(parseLlamaConfig(v5Config(), FILE), { dtype: 'float32' }));
    expect(parsed.dtype).toBe('float32');
    expect(parsed).not.toHaveProperty('torch_dtype');
  });

  it('updates both keys when the file has both', () => {
    const cfg = parseLlamaConfig({ ...minimalConfig(), torch_dtype: 'float16', dtype: 'float16' }, FILE);
    const parsed = JSON.parse(serializeConfig(cfg, { dtype: 'bfloat16' }));
    expect([parsed.torch_dtype, parsed.dtype]).toEqual(['bfloat16', 'bfloat16']);
  });

  it('adds torch_dtype when the file had neither key', () => {
    const parsed = JSON.parse(serializeConfig(parseLlamaConfig(minimalConfig(), FILE), { dtype: 'float16' }));
    expect(parsed.torch_dtype).toBe('float16');
    expect(parsed).not.toHaveProperty('dtype');
  });

  it('leaves the config unchanged without overrides and does not mutate raw', () => {
    const cfg = parseLlamaConfig(legacyConfig(), FILE);
    expect(JSON.parse(serializeConfig(cfg))).toEqual(legacyConfig());
    serializeConfig(cfg, { dtype: 'float32' });
    expect(cfg.raw.torch_dtype).toBe('float16');
  });
});
