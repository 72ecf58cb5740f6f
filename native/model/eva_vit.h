// The EVA-CLIP ViT-g of BLIP-2 as MiniGPT-4 builds it (`create_eva_vit_g`):
// a biased patch convolution, a CLS token and absolute position embeddings,
// then pre-norm blocks (LayerNorm, attention whose one `qkv` projection has a
// query and a value bias but no key bias, LayerNorm, MLP with exact GELU), no
// layer scale, no relative position bias and no final norm. Weights are
// addressed by the names of `eva_vit_g.pth` ("blocks.0.attn.qkv.weight", ...).
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ngate {

struct EvaVitConfig {
  int64_t image_size = 224;
  int64_t patch_size = 14;
  int64_t width = 1408;
  int64_t depth = 39;
  int64_t num_heads = 16;
  int64_t mlp_hidden = 6144;  // int(1408 * 4.3637)
  int64_t num_channels = 3;
  double norm_eps = 1e-6;
};

class EvaVisionTransformer {
 public:
  EvaVisionTransformer(EvaVitConfig config, torch::Device device, torch::ScalarType dtype);

  const EvaVitConfig& config() const { return config_; }
  int64_t num_patches() const;

  std::vector<std::pair<std::string, std::vector<int64_t>>> expected_parameters() const;
  // A `pos_embed` for another square grid is resampled to this one as the
  // original's `interpolate_pos_embed` does (bicubic, CLS row kept).
  void set_parameter(const std::string& name, const torch::Tensor& value);
  void finish_loading();
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  int64_t parameter_bytes() const;

  // The last block's output for pixels [N, C, S, S]: [N, 1 + patches, width], CLS first.
  torch::Tensor forward(const torch::Tensor& pixels) const;

 private:
  struct Block {
    torch::Tensor norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  const torch::Tensor& param(const std::string& name) const;
  torch::Tensor block_forward(const Block& b, const torch::Tensor& h) const;

  EvaVitConfig config_;
  torch::Device device_;
  torch::ScalarType dtype_;
  std::map<std::string, torch::Tensor> params_;
  std::vector<Block> blocks_;
};

}  // namespace ngate
