// The CLIP vision transformer (the vision tower of LLaVA-1.5) with the
// semantics of transformers' CLIPVisionTransformer: a bias-free patch
// convolution, a class embedding and learned position embeddings, the
// pre-layernorm, then pre-norm encoder layers (attention with biases, MLP with
// quick-GELU by default). Weights are addressed by their Hugging Face names
// relative to the vision model ("embeddings.patch_embedding.weight", ...).
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ngate {

struct ClipVisionConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_channels = 3;
  int64_t image_size = 0;
  int64_t patch_size = 0;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // quick_gelu, gelu, gelu_new / gelu_pytorch_tanh
};

// An activation of transformers' ACT2FN by name (the ones CLIP and LLaVA use).
torch::Tensor activation(const std::string& name, const torch::Tensor& x);
bool activation_known(const std::string& name);

class ClipVisionModel {
 public:
  ClipVisionModel(ClipVisionConfig config, torch::Device device, torch::ScalarType dtype);

  const ClipVisionConfig& config() const { return config_; }
  int64_t num_patches() const;

  std::vector<std::pair<std::string, std::vector<int64_t>>> expected_parameters() const;
  void set_parameter(const std::string& name, const torch::Tensor& value);
  void finish_loading();
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  int64_t parameter_bytes() const;

  // transformers' `hidden_states` of the vision model for pixels [N, C, S, S]:
  // index 0 is the embeddings after pre_layrnorm, index i the output of encoder
  // layer i − 1. Only the layers up to index `upto` are run (the rest are
  // never needed for a feature layer below the top).
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& pixels, int64_t upto) const;

 private:
  struct Layer {
    torch::Tensor ln1_w, ln1_b, q, q_b, k, k_b, v, v_b, o, o_b, ln2_w, ln2_b, fc1, fc1_b, fc2, fc2_b;
  };
  const torch::Tensor& param(const std::string& name) const;
  torch::Tensor layer_forward(const Layer& l, const torch::Tensor& h) const;

  ClipVisionConfig config_;
  torch::Device device_;
  torch::ScalarType dtype_;
  std::map<std::string, torch::Tensor> params_;
  std::vector<Layer> layers_;
};

}  // namespace ngate
