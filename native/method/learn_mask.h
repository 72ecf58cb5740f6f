// learnMask: per-pair vectors m_l that scale the subject tokens' features
// (eq. 2), learned with the model frozen on L_sen + α·L_benign + λ·‖m − 1‖₁
// (eq. 3–5); several layers at once are the joint optimisation of eq. 8.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/llama.h"
#include "method/pairs.h"

namespace ngate {

enum class HookPoint { Ffn, Block };

struct MaskOptions {
  std::vector<int64_t> layers;
  HookPoint hook_point = HookPoint::Ffn;
  double alpha = 1.25;
  double l1 = 1e-4;
  double lr = 0.05;
  int64_t steps = 20;
  int64_t batch_size = 8;  // pairs per optimisation batch
  int64_t pad_id = 0;
  // Layers below the first masked layer see no mask, so their output is the
  // same at every step: compute it once per batch (false: the plain full pass
  // every step, kept to check the shortcut against).
  bool reuse_lower_layers = true;
  // Positions before the first subject token see no mask at any layer (the
  // attention is causal): keep their keys and values from one pass and
  // recompute only the suffix from there at every step (false: every position
  // every step).
  bool reuse_prefix = true;
};

struct MaskResult {
  torch::Tensor masks;   // [N, L, H] float32, CPU
  torch::Tensor losses;  // [N, 3] float32, CPU: L_sen, L_benign, ‖m − 1‖₁ (summed over layers) after the last step
};

// Hooks that scale the subject positions' features at `layers` by the rows'
// masks: masks [R, L, H] float32 (one per batch row), subject [R, T] bool.
LayerHooks mask_hooks(const std::vector<int64_t>& layers, HookPoint point, const torch::Tensor& masks,
                      const torch::Tensor& subject);

// `images`: the features of the images the pairs' sequences name (LLaVA), or null.
MaskResult learn_masks(const LlamaModel& model, const std::vector<TrainPair>& pairs, const MaskOptions& options,
                       const std::function<bool()>& cancelled, const std::function<void(double, double)>& progress,
                       const ImageFeatures* images = nullptr);

// Logits [B, T, V] float32 (CPU) of sequences with masks applied ([B, L, H]);
// the plain-forward check of the mask hook.
torch::Tensor masked_logits(const LlamaModel& model, const std::vector<TrainSequence>& seqs,
                            const std::vector<int64_t>& layers, HookPoint point, const torch::Tensor& masks,
                            int64_t pad_id, const ImageFeatures* images = nullptr);

}  // namespace ngate
