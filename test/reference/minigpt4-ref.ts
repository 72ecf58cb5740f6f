/**
 * Plain-JavaScript float64 reference of MiniGPT-4's image side, written from
 * the original's eva_vit.py and MiniGPT4.encode_img: biased patch
 * convolution, CLS token, absolute position embeddings, pre-norm blocks
 * (qkv with q and v biases only, exact GELU MLP), no final norm; ln_vision
 * (weight 1, bias 0, eps 1e-5); CLS dropped; k consecutive patch tokens
 * concatenated; llama_proj.
 */
import type { TinyMiniGpt4 } from '../fixtures/minigpt4';
import { gelu, layerNorm, linear } from './llava-ref';

/** The image embeddings [tokens][H] of preprocessed pixels [3, S, S]. */
export function referenceMiniGpt4Embeddings(fx: TinyMiniGpt4, pixels: Float32Array): Float64Array[] {
  const { S, p, D, L, nH, I, k, H } = fx.dims;
  const w = (n: string): Float32Array => {
    const t = fx.vit.get(n);
    if (!t) throw new Error(`minigpt4-ref: no tensor ${n}`);
    return t.data;
  };
  const g = S / p, eps = 1e-6;
  const conv = w('patch_embed.proj.weight'), convB = w('patch_embed.proj.bias');
  const pos = w('pos_embed');
  let xs: Float64Array[] = [Float64Array.from(w('cls_token'))];
  for (let py = 0; py < g; py++) {
    for (let px = 0; px < g; px++) {
      const e = new Float64Array(D);
      for (let o = 0; o < D; o++) {
        let s = convB[o];
        for (let c = 0; c < 3; c++) {
          for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) s += conv[((o * 3 + c) * p + i) * p + j] * pixels[(c * S + py * p + i) * S + px * p + j];
        }
        e[o] = s;
      }
      xs.push(e);
    }
  }
  xs = xs.map((x, t) => x.map((v, i) => v + pos[t * D + i]));
  const hd = D / nH, T = xs.length;
  for (let l = 0; l < L; l++) {
    const b = `blocks.${l}.`;
    const qkvB = new Float32Array(3 * D);
    qkvB.set(w(`${b}attn.q_bias`), 0);
    qkvB.set(w(`${b}attn.v_bias`), 2 * D);
    const qkv = xs.map((x) => linear(w(`${b}attn.qkv.weight`), qkvB, 3 * D, D, layerNorm(x, w(`${b}norm1.weight`), w(`${b}norm1.bias`), eps)));
    xs = xs.map((x, i) => {
      const ctx = new Float64Array(D);
      for (let h = 0; h < nH; h++) {
        const scores = new Float64Array(T);
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          let dot = 0;
          for (let e = 0; e < hd; e++) dot += qkv[i][h * hd + e] * qkv[j][D + h * hd + e];
          scores[j] = dot / Math.sqrt(hd);
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j < T; j++) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
        for (let j = 0; j < T; j++) for (let e = 0; e < hd; e++) ctx[h * hd + e] += (scores[j] / sum) * qkv[j][2 * D + h * hd + e];
      }
      const o = linear(w(`${b}attn.proj.weight`), w(`${b}attn.proj.bias`), D, D, ctx);
      const y = x.map((v, e) => v + o[e]);
      const n = layerNorm(y, w(`${b}norm2.weight`), w(`${b}norm2.bias`), eps);
      const a = linear(w(`${b}mlp.fc1.weight`), w(`${b}mlp.fc1.bias`), I, D, n).map(gelu);
      const m = linear(w(`${b}mlp.fc2.weight`), w(`${b}mlp.fc2.bias`), D, I, a);
      return y.map((v, e) => v + m[e]);
    });
  }
  const normed = xs.slice(1).map((x) => layerNorm(x, null, null, 1e-5));
  const out: Float64Array[] = [];
  for (let t = 0; t < normed.length / k; t++) {
    const cat = new Float64Array(D * k);
    for (let j = 0; j < k; j++) cat.set(normed[t * k + j], j * D);
    out.push(linear(fx.proj.weight, fx.proj.bias, H, D * k, cat));
  }
  return out;
}
