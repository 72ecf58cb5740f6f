/**
 * Plain-JavaScript reference forward pass of transformers' LlamaForCausalLM
 * (eager attention, one unpadded sequence, no cache). All arithmetic is in
 * float64 on the stored weights; it is the ground truth for tests, so it
 * favours readability over speed.
 */
import type { TinyLlama } from '../fixtures/checkpoint';

export type ReferenceModel = Pick<TinyLlama, 'config' | 'tensors'>;

interface Dims {
  H: number; I: number; L: number; nH: number; nKV: number; hd: number; V: number;
  eps: number; theta: number; tied: boolean;
}

function num(config: Record<string, unknown>, key: string, fallback?: number): number {
  const v = config[key];
  if (typeof v === 'number') return v;
  if (v === undefined && fallback !== undefined) return fallback;
  throw new Error(`referenceLogits: config.${key} must be a number, got ${JSON.stringify(v)}`);
}

function readDims(config: Record<string, unknown>): Dims {
  const H = num(config, 'hidden_size');
  const nH = num(config, 'num_attention_heads');
  const nKV = num(config, 'num_key_value_heads', nH);
  const hdRaw = config.head_dim;
  const hd = typeof hdRaw === 'number' ? hdRaw : H / nH;

  // transformers 4.x: top-level rope_theta + rope_scaling; 5.x: rope_parameters.
  let theta = 10000;
  const rp = config.rope_parameters as Record<string, unknown> | null | undefined;
  if (rp !== undefined && rp !== null) {
    if (rp.rope_type !== undefined && rp.rope_type !== 'default') throw new Error(`referenceLogits: rope_type ${String(rp.rope_type)} not supported`);
    if (typeof rp.rope_theta === 'number') theta = rp.rope_theta;
  } else {
    theta = num(config, 'rope_theta', 10000);
  }
  if (config.rope_scaling !== undefined && config.rope_scaling !== null) throw new Error('referenceLogits: rope_scaling not supported');

  return {
    H, nH, nKV, hd,
    I: num(config, 'intermediate_size'),
    L: num(config, 'num_hidden_layers'),
    V: num(config, 'vocab_size'),
    eps: num(config, 'rms_norm_eps', 1e-6),
    theta,
    tied: config.tie_word_embeddings === true,
  };
}

/** A weight matrix [rows, cols] row-major, checked against the expected shape. */
function weight(model: ReferenceModel, name: string, shape: number[]): Float32Array {
  const t = model.tensors.get(name);
  if (!t) throw new Error(`referenceLogits: missing tensor ${name}`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`referenceLogits: ${name} has shape [${t.shape}], expected [${shape}]`);
  }
  return t.data;
}

/** y = W x for W [rows, cols] (nn.Linear without bias). */
function linear(W: Float32Array, rows: number, cols: number, x: Float64Array): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const off = r * cols;
    for (let c = 0; c < cols; c++) s += W[off + c] * x[c];
    y[r] = s;
  }
  return y;
}

/** w * (x / sqrt(mean(x^2) + eps)) */
function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ms = 0;
  for (let i = 0; i < x.length; i++) ms += x[i] * x[i];
  ms /= x.length;
  const inv = 1 / Math.sqrt(ms + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = w[i] * (x[i] * inv);
  return y;
}

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/**
 * In-place rotary embedding of one head vector `v[off .. off+hd)` at position
 * `pos`, rotate_half convention: with cos/sin = [angles, angles],
 * v' = v * cos + rotate_half(v) * sin, rotate_half(v) = [-v2, v1].
 */
function rope(v: Float64Array, off: number, hd: number, pos: number, theta: number): void {
  const half = hd / 2;
  for (let i = 0; i < half; i++) {
    const invFreq = 1 / Math.pow(theta, (2 * i) / hd);
    const angle = pos * invFreq;
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    const x1 = v[off + i];
    const x2 = v[off + i + half];
    v[off + i] = x1 * c - x2 * s;
    v[off + i + half] = x2 * c + x1 * s;
  }
}

/**
 * Logits [T, V] row-major for token ids `ids` at positions 0..T-1.
 * `inputAt(t)`, when it returns a vector, replaces position t's token
 * embedding (LLaVA's image features). `onLayer(l, states)` sees the hidden
 * states after each decoder layer, and (l = L) after the final norm, as
 * transformers' hidden_states[l + 1] holds them.
 */
export function referenceLogits(model: ReferenceModel, ids: number[], inputAt?: (t: number) => ArrayLike<number> | undefined,
  onLayer?: (layer: number, states: Float64Array[]) => void): Float64Array {
  const d = readDims(model.config);
  const { H, I, L, nH, nKV, hd, V, eps, theta } = d;
  const T = ids.length;
  const group = nH / nKV;
  const scale = 1 / Math.sqrt(hd);

  const emb = weight(model, 'model.embed_tokens.weight', [V, H]);
  let xs: Float64Array[] = ids.map((id, t) => {
    const given = inputAt?.(t);
    if (given) return Float64Array.from(given);
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`referenceLogits: token id ${id} out of range [0, ${V})`);
    return Float64Array.from(emb.subarray(id * H, (id + 1) * H));
  });

  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    const wIn = weight(model, `${p}.input_layernorm.weight`, [H]);
    const wq = weight(model, `${p}.self_attn.q_proj.weight`, [nH * hd, H]);
    const wk = weight(model, `${p}.self_attn.k_proj.weight`, [nKV * hd, H]);
    const wv = weight(model, `${p}.self_attn.v_proj.weight`, [nKV * hd, H]);
    const wo = weight(model, `${p}.self_attn.o_proj.weight`, [H, nH * hd]);
    const wPost = weight(model, `${p}.post_attention_layernorm.weight`, [H]);
    const wGate = weight(model, `${p}.mlp.gate_proj.weight`, [I, H]);
    const wUp = weight(model, `${p}.mlp.up_proj.weight`, [I, H]);
    const wDown = weight(model, `${p}.mlp.down_proj.weight`, [H, I]);

    // Self-attention block.
    const q: Float64Array[] = [];
    const k: Float64Array[] = [];
    const v: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const h = rmsNorm(xs[t], wIn, eps);
      const qt = linear(wq, nH * hd, H, h);
      const kt = linear(wk, nKV * hd, H, h);
      for (let hh = 0; hh < nH; hh++) rope(qt, hh * hd, hd, t, theta);
      for (let hh = 0; hh < nKV; hh++) rope(kt, hh * hd, hd, t, theta);
      q.push(qt);
      k.push(kt);
      v.push(linear(wv, nKV * hd, H, h));
    }
    const afterAttn: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const ctx = new Float64Array(nH * hd);
      for (let hh = 0; hh < nH; hh++) {
        const kvh = Math.floor(hh / group);
        // Causal: position t attends to 0..t only.
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[t][hh * hd + i] * k[s][kvh * hd + i];
          scores[s] = dot * scale;
          if (scores[s] > max) max = scores[s];
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          scores[s] = Math.exp(scores[s] - max);
          sum += scores[s];
        }
        for (let s = 0; s <= t; s++) {
          const pr = scores[s] / sum;
          for (let i = 0; i < hd; i++) ctx[hh * hd + i] += pr * v[s][kvh * hd + i];
        }
      }
      const o = linear(wo, H, nH * hd, ctx);
      const res = new Float64Array(H);
      for (let i = 0; i < H; i++) res[i] = xs[t][i] + o[i];
      afterAttn.push(res);
    }

    // MLP block.
    xs = afterAttn.map((x) => {
      const h = rmsNorm(x, wPost, eps);
      const g = linear(wGate, I, H, h);
      const u = linear(wUp, I, H, h);
      const a = new Float64Array(I);
      for (let i = 0; i < I; i++) a[i] = silu(g[i]) * u[i];
      const down = linear(wDown, H, I, a);
      const res = new Float64Array(H);
      for (let i = 0; i < H; i++) res[i] = x[i] + down[i];
      return res;
    });
    onLayer?.(l, xs);
  }

  const wNorm = weight(model, 'model.norm.weight', [H]);
  const head = d.tied ? emb : weight(model, 'lm_head.weight', [V, H]);
  const logits = new Float64Array(T * V);
  for (let t = 0; t < T; t++) logits.set(linear(head, V, H, rmsNorm(xs[t], wNorm, eps)), t * V);
  onLayer?.(L, xs.map((x) => rmsNorm(x, wNorm, eps)));
  return logits;
}
