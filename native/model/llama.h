// The LLaMA decoder (LLaMA-2, Vicuna, the language model of LLaVA-1.5) with
// the exact semantics of transformers' LlamaForCausalLM: RMSNorm computed in
// float32, rotary embeddings in the rotate-half convention, grouped-query
// attention, SwiGLU MLP. Weights are addressed by their Hugging Face names.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ngate {

struct LlamaConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
};

// Keys and values of earlier positions, one buffer per layer, preallocated to
// `capacity` positions so that decoding never reallocates.
struct KVCache {
  std::vector<torch::Tensor> keys;    // [B, n_kv, capacity, head_dim]
  std::vector<torch::Tensor> values;  // [B, n_kv, capacity, head_dim]
  int64_t length = 0;                 // positions filled
  int64_t capacity = 0;
  // Frozen: the first `length` positions are a fixed prefix that new positions
  // attend to but never join (attention concatenates instead of writing), so
  // one prefix serves many passes, gradients included.
  bool frozen = false;
};

// Per-step attention inputs derived from the key padding mask.
struct AttentionInputs {
  torch::Tensor positions;  // [B, T] int64: rotary positions of the new tokens
  torch::Tensor allowed;    // [B, 1, T, S] bool: query t may attend to key s; undefined = plain causal
};

// Called with a layer's feature and returns what replaces it: `ffn` sees the
// FFN (MLP) output before it joins the residual stream (the f_l of the Neural
// Gate paper), `block` the residual stream after the layer.
using LayerHook = std::function<torch::Tensor(int64_t layer, const torch::Tensor& feature)>;
struct LayerHooks {
  LayerHook ffn;
  LayerHook block;
};

class LlamaModel {
 public:
  LlamaModel(LlamaConfig config, torch::Device device, torch::ScalarType dtype);
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;
  // Models alive in this process (lets tests see that finalisers free them).
  static int64_t live_count();

  const LlamaConfig& config() const { return config_; }
  torch::Device device() const { return device_; }
  torch::ScalarType dtype() const { return dtype_; }

  // The Hugging Face name and shape of every weight the checkpoint must hold.
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected_parameters() const;
  // Copies `value` (any dtype, any device) into the named weight.
  void set_parameter(const std::string& name, const torch::Tensor& value);
  // Throws if a weight was never set; binds the per-layer views.
  void finish_loading();
  // Weights by Hugging Face name (lm_head omitted when tied to the embedding).
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  int64_t parameter_bytes() const;

  torch::Tensor embed(const torch::Tensor& ids) const;  // [B, T] → [B, T, H]
  // Decoder layers [first, last) on hidden states h; with a cache, the new
  // positions are appended to it (the caller advances cache->length).
  torch::Tensor run_layers(torch::Tensor h, const AttentionInputs& attn, KVCache* cache, int64_t first,
                           int64_t last, const LayerHooks* hooks = nullptr) const;
  torch::Tensor head(const torch::Tensor& h) const;  // final norm and lm_head → logits (model dtype)

  // Buffers for layers [first_layer, num_layers); lower layers' entries stay empty.
  KVCache make_cache(int64_t batch, int64_t capacity, int64_t first_layer = 0) const;
  // Positions and attention mask for `new_len` tokens appended after `past`
  // cached ones; key_mask [B, past + new_len] is true at real tokens.
  AttentionInputs attention_inputs(const torch::Tensor& key_mask, int64_t past, int64_t new_len,
                                   bool padded) const;

  // Full pass: ids [B, T] and key mask [B, past + T] → logits [B, T, V] (or of
  // the last position only), updating the cache when one is given.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& key_mask, bool padded, KVCache* cache,
                        bool last_only, const LayerHooks* hooks = nullptr) const;
  // The same from input embeddings [B, T, H] (LLaVA: token embeddings with image features merged in).
  torch::Tensor forward_embeds(const torch::Tensor& embeds, const torch::Tensor& key_mask, bool padded, KVCache* cache,
                               bool last_only, const LayerHooks* hooks = nullptr) const;

  // The input of a layer's FFN (after post_attention_layernorm), [B, T, H].
  torch::Tensor ffn_input(const torch::Tensor& ids, const torch::Tensor& key_mask, bool padded, int64_t layer) const;
  torch::Tensor ffn_input_embeds(const torch::Tensor& embeds, const torch::Tensor& key_mask, bool padded,
                                 int64_t layer) const;

  // The FFN weight `which` (gate_proj, up_proj, down_proj) of a layer: the
  // tensor the forward pass uses, so in-place updates edit the model.
  torch::Tensor ffn_weight(int64_t layer, const std::string& which) const;

 private:
  struct Layer {
    torch::Tensor input_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias;
    torch::Tensor post_norm, gate, up, down, gate_bias, up_bias, down_bias;
  };
  torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w) const;
  std::pair<torch::Tensor, torch::Tensor> rotary(const torch::Tensor& positions) const;
  torch::Tensor attention(const Layer& layer, const torch::Tensor& x, const AttentionInputs& attn,
                          const torch::Tensor& cos, const torch::Tensor& sin, KVCache* cache,
                          int64_t index) const;
  torch::Tensor mlp(const Layer& layer, const torch::Tensor& x) const;
  const torch::Tensor& param(const std::string& name) const;

  LlamaConfig config_;
  torch::Device device_;
  torch::ScalarType dtype_;
  std::map<std::string, torch::Tensor> params_;
  std::vector<Layer> layers_;
  torch::Tensor embed_, norm_, lm_head_, inv_freq_;
};

// How attention is computed: libtorch's fused scaled_dot_product_attention
// (libtorch ≥ 2) or the explicit softmax(QKᵀ/√d)V, kept as the reference.
enum class AttentionKernel { Auto, Explicit };
void set_attention_kernel(AttentionKernel kernel);
// The explicit path splits a batch so that no piece's scores exceed this many bytes (0: never).
void set_attention_chunk_bytes(int64_t bytes);
bool fused_attention_available();

}  // namespace ngate
