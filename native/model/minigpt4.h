// The image side of MiniGPT-4's Llama-2 variant (`MiniGPT4.encode_img` with
// has_qformer False): the EVA ViT-g, `ln_vision` (a LayerNorm the variant never
// loads, so weight 1 and bias 0), the CLS token dropped, every
// `tokens_per_embedding` consecutive patch tokens concatenated, and
// `llama_proj`, a Linear into the decoder's width. The decoder stays a LlamaModel.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/eva_vit.h"
#include "model/vision.h"

namespace ngate {

struct MiniGpt4Config {
  EvaVitConfig vit;
  double ln_vision_eps = 1e-5;
  int64_t tokens_per_embedding = 4;
  int64_t text_hidden_size = 0;
  // MiniGPT-4 has no image token in its vocabulary: the id that marks image
  // positions in token ids is one past it.
  int64_t image_token_id = 0;
};

class MiniGpt4Vision : public VisionEncoder {
 public:
  MiniGpt4Vision(MiniGpt4Config config, torch::Device device, torch::ScalarType dtype);

  int64_t image_tokens() const override;
  int64_t image_token_id() const override { return config_.image_token_id; }
  // "visual_encoder.<name in eva_vit_g.pth>" and "llama_proj.weight|bias".
  bool owns(const std::string& name) const override;
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected_parameters() const;
  void set_parameter(const std::string& name, const torch::Tensor& value) override;
  void finish_loading() override;
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const override;
  int64_t parameter_bytes() const override;
  ImageFeatures encode(const torch::Tensor& pixels) const override;

 private:
  MiniGpt4Config config_;
  torch::Device device_;
  torch::ScalarType dtype_;
  std::unique_ptr<EvaVisionTransformer> vit_;
  torch::Tensor proj_w_, proj_b_;
};

}  // namespace ngate
