// What the image sides of LLaVA and MiniGPT-4 share: a frozen encoder that
// turns preprocessed pixels into a run of embeddings per image, and the merge
// of those runs into the decoder's input embeddings at image-token positions.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "model/llama.h"

namespace ngate {

// The images of one call, encoded once: features [N, P, H] (model dtype, on
// the device), one row per distinct image, and the id that marks their positions.
struct ImageFeatures {
  torch::Tensor features;
  int64_t image_token_id = -1;
};

class VisionEncoder {
 public:
  virtual ~VisionEncoder() = default;
  // Embeddings per image, and the id that stands for each of them in token ids
  // (LLaVA's <image> token; for MiniGPT-4 one past the vocabulary).
  virtual int64_t image_tokens() const = 0;
  virtual int64_t image_token_id() const = 0;
  // Whether a weight of this name belongs to the image side rather than the decoder.
  virtual bool owns(const std::string& name) const = 0;
  virtual void set_parameter(const std::string& name, const torch::Tensor& value) = 0;
  virtual void finish_loading() = 0;
  virtual std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const = 0;
  virtual int64_t parameter_bytes() const = 0;
  // Features of preprocessed pixels [N, C, S, S] float32 → [N, P, H], without gradients.
  virtual ImageFeatures encode(const torch::Tensor& pixels) const = 0;
};

// The decoder's input embeddings of ids [B, T], with row b's run of image
// tokens replaced by features[row_image[b]] (row_image[b] < 0: no image; such
// a row must hold no image token). Throws if a row's run is not exactly the
// image's feature count long. The image id may lie past the vocabulary.
torch::Tensor embed_with_images(const LlamaModel& decoder, const torch::Tensor& ids, const ImageFeatures& images,
                                const std::vector<int64_t>& row_image);

}  // namespace ngate
