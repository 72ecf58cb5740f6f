import * as fs from 'fs';
import * as path from 'path';
import { readSafetensorsHeader, readSafetensorsTensor } from '../lib/model/safetensors';
import {
  FixtureDtype, TinyLlama, fromBf16, fromF16, makeTempDir, toBf16Bytes, toF16Bytes, writeTinyLlama,
} from './fixtures/checkpoint';
import { referenceLogits } from './reference/llama-ref';

const dirs: string[] = [];
function tmp(): string {
  const d = makeTempDir('ngate-ref-');
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}

function expectedNames(layers: number, tied: boolean): string[] {
  const names = ['model.embed_tokens.weight', 'model.norm.weight'];
  for (let i = 0; i < layers; i++) {
    for (const s of [
      'input_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj',
      'post_attention_layernorm', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj',
    ]) names.push(`model.layers.${i}.${s}.weight`);
  }
  if (!tied) names.push('lm_head.weight');
  return names.sort();
}

function decode(dtype: string, bytes: Uint8Array): Float32Array {
  if (dtype === 'F32') return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  if (dtype === 'BF16') return fromBf16(bytes);
  if (dtype === 'F16') return fromF16(bytes);
  throw new Error(`unexpected dtype ${dtype}`);
}

/** Every tensor in the safetensors file(s) of `dir`, decoded. */
function readAll(dir: string): Map<string, { dtype: string; shape: number[]; data: Float32Array; file: string }> {
  const out = new Map<string, { dtype: string; shape: number[]; data: Float32Array; file: string }>();
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors')).sort()) {
    const header = readSafetensorsHeader(path.join(dir, f));
    expect(header.metadata).toEqual({ format: 'pt' });
    for (const e of header.tensors.values()) {
      expect(out.has(e.name)).toBe(false);
      out.set(e.name, { dtype: e.dtype, shape: e.shape, data: decode(e.dtype, readSafetensorsTensor(header.file, e)), file: f });
    }
  }
  return out;
}

describe('writeTinyLlama', () => {
  test('v4 single-file checkpoint: config, tokenizer, tensors as stored', () => {
    const dir = tmp();
    const m = writeTinyLlama(dir);
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

    const cfg = readJson(path.join(dir, 'config.json'));
    expect(cfg).toEqual(m.config);
    expect(cfg).toMatchObject({
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 32, intermediate_size: 64,
      num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 4, rms_norm_eps: 1e-6,
      rope_theta: 10000, rope_scaling: null, torch_dtype: 'float32', tie_word_embeddings: false,
      hidden_act: 'silu', attention_bias: false, mlp_bias: false, pad_token_id: null, use_cache: true, pretraining_tp: 1,
    });
    for (const k of ['bos_token_id', 'eos_token_id', 'vocab_size', 'max_position_embeddings', 'initializer_range', 'transformers_version']) {
      expect(cfg).toHaveProperty(k);
    }
    for (const k of ['head_dim', 'rope_parameters', 'dtype']) expect(cfg).not.toHaveProperty(k);
    expect(Object.keys(cfg)).toEqual(Object.keys(cfg).sort());
    const V = cfg.vocab_size as number;
    expect(V).toBeGreaterThan(2);
    expect(V).toBeLessThanOrEqual(1024);

    const files = readAll(dir);
    expect([...files.keys()].sort()).toEqual(expectedNames(2, false));
    expect([...m.tensors.keys()].sort()).toEqual(expectedNames(2, false));
    expect(files.get('model.embed_tokens.weight')!.shape).toEqual([V, 32]);
    expect(files.get('lm_head.weight')!.shape).toEqual([V, 32]);
    expect(files.get('model.layers.1.self_attn.q_proj.weight')!.shape).toEqual([32, 32]);
    expect(files.get('model.layers.1.mlp.down_proj.weight')!.shape).toEqual([32, 64]);
    expect(files.get('model.layers.0.mlp.gate_proj.weight')!.shape).toEqual([64, 32]);
    expect(files.get('model.norm.weight')!.shape).toEqual([32]);
    for (const [name, t] of files) {
      expect(t.dtype).toBe('F32');
      expect(m.tensors.get(name)!.shape).toEqual(t.shape);
      expect(m.tensors.get(name)!.data).toEqual(t.data);
    }
    // Norms are near 1, matrices near 0 with std ~ weightScale.
    const norm = m.tensors.get('model.norm.weight')!.data;
    expect(Math.max(...norm.map((x) => Math.abs(x - 1)))).toBeLessThan(0.5);
    const emb = m.tensors.get('model.embed_tokens.weight')!.data;
    const std = Math.sqrt(emb.reduce((a, x) => a + x * x, 0) / emb.length);
    expect(std).toBeGreaterThan(0.04);
    expect(std).toBeLessThan(0.06);
  });

  test('v5 config style, GQA and explicit head_dim', () => {
    const dir = tmp();
    const m = writeTinyLlama(dir, {
      configStyle: 'v5', numHeads: 4, numKvHeads: 2, headDim: 16, hiddenSize: 24, ropeTheta: 500000,
      vocabSize: 50, tokenizer: false, numLayers: 1,
    });
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors']);
    const cfg = readJson(path.join(dir, 'config.json'));
    expect(cfg).toMatchObject({
      rope_parameters: { rope_theta: 500000, rope_type: 'default' }, dtype: 'float32', head_dim: 16,
      num_key_value_heads: 2, vocab_size: 50, hidden_size: 24,
    });
    for (const k of ['rope_theta', 'torch_dtype', 'rope_scaling']) expect(cfg).not.toHaveProperty(k);
    expect(cfg.transformers_version).toMatch(/^5\./);
    const files = readAll(dir);
    expect(files.get('model.layers.0.self_attn.q_proj.weight')!.shape).toEqual([64, 24]);
    expect(files.get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([32, 24]);
    expect(files.get('model.layers.0.self_attn.v_proj.weight')!.shape).toEqual([32, 24]);
    expect(files.get('model.layers.0.self_attn.o_proj.weight')!.shape).toEqual([24, 64]);
    expect(m.tensors.get('model.embed_tokens.weight')!.shape).toEqual([50, 24]);
  });

  test('tied embeddings write no lm_head', () => {
    const dir = tmp();
    const m = writeTinyLlama(dir, { tieWordEmbeddings: true, tokenizer: false });
    expect(m.config.tie_word_embeddings).toBe(true);
    expect(m.tensors.has('lm_head.weight')).toBe(false);
    expect([...readAll(dir).keys()].sort()).toEqual(expectedNames(2, true));
  });

  test.each([2, 3, 5])('%i shards: index consistent with the shard files', (n) => {
    const dir = tmp();
    const m = writeTinyLlama(dir, { shards: n, dtype: 'bfloat16', tokenizer: false });
    const pad = (k: number) => String(k).padStart(5, '0');
    const shardFiles = Array.from({ length: n }, (_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`);
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors.index.json', ...shardFiles].sort());

    const index = readJson(path.join(dir, 'model.safetensors.index.json')) as {
      metadata: { total_size: number }; weight_map: Record<string, string>;
    };
    const files = readAll(dir);
    expect(Object.keys(index.weight_map).sort()).toEqual([...files.keys()].sort());
    let bytes = 0;
    for (const [name, t] of files) {
      expect(index.weight_map[name]).toBe(t.file);
      expect(t.dtype).toBe('BF16');
      bytes += 2 * t.shape.reduce((a, b) => a * b, 1);
      expect(m.tensors.get(name)!.data).toEqual(t.data);
    }
    expect(index.metadata).toEqual({ total_size: bytes });
    for (const f of shardFiles) expect(Object.values(index.weight_map)).toContain(f);
  });

  test('v5 sharded index also records total_parameters, as transformers 5 does', () => {
    const dir = tmp();
    const m = writeTinyLlama(dir, { shards: 2, configStyle: 'v5', dtype: 'float16', tokenizer: false });
    const index = readJson(path.join(dir, 'model.safetensors.index.json')) as { metadata: Record<string, number> };
    const params = [...m.tensors.values()].reduce((a, t) => a + t.data.length, 0);
    expect(index.metadata).toEqual({ total_parameters: params, total_size: 2 * params });
  });

  test.each<[FixtureDtype, string]>([['bfloat16', 'BF16'], ['float16', 'F16']])('%s values are stored rounded and decoded back', (dtype, st) => {
    const m32 = writeTinyLlama(tmp(), { tokenizer: false, seed: 7 });
    const dir = tmp();
    const m = writeTinyLlama(dir, { tokenizer: false, seed: 7, dtype });
    expect(m.config.torch_dtype).toBe(dtype);
    const files = readAll(dir);
    let differs = false;
    for (const [name, t] of files) {
      expect(t.dtype).toBe(st);
      const stored = m.tensors.get(name)!.data;
      expect(stored).toEqual(t.data);
      const full = m32.tensors.get(name)!.data;
      // Rounding moves each value by at most half an ulp (relative 2^-8 for bf16, 2^-11 for f16, plus f16 subnormals).
      const tol = dtype === 'bfloat16' ? 2 ** -8 : 2 ** -11;
      let bad = 0;
      for (let i = 0; i < full.length; i++) {
        if (Math.abs(stored[i] - full[i]) > tol * Math.abs(full[i]) + 2 ** -25) bad++;
        if (stored[i] !== full[i]) differs = true;
      }
      expect(bad).toBe(0);
    }
    expect(differs).toBe(true);
  });

  test('seeded and deterministic', () => {
    const a = writeTinyLlama(tmp(), { tokenizer: false, seed: 3 });
    const b = writeTinyLlama(tmp(), { tokenizer: false, seed: 3 });
    const c = writeTinyLlama(tmp(), { tokenizer: false, seed: 4 });
    const name = 'model.layers.0.self_attn.q_proj.weight';
    expect(a.tensors.get(name)!.data).toEqual(b.tensors.get(name)!.data);
    expect(a.tensors.get(name)!.data).not.toEqual(c.tensors.get(name)!.data);
    // Tensors are independent streams: tying does not change the other weights.
    const tied = writeTinyLlama(tmp(), { tokenizer: false, seed: 3, tieWordEmbeddings: true });
    expect(tied.tensors.get(name)!.data).toEqual(a.tensors.get(name)!.data);
  });

  test('rejects inconsistent shapes', () => {
    expect(() => writeTinyLlama(tmp(), { tokenizer: false, numHeads: 4, numKvHeads: 3 })).toThrow(/multiple/);
    expect(() => writeTinyLlama(tmp(), { tokenizer: false, hiddenSize: 30, numHeads: 4 })).toThrow(/headDim/);
  });
});

describe('half-precision conversions', () => {
  const f16 = (xs: number[]) => Array.from(fromF16(toF16Bytes(xs)));
  const bf16 = (xs: number[]) => Array.from(fromBf16(toBf16Bytes(xs)));

  test('exact values round trip', () => {
    const exact = [0, 1, -2.5, 0.5, 1024, -0.15625];
    expect(f16(exact)).toEqual(exact);
    expect(bf16(exact)).toEqual(exact);
    expect(f16([65504])).toEqual([65504]);
    expect(Object.is(f16([-0])[0], -0)).toBe(true);
    expect(Object.is(bf16([-0])[0], -0)).toBe(true);
  });

  test('byte layout is little-endian', () => {
    expect(Array.from(toF16Bytes([1]))).toEqual([0x00, 0x3c]);
    expect(Array.from(toF16Bytes([-2.5]))).toEqual([0x00, 0xc1]);
    expect(Array.from(toF16Bytes([65504]))).toEqual([0xff, 0x7b]);
    expect(Array.from(toBf16Bytes([1]))).toEqual([0x80, 0x3f]);
    expect(Array.from(toBf16Bytes([-2.5]))).toEqual([0x20, 0xc0]);
  });

  test('f16 overflow, subnormals, underflow', () => {
    expect(f16([65519, 65520, -70000, Infinity])).toEqual([65504, Infinity, -Infinity, Infinity]);
    expect(f16([2 ** -24, 2 ** -14, 3 * 2 ** -24])).toEqual([2 ** -24, 2 ** -14, 3 * 2 ** -24]);
    expect(f16([1e-8])).toEqual([0]); // below half the smallest subnormal
    expect(f16([1e-7])).toEqual([2 * 2 ** -24]); // 1.68 ulps → 2
    expect(f16([2 ** -25, 3 * 2 ** -25, 2 ** -25 + 2 ** -40])).toEqual([0, 2 * 2 ** -24, 2 ** -24]); // ties to even
    expect(f16([2 ** -14 - 2 ** -26])).toEqual([2 ** -14]); // rounds up into the smallest normal
    expect(Number.isNaN(f16([NaN])[0])).toBe(true);
  });

  test('round to nearest, ties to even', () => {
    // f16 has 10 mantissa bits: ulp(1) = 2^-10.
    expect(f16([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -11 + 2 ** -20])).toEqual([1, 1 + 2 ** -9, 1 + 2 ** -10]);
    // bf16 has 7 mantissa bits: ulp(1) = 2^-7.
    expect(bf16([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20])).toEqual([1, 1 + 2 ** -6, 1 + 2 ** -7]);
    expect(bf16([65504, -2.5])).toEqual([65536, -2.5]);
    expect(Math.abs(bf16([1e-8])[0] - 1e-8)).toBeLessThan(1e-8 * 2 ** -8);
    expect(bf16([3.4e38 * 1.0001])).toEqual([Infinity]); // beyond float32 range
    expect(Number.isNaN(bf16([NaN])[0])).toBe(true);
  });
});

describe('referenceLogits', () => {
  /** Independent expectation for a model whose blocks add nothing: final_norm(embedding) @ head^T. */
  function normEmbeddingLogits(m: TinyLlama, ids: number[]): Float64Array {
    const H = m.config.hidden_size as number;
    const V = m.config.vocab_size as number;
    const eps = m.config.rms_norm_eps as number;
    const emb = m.tensors.get('model.embed_tokens.weight')!.data;
    const head = (m.tensors.get('lm_head.weight') ?? m.tensors.get('model.embed_tokens.weight')!).data;
    const w = m.tensors.get('model.norm.weight')!.data;
    const out = new Float64Array(ids.length * V);
    ids.forEach((id, t) => {
      const x = Array.from(emb.subarray(id * H, id * H + H));
      const rms = Math.sqrt(x.reduce((a, v) => a + v * v, 0) / H + eps);
      const y = x.map((v, i) => w[i] * (v / rms));
      for (let r = 0; r < V; r++) {
        let s = 0;
        for (let i = 0; i < H; i++) s += head[r * H + i] * y[i];
        out[t * V + r] = s;
      }
    });
    return out;
  }

  const zeroOut = (name: string, _shape: number[], init: Float32Array) =>
    /o_proj|down_proj/.test(name) ? new Float32Array(init.length) : undefined;

  test.each([false, true])('zero output projections give norm(embedding) @ head^T (tied=%s)', (tied) => {
    const m = writeTinyLlama(tmp(), { numLayers: 1, tokenizer: false, vocabSize: 40, tieWordEmbeddings: tied, tensorOverride: zeroOut, seed: 11 });
    expect(m.tensors.get('model.layers.0.self_attn.o_proj.weight')!.data.every((x) => x === 0)).toBe(true);
    const ids = [1, 5, 39, 5, 0];
    const got = referenceLogits(m, ids);
    const want = normEmbeddingLogits(m, ids);
    expect(got.length).toBe(ids.length * 40);
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-12 * (1 + Math.abs(want[i])));
    // Scaling the output layers back on changes the result, so the test above is not vacuous.
    const full = writeTinyLlama(tmp(), { numLayers: 1, tokenizer: false, vocabSize: 40, tieWordEmbeddings: tied, seed: 11 });
    expect(Math.max(...referenceLogits(full, ids).map((v, i) => Math.abs(v - want[i])))).toBeGreaterThan(1e-4);
  });

  test('is causal: logits at t ignore later tokens', () => {
    const m = writeTinyLlama(tmp(), { tokenizer: false, vocabSize: 64, numKvHeads: 2, weightScale: 0.2, seed: 5 });
    const V = 64;
    const a = referenceLogits(m, [3, 17, 42, 8, 9]);
    const b = referenceLogits(m, [3, 17, 42, 60, 1]);
    const c = referenceLogits(m, [3, 17, 42]);
    expect(Array.from(a.subarray(0, 3 * V))).toEqual(Array.from(b.subarray(0, 3 * V)));
    expect(Array.from(a.subarray(0, 3 * V))).toEqual(Array.from(c));
    expect(Array.from(a.subarray(3 * V, 4 * V))).not.toEqual(Array.from(b.subarray(3 * V, 4 * V)));
    // Earlier tokens do matter (attention mixes positions).
    const d = referenceLogits(m, [4, 17, 42]);
    expect(Array.from(d.subarray(2 * V))).not.toEqual(Array.from(c.subarray(2 * V)));
  });

  test('grouped-query attention equals full attention with repeated kv heads', () => {
    const gqa = writeTinyLlama(tmp(), { tokenizer: false, vocabSize: 32, numHeads: 4, numKvHeads: 2, weightScale: 0.3, seed: 9 });
    const H = 32;
    const hd = 8;
    // Expand k/v [2*hd, H] to [4*hd, H]: query head h uses kv head floor(h / 2).
    const mha: TinyLlama = { dir: gqa.dir, config: { ...gqa.config, num_key_value_heads: 4 }, tensors: new Map(gqa.tensors) };
    for (const l of [0, 1]) {
      for (const p of ['k_proj', 'v_proj']) {
        const name = `model.layers.${l}.self_attn.${p}.weight`;
        const src = gqa.tensors.get(name)!.data;
        const dst = new Float32Array(4 * hd * H);
        for (let h = 0; h < 4; h++) dst.set(src.subarray(Math.floor(h / 2) * hd * H, (Math.floor(h / 2) + 1) * hd * H), h * hd * H);
        mha.tensors.set(name, { shape: [4 * hd, H], data: dst });
      }
    }
    const ids = [2, 9, 31, 4];
    const a = referenceLogits(gqa, ids);
    const b = referenceLogits(mha, ids);
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i], 12);
  });

  test('rope: position 0 is unrotated, later positions use rope_theta (v4 or v5 key)', () => {
    // With T = 1 the only position is 0, so rope_theta cannot matter.
    const base = writeTinyLlama(tmp(), { tokenizer: false, vocabSize: 32, seed: 2, weightScale: 0.3 });
    const other: TinyLlama = { ...base, config: { ...base.config, rope_theta: 77 } };
    expect(Array.from(referenceLogits(base, [7]))).toEqual(Array.from(referenceLogits(other, [7])));
    // With two tokens it must.
    const a = referenceLogits(base, [7, 3]);
    const b = referenceLogits(other, [7, 3]);
    expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeGreaterThan(1e-6);
    // v5-style rope_parameters is read too.
    const { rope_theta: _t, rope_scaling: _s, ...rest } = base.config;
    const v5: TinyLlama = { ...base, config: { ...rest, rope_parameters: { rope_theta: 77, rope_type: 'default' } } };
    expect(Array.from(referenceLogits(v5, [7, 3]))).toEqual(Array.from(b));
  });

  test('rejects out-of-range ids', () => {
    const m = writeTinyLlama(tmp(), { tokenizer: false, vocabSize: 16, numLayers: 1 });
    expect(() => referenceLogits(m, [16])).toThrow(/out of range/);
  });
});
