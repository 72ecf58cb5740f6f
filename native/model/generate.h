// Batched greedy decoding with a KV cache.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/llama.h"
#include "model/vision.h"

namespace ngate {

struct GreedyOptions {
  int64_t max_new_tokens = 32;
  std::vector<int64_t> eos_ids;  // decoding of a row stops at the first of these
  int64_t pad_id = 0;
  bool keep_logits = false;  // also return the logits of every decoding step
};

struct GreedyResult {
  std::vector<std::vector<int64_t>> tokens;  // new tokens per prompt, the stopping EOS excluded
  std::vector<bool> stopped_at_eos;
  torch::Tensor step_logits;  // [B, steps, V] float32 on the CPU when keep_logits
};

// Prompts are left-padded into one batch; every step feeds one token per row
// through the cache. `cancelled` is polled between steps; `progress(step)`
// reports after each one. With `images`, prompt b shows image prompt_image[b]
// (-1: none): its image-token run is replaced by that image's features in the
// prefill; decoding then continues from the cache as for text.
GreedyResult greedy_generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                             const GreedyOptions& options, const std::function<bool()>& cancelled,
                             const std::function<void(int64_t, int64_t)>& progress,
                             const ImageFeatures* images = nullptr, const std::vector<int64_t>& prompt_image = {});

}  // namespace ngate
