/**
 * Plain-JavaScript float64 reference of LLaVA's image side, written from
 * transformers' CLIPVisionTransformer and LlavaMultiModalProjector: patch
 * embedding, class and position embeddings, pre-layernorm, encoder layers
 * with quick-GELU, hidden state `vision_feature_layer`, the CLS token dropped
 * by the "default" strategy, then linear_1 → GELU (erf) → linear_2.
 */
import type { TinyLlava } from '../fixtures/checkpoint';

type Tensors = TinyLlava['tensors'];

function w(t: Tensors, name: string): Float32Array {
  const x = t.get(name);
  if (!x) throw new Error(`llava-ref: no tensor ${name}`);
  return x.data;
}

export function linear(W: Float32Array, b: Float32Array | null, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = b ? b[r] : 0;
    for (let c = 0; c < cols; c++) s += W[r * cols + c] * x[c];
    out[r] = s;
  }
  return out;
}

export function layerNorm(x: Float64Array, g: Float32Array | null, b: Float32Array | null, eps: number): Float64Array {
  let mean = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  let variance = 0;
  for (const v of x) variance += (v - mean) ** 2;
  variance /= x.length;
  const inv = 1 / Math.sqrt(variance + eps);
  return x.map((v, i) => (v - mean) * inv * (g ? g[i] : 1) + (b ? b[i] : 0));
}

// erf by its Maclaurin series (|x| small) or continued fraction tail: plenty for float32 comparisons.
function erf(x: number): number {
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  if (a < 3) {
    let sum = 0, term = a;
    for (let n = 0; n < 60; n++) {
      sum += term / (2 * n + 1);
      term *= (-a * a) / (n + 1);
    }
    return sign * (2 / Math.sqrt(Math.PI)) * sum;
  }
  return sign * (1 - Math.exp(-a * a) / (a * Math.sqrt(Math.PI)) * (1 - 1 / (2 * a * a)));
}

export const gelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
const quickGelu = (v: number) => v / (1 + Math.exp(-1.702 * v));

export interface VisionDims { D: number; I: number; L: number; nH: number; S: number; p: number; H: number; eps: number }

export function visionDims(fx: TinyLlava): VisionDims {
  const vc = fx.config.vision_config as Record<string, number>;
  return {
    D: vc.hidden_size, I: vc.intermediate_size, L: vc.num_hidden_layers, nH: vc.num_attention_heads,
    S: vc.image_size, p: vc.patch_size, H: fx.textConfig.hidden_size as number, eps: 1e-5,
  };
}

/** The projected image features [P][H] of preprocessed pixels [3, S, S]. */
export function referenceImageFeatures(fx: TinyLlava, pixels: Float32Array): Float64Array[] {
  const d = visionDims(fx);
  const t = fx.tensors;
  const g = d.S / d.p;
  const conv = w(t, 'vision_tower.embeddings.patch_embedding.weight');
  const cls = w(t, 'vision_tower.embeddings.class_embedding');
  const pos = w(t, 'vision_tower.embeddings.position_embedding.weight');
  let xs: Float64Array[] = [Float64Array.from(cls)];
  for (let py = 0; py < g; py++) {
    for (let px = 0; px < g; px++) {
      const e = new Float64Array(d.D);
      for (let o = 0; o < d.D; o++) {
        let s = 0;
        for (let c = 0; c < 3; c++) {
          for (let i = 0; i < d.p; i++) {
            for (let j = 0; j < d.p; j++) {
              s += conv[((o * 3 + c) * d.p + i) * d.p + j] * pixels[(c * d.S + py * d.p + i) * d.S + px * d.p + j];
            }
          }
        }
        e[o] = s;
      }
      xs.push(e);
    }
  }
  xs = xs.map((x, k) => layerNorm(x.map((v, i) => v + pos[k * d.D + i]),
    w(t, 'vision_tower.pre_layrnorm.weight'), w(t, 'vision_tower.pre_layrnorm.bias'), d.eps));
  const hidden: Float64Array[][] = [xs];
  const hd = d.D / d.nH;
  for (let l = 0; l < d.L; l++) {
    const p = `vision_tower.encoder.layers.${l}.`;
    const h = xs.map((x) => layerNorm(x, w(t, `${p}layer_norm1.weight`), w(t, `${p}layer_norm1.bias`), d.eps));
    const proj = (n: string) => h.map((x) => linear(w(t, `${p}self_attn.${n}.weight`), w(t, `${p}self_attn.${n}.bias`), d.D, d.D, x));
    const q = proj('q_proj'), k = proj('k_proj'), v = proj('v_proj');
    const T = xs.length;
    const after = xs.map((x, i) => {
      const ctx = new Float64Array(d.D);
      for (let hh = 0; hh < d.nH; hh++) {
        const scores = new Float64Array(T);
        let max = -Infinity;
        for (let j = 0; j < T; j++) {  // no mask: every token sees every other
          let dot = 0;
          for (let e = 0; e < hd; e++) dot += q[i][hh * hd + e] * k[j][hh * hd + e];
          scores[j] = dot / Math.sqrt(hd);
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j < T; j++) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
        for (let j = 0; j < T; j++) for (let e = 0; e < hd; e++) ctx[hh * hd + e] += (scores[j] / sum) * v[j][hh * hd + e];
      }
      const o = linear(w(t, `${p}self_attn.out_proj.weight`), w(t, `${p}self_attn.out_proj.bias`), d.D, d.D, ctx);
      return x.map((val, e) => val + o[e]);
    });
    xs = after.map((x) => {
      const n = layerNorm(x, w(t, `${p}layer_norm2.weight`), w(t, `${p}layer_norm2.bias`), d.eps);
      const a = linear(w(t, `${p}mlp.fc1.weight`), w(t, `${p}mlp.fc1.bias`), d.I, d.D, n).map(quickGelu);
      const m = linear(w(t, `${p}mlp.fc2.weight`), w(t, `${p}mlp.fc2.bias`), d.D, d.I, a);
      return x.map((val, e) => val + m[e]);
    });
    hidden.push(xs);
  }
  const layers = Array.isArray(fx.config.vision_feature_layer) ? fx.config.vision_feature_layer as number[] : [fx.config.vision_feature_layer as number];
  const full = fx.config.vision_feature_select_strategy === 'full';
  const picked = layers.map((l) => {
    const hs = hidden[l < 0 ? hidden.length + l : l];
    return full ? hs : hs.slice(1);
  });
  const Din = d.D * layers.length;
  return picked[0].map((_, k) => {
    const x = new Float64Array(Din);
    picked.forEach((hs, j) => x.set(hs[k], j * d.D));
    const a = linear(w(t, 'multi_modal_projector.linear_1.weight'), w(t, 'multi_modal_projector.linear_1.bias'), d.H, Din, x).map(gelu);
    return linear(w(t, 'multi_modal_projector.linear_2.weight'), w(t, 'multi_modal_projector.linear_2.bias'), d.H, d.H, a);
  });
}
