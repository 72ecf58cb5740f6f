#include "model/llama.h"

#include <torch/version.h>

#include <atomic>
#include <cmath>
#include <stdexcept>

namespace ngate {

namespace {
std::atomic<AttentionKernel> g_kernel{AttentionKernel::Auto};
// The explicit path's largest temporary per piece: scores of more rows than fit
// are computed a few rows at a time. glibc serves blocks above 32 MB with fresh
// mappings that the kernel zeroes on every use, so [B, heads, T, S] float32
// scores of a long batch cost a page fault per 4 KB each time; pieces below
// that size are reused from the heap. 0: never split.
std::atomic<int64_t> g_chunk_bytes{16 << 20};

// softmax(QKᵀ/√d + mask) V, with the softmax in float32 (transformers' eager path).
torch::Tensor explicit_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& allowed, double scale) {
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  // In place: the product's backward does not need its output.
  scores.masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  return torch::matmul(probs, v);
}
std::atomic<int64_t> g_live{0};

std::string shape_string(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Each half of the head dimension pairs with the other (transformers' convention).
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  return torch::cat({-x2, x1}, -1);
}
}  // namespace

void set_attention_kernel(AttentionKernel kernel) { g_kernel = kernel; }
void set_attention_chunk_bytes(int64_t bytes) { g_chunk_bytes = bytes; }

bool fused_attention_available() {
#if TORCH_VERSION_MAJOR >= 2
  return true;
#else
  return false;
#endif
}

LlamaModel::~LlamaModel() { --g_live; }
int64_t LlamaModel::live_count() { return g_live.load(); }

LlamaModel::LlamaModel(LlamaConfig config, torch::Device device, torch::ScalarType dtype)
    : config_(config), device_(device), dtype_(dtype) {
  const auto& c = config_;
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 ||
      c.num_kv_heads <= 0 || c.head_dim <= 0 || c.vocab_size <= 0) {
    throw std::runtime_error("config: sizes must be positive");
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    throw std::runtime_error("config: num_attention_heads must be a multiple of num_key_value_heads");
  }
  if (c.head_dim % 2 != 0) throw std::runtime_error("config: head_dim must be even for rotary embeddings");
  // inv_freq[i] = 1 / theta^(2i / head_dim), computed in float32 as transformers does.
  auto exponents = torch::arange(0, c.head_dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(c.head_dim);
  inv_freq_ = (1.0 / torch::pow(torch::tensor(c.rope_theta, torch::kFloat32), exponents)).to(device_);
  ++g_live;  // last, so that a constructor that throws is not counted
}

std::vector<std::pair<std::string, std::vector<int64_t>>> LlamaModel::expected_parameters() const {
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, q_out = c.num_heads * c.head_dim,
                kv_out = c.num_kv_heads * c.head_dim;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {H}});
    out.push_back({p + "self_attn.q_proj.weight", {q_out, H}});
    out.push_back({p + "self_attn.k_proj.weight", {kv_out, H}});
    out.push_back({p + "self_attn.v_proj.weight", {kv_out, H}});
    out.push_back({p + "self_attn.o_proj.weight", {H, q_out}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q_out}});
      out.push_back({p + "self_attn.k_proj.bias", {kv_out}});
      out.push_back({p + "self_attn.v_proj.bias", {kv_out}});
      out.push_back({p + "self_attn.o_proj.bias", {H}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {H}});
    out.push_back({p + "mlp.gate_proj.weight", {I, H}});
    out.push_back({p + "mlp.up_proj.weight", {I, H}});
    out.push_back({p + "mlp.down_proj.weight", {H, I}});
    if (c.mlp_bias) {
      out.push_back({p + "mlp.gate_proj.bias", {I}});
      out.push_back({p + "mlp.up_proj.bias", {I}});
      out.push_back({p + "mlp.down_proj.bias", {H}});
    }
  }
  out.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}});
  return out;
}

void LlamaModel::set_parameter(const std::string& name, const torch::Tensor& value) {
  for (const auto& [expected, shape] : expected_parameters()) {
    if (expected != name) continue;
    if (value.sizes() != at::IntArrayRef(shape)) {
      throw std::runtime_error("tensor " + name + " has shape " + shape_string(value.sizes()) + ", the config implies " +
                               shape_string(shape));
    }
    params_[name] = value.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
    return;
  }
  throw std::runtime_error("tensor " + name + " is not a weight of this model");
}

const torch::Tensor& LlamaModel::param(const std::string& name) const {
  auto it = params_.find(name);
  if (it == params_.end()) throw std::runtime_error("tensor " + name + " is missing from the checkpoint");
  return it->second;
}

void LlamaModel::finish_loading() {
  const auto& c = config_;
  embed_ = param("model.embed_tokens.weight");
  norm_ = param("model.norm.weight");
  lm_head_ = c.tie_word_embeddings ? embed_ : param("lm_head.weight");
  layers_.clear();
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer l;
    l.input_norm = param(p + "input_layernorm.weight");
    l.q = param(p + "self_attn.q_proj.weight");
    l.k = param(p + "self_attn.k_proj.weight");
    l.v = param(p + "self_attn.v_proj.weight");
    l.o = param(p + "self_attn.o_proj.weight");
    l.post_norm = param(p + "post_attention_layernorm.weight");
    l.gate = param(p + "mlp.gate_proj.weight");
    l.up = param(p + "mlp.up_proj.weight");
    l.down = param(p + "mlp.down_proj.weight");
    if (c.attention_bias) {
      l.q_bias = param(p + "self_attn.q_proj.bias");
      l.k_bias = param(p + "self_attn.k_proj.bias");
      l.v_bias = param(p + "self_attn.v_proj.bias");
      l.o_bias = param(p + "self_attn.o_proj.bias");
    }
    if (c.mlp_bias) {
      l.gate_bias = param(p + "mlp.gate_proj.bias");
      l.up_bias = param(p + "mlp.up_proj.bias");
      l.down_bias = param(p + "mlp.down_proj.bias");
    }
    layers_.push_back(std::move(l));
  }
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaModel::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, shape] : expected_parameters()) out.push_back({name, param(name)});
  return out;
}

int64_t LlamaModel::parameter_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel() * t.element_size();
  return n;
}

torch::Tensor LlamaModel::embed(const torch::Tensor& ids) const { return torch::embedding(embed_, ids); }

// RMSNorm in float32, cast back before the weight (LlamaRMSNorm).
torch::Tensor LlamaModel::rms_norm(const torch::Tensor& x, const torch::Tensor& w) const {
  auto xf = x.to(torch::kFloat32);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  xf = xf * torch::rsqrt(var + config_.rms_norm_eps);
  return w * xf.to(x.scalar_type());
}

torch::Tensor LlamaModel::mlp(const Layer& l, const torch::Tensor& x) const {
  auto g = torch::linear(x, l.gate, l.gate_bias);
  auto u = torch::linear(x, l.up, l.up_bias);
  return torch::linear(torch::silu(g) * u, l.down, l.down_bias);
}

torch::Tensor LlamaModel::attention(const Layer& l, const torch::Tensor& x, const AttentionInputs& attn,
                                    const torch::Tensor& cos, const torch::Tensor& sin, KVCache* cache,
                                    int64_t index) const {
  const auto& c = config_;
  const int64_t B = x.size(0), T = x.size(1), hd = c.head_dim;
  auto q = torch::linear(x, l.q, l.q_bias).view({B, T, c.num_heads, hd}).transpose(1, 2);
  auto k = torch::linear(x, l.k, l.k_bias).view({B, T, c.num_kv_heads, hd}).transpose(1, 2);
  auto v = torch::linear(x, l.v, l.v_bias).view({B, T, c.num_kv_heads, hd}).transpose(1, 2);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  if (cache && cache->frozen) {
    const int64_t past = cache->length;
    k = torch::cat({cache->keys[index].narrow(2, 0, past), k}, 2);
    v = torch::cat({cache->values[index].narrow(2, 0, past), v}, 2);
  } else if (cache) {
    const int64_t past = cache->length;
    if (past + T > cache->capacity) throw std::runtime_error("KV cache capacity exceeded");
    cache->keys[index].narrow(2, past, T).copy_(k);
    cache->values[index].narrow(2, past, T).copy_(v);
    k = cache->keys[index].narrow(2, 0, past + T);
    v = cache->values[index].narrow(2, 0, past + T);
  }
  // Grouped-query attention: each key/value head serves n_rep query heads in turn.
  const int64_t n_rep = c.num_heads / c.num_kv_heads;
  if (n_rep > 1) {
    k = k.repeat_interleave(n_rep, 1);
    v = v.repeat_interleave(n_rep, 1);
  }
  torch::Tensor out;
  const bool plain_causal = !attn.allowed.defined();
#if TORCH_VERSION_MAJOR >= 2
  if (g_kernel.load() == AttentionKernel::Auto) {
    if (plain_causal) {
      out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
    } else {
      out = at::scaled_dot_product_attention(q, k, v, attn.allowed, 0.0, false);
    }
  }
#endif
  if (!out.defined()) {
    const int64_t S = k.size(2);
    torch::Tensor allowed = attn.allowed;  // [B or 1, 1, T, S]
    if (plain_causal) {
      allowed = torch::ones({T, S}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).tril(S - T).view({1, 1, T, S});
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const int64_t row_bytes = c.num_heads * T * S * 4;
    const int64_t limit = g_chunk_bytes.load();
    const int64_t rows = limit > 0 ? std::max<int64_t>(1, limit / std::max<int64_t>(row_bytes, 1)) : B;
    if (rows >= B) {
      out = explicit_attention(q, k, v, allowed, scale);
    } else {
      // Each row's attention is its own: a few rows at a time give the same numbers.
      std::vector<torch::Tensor> parts;
      for (int64_t b = 0; b < B; b += rows) {
        const int64_t n = std::min(rows, B - b);
        auto mask = allowed.size(0) == 1 ? allowed : allowed.narrow(0, b, n);
        parts.push_back(explicit_attention(q.narrow(0, b, n), k.narrow(0, b, n), v.narrow(0, b, n), mask, scale));
      }
      out = torch::cat(parts, 0);
    }
  }
  out = out.transpose(1, 2).reshape({B, T, c.num_heads * hd});
  return torch::linear(out, l.o, l.o_bias);
}

KVCache LlamaModel::make_cache(int64_t batch, int64_t capacity, int64_t first_layer) const {
  KVCache cache;
  cache.capacity = capacity;
  auto opts = torch::TensorOptions().dtype(dtype_).device(device_);
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    if (i < first_layer) {
      cache.keys.emplace_back();
      cache.values.emplace_back();
      continue;
    }
    cache.keys.push_back(torch::zeros({batch, config_.num_kv_heads, capacity, config_.head_dim}, opts));
    cache.values.push_back(torch::zeros({batch, config_.num_kv_heads, capacity, config_.head_dim}, opts));
  }
  return cache;
}

AttentionInputs LlamaModel::attention_inputs(const torch::Tensor& key_mask, int64_t past, int64_t new_len,
                                             bool padded) const {
  AttentionInputs a;
  const int64_t S = past + new_len;
  if (!padded) {
    a.positions = torch::arange(past, S, torch::TensorOptions().dtype(torch::kInt64).device(device_))
                      .unsqueeze(0)
                      .expand({key_mask.size(0), new_len});
    // A fresh, unpadded sequence is plain causal attention; anything else spells it out.
    if (past == 0) return a;
  } else {
    // Positions count real tokens only, so a left-padded row starts at 0.
    a.positions = (key_mask.to(torch::kInt64).cumsum(1) - 1).clamp_min(0).narrow(1, past, new_len);
  }
  auto opts = torch::TensorOptions().dtype(torch::kBool).device(device_);
  auto causal = torch::ones({new_len, S}, opts).tril(past);               // [T, S]
  auto keys_real = key_mask.to(torch::kBool).unsqueeze(1);                // [B, 1, S]
  auto query_real = key_mask.to(torch::kBool).narrow(1, past, new_len).unsqueeze(2);  // [B, T, 1]
  // A padding query attends causally to everything, so that no row of the
  // softmax is empty (NaN); real queries never see padding keys.
  auto allowed = causal.unsqueeze(0) & (keys_real | query_real.logical_not());
  a.allowed = allowed.unsqueeze(1);  // [B, 1, T, S]
  return a;
}

std::pair<torch::Tensor, torch::Tensor> LlamaModel::rotary(const torch::Tensor& positions) const {
  // cos/sin of the rotary angles, float32 then cast to the model dtype (LlamaRotaryEmbedding).
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_;  // [B, T, hd/2]
  auto emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype_).unsqueeze(1), emb.sin().to(dtype_).unsqueeze(1)};  // [B, 1, T, hd]
}

torch::Tensor LlamaModel::run_layers(torch::Tensor h, const AttentionInputs& attn, KVCache* cache,
                                     int64_t first, int64_t last, const LayerHooks* hooks) const {
  auto [cos, sin] = rotary(attn.positions);
  for (int64_t i = first; i < last; ++i) {
    const Layer& l = layers_.at(static_cast<size_t>(i));
    h = h + attention(l, rms_norm(h, l.input_norm), attn, cos, sin, cache, i);
    auto f = mlp(l, rms_norm(h, l.post_norm));
    if (hooks && hooks->ffn) f = hooks->ffn(i, f);
    h = h + f;
    if (hooks && hooks->block) h = hooks->block(i, h);
  }
  return h;
}

torch::Tensor LlamaModel::head(const torch::Tensor& h) const {
  return torch::linear(rms_norm(h, norm_), lm_head_);
}

torch::Tensor LlamaModel::forward(const torch::Tensor& ids, const torch::Tensor& key_mask, bool padded,
                                  KVCache* cache, bool last_only, const LayerHooks* hooks) const {
  return forward_embeds(embed(ids), key_mask, padded, cache, last_only, hooks);
}

torch::Tensor LlamaModel::forward_embeds(const torch::Tensor& embeds, const torch::Tensor& key_mask, bool padded,
                                         KVCache* cache, bool last_only, const LayerHooks* hooks) const {
  const int64_t past = cache ? cache->length : 0;
  const int64_t T = embeds.size(1);
  auto attn = attention_inputs(key_mask, past, T, padded);
  auto h = run_layers(embeds, attn, cache, 0, config_.num_layers, hooks);
  if (cache) cache->length += T;
  if (last_only) {
    // The last real token of each row (right padding puts it before the end).
    auto real = key_mask.narrow(1, past, T).to(torch::kInt64);
    auto last = (real * torch::arange(T, real.options())).argmax(1);                  // [B]
    auto index = last.view({-1, 1, 1}).expand({h.size(0), 1, h.size(2)});
    h = h.gather(1, index);
  }
  return head(h);
}

torch::Tensor LlamaModel::ffn_input(const torch::Tensor& ids, const torch::Tensor& key_mask, bool padded,
                                     int64_t layer) const {
  return ffn_input_embeds(embed(ids), key_mask, padded, layer);
}

torch::Tensor LlamaModel::ffn_input_embeds(const torch::Tensor& embeds, const torch::Tensor& key_mask, bool padded,
                                           int64_t layer) const {
  auto attn = attention_inputs(key_mask, 0, embeds.size(1), padded);
  // Layers below, then this layer's attention: what its FFN norm receives.
  auto h = run_layers(embeds, attn, nullptr, 0, layer);
  auto [cos, sin] = rotary(attn.positions);
  const Layer& l = layers_.at(static_cast<size_t>(layer));
  h = h + attention(l, rms_norm(h, l.input_norm), attn, cos, sin, nullptr, layer);
  return rms_norm(h, l.post_norm);
}

torch::Tensor LlamaModel::ffn_weight(int64_t layer, const std::string& which) const {
  if (layer < 0 || layer >= config_.num_layers) {
    throw std::runtime_error("layer " + std::to_string(layer) + " is outside the model's " +
                             std::to_string(config_.num_layers) + " layers");
  }
  const Layer& l = layers_.at(static_cast<size_t>(layer));
  if (which == "gate_proj") return l.gate;
  if (which == "up_proj") return l.up;
  if (which == "down_proj") return l.down;
  throw std::runtime_error("unknown FFN parameter " + which + " (expected gate_proj, up_proj or down_proj)");
}

}  // namespace ngate
