// The image side of LLaVA-1.5 (transformers' LlavaModel without its decoder):
// the CLIP vision tower, the feature layer(s) and select strategy, the
// projector linear_1 → act → linear_2, and the merge of the projected image
// features into the decoder's input embeddings at the image-token positions.
// The decoder itself stays a LlamaModel.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/clip.h"
#include "model/llama.h"
#include "model/vision.h"

namespace ngate {

struct LlavaConfig {
  ClipVisionConfig vision;
  int64_t text_hidden_size = 0;
  // vision_feature_layer: one index into the vision hidden states, or several
  // whose features are concatenated; negative counts from the end.
  std::vector<int64_t> feature_layers{-2};
  bool keep_cls = false;  // vision_feature_select_strategy "full"; "default" drops the CLS token
  std::string projector_act = "gelu";
  bool projector_bias = true;
  int64_t image_token_id = 32000;
};

class LlavaVision : public VisionEncoder {
 public:
  LlavaVision(LlavaConfig config, torch::Device device, torch::ScalarType dtype);

  const LlavaConfig& config() const { return config_; }
  // Image tokens per image: the vision tower's patches (+1 with the CLS kept).
  int64_t image_tokens() const override;
  int64_t image_token_id() const override { return config_.image_token_id; }
  bool owns(const std::string& name) const override;

  // Names are "vision_tower.<CLIP name>" and "multi_modal_projector.<name>".
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected_parameters() const;
  void set_parameter(const std::string& name, const torch::Tensor& value) override;
  void finish_loading() override;
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const override;
  int64_t parameter_bytes() const override;

  // Projected features of preprocessed pixels [N, C, S, S] float32 → [N, P, H], without gradients.
  ImageFeatures encode(const torch::Tensor& pixels) const override;

 private:
  LlavaConfig config_;
  torch::Device device_;
  torch::ScalarType dtype_;
  std::unique_ptr<ClipVisionModel> tower_;
  torch::Tensor linear1_w_, linear1_b_, linear2_w_, linear2_b_;
  std::map<std::string, torch::Tensor> projector_;
};

}  // namespace ngate
