// Batched decoding with a KV cache: greedy by default, or sampled
// (temperature, top-k, top-p), with the repetition penalty of transformers.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/llama.h"
#include "model/vision.h"

namespace ngate {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  std::vector<int64_t> eos_ids;  // decoding of a row stops at the first of these
  int64_t pad_id = 0;
  bool keep_logits = false;  // also return the (processed) logits of every decoding step
  // 0: greedy (argmax), as before sampling existed. Otherwise logits / temperature,
  // then top-k, then top-p (nucleus), then one draw: transformers' order.
  double temperature = 0.0;
  int64_t top_k = 0;    // 0: off
  double top_p = 1.0;   // 1: off
  double repetition_penalty = 1.0;  // 1: off; applied to every token of the prompt and of the answer so far
  uint64_t seed = 0;    // of the draws, so that a sampled generation can be repeated
  // Rows the caller has stopped (a stop string was seen): read before every step,
  // written by another thread; null when the caller never stops rows.
  const volatile uint8_t* stop_rows = nullptr;
};

struct GenerateResult {
  std::vector<std::vector<int64_t>> tokens;  // new tokens per prompt, the stopping EOS excluded
  std::vector<bool> stopped_at_eos;
  std::vector<bool> stopped_by_caller;
  torch::Tensor step_logits;  // [B, steps, V] float32 on the CPU when keep_logits
};

// Prompts are left-padded into one batch; every step feeds one token per row
// through the cache. `cancelled` is polled between steps; `on_step(step, ids)`
// gets the token each row produced at that step (pad for a finished row). With
// `images`, prompt b shows image prompt_image[b] (-1: none): its image-token
// run is replaced by that image's features in the prefill; decoding then
// continues from the cache as for text.
GenerateResult generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                        const GenerateOptions& options, const std::function<bool()>& cancelled,
                        const std::function<void(int64_t, const std::vector<int64_t>&)>& on_step,
                        const ImageFeatures* images = nullptr, const std::vector<int64_t>& prompt_image = {});

}  // namespace ngate
