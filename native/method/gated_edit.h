// gatedEdit (eq. 7): fine-tune the FFN of the gate's layers on
// L_sen + α·L_benign, where the gradient reaching the FFN from subject
// positions is multiplied by the binary gate (M_l > τ) and the gradient from
// every other position passes unchanged. The same loop, ungated, with a KL
// term in place of L_benign and EasyEdit's step order, is DINM's edit.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "method/collective.h"
#include "method/pairs.h"
#include "model/llama.h"

namespace ngate {

struct EditOptions {
  std::vector<int64_t> layers;
  std::vector<std::string> params = {"gate_proj", "up_proj", "down_proj"};
  torch::Tensor keep;  // [L, H] bool: the gate of each layer (ignored when !gated)
  bool gated = true;
  int64_t epochs = 10;
  double lr = 1e-5;
  double alpha = 1.25;
  int64_t batch_size = 8;
  int64_t pad_id = 0;
  // Layers below the first edited layer never change during the edit: compute
  // their output once per batch for the whole edit instead of every epoch
  // (false: the plain full pass every step, the reference for the shortcut).
  bool reuse_lower_layers = true;
  // Data-parallel only: compare the edited weights across ranks every this
  // many steps (0: only before the first step and after the last).
  int64_t check_every = 50;

  // What DINM as EasyEdit implements it changes; the defaults are eq. 7's edit.
  // The loss of a pair is sensitive_weight·L_sen + α·B, with B either L_benign
  // (cross-entropy towards r_org) or the KL divergence KL(p_before ‖ p_now) of
  // the next-token distributions at the benign answer's positions, p_before
  // from the weights as they were when the call began.
  double sensitive_weight = 1.0;
  bool benign_kl = false;
  // EasyEdit computes its KL term without a gradient: false keeps the term in
  // the reported loss (and the stop test) but not in the update.
  bool kl_gradient = true;
  // Adam steps on each batch before the next one (EasyEdit: num_steps on each request).
  int64_t steps_per_batch = 1;
  // A new Adam (fresh moments) for every batch, as EasyEdit builds one per request.
  bool fresh_optimizer_per_batch = false;
  // > 0: a batch's remaining steps are skipped once its loss is below this (EasyEdit: 1e-4).
  double stop_below = 0;
  // > 0: after every step each weight is clamped to within this of its value
  // when its batch began (EasyEdit's norm_constraint).
  double norm_constraint = 0;
};

struct EditResult {
  // Per epoch: the mean per-pair loss over the steps taken (one step per batch: the mean over the pairs).
  std::vector<double> epoch_losses;
  // The loss of every step taken, before its update, in order.
  std::vector<double> step_losses;
};

// Gradient routing at the FFN output: y = k ⊙ y + (1 − k) ⊙ y.detach(), with
// k = the gate at subject positions and 1 elsewhere. The forward value is
// unchanged; the upstream gradient into the FFN is multiplied by k.
LayerHooks gate_hooks(const std::vector<int64_t>& layers, const torch::Tensor& keep, const torch::Tensor& subject);

// `images`: the features of the images the pairs' sequences name (LLaVA), or null.
// `group`: data-parallel over its ranks (see gated_edit.cpp), or null for one process.
EditResult gated_edit(LlamaModel& model, const std::vector<TrainPair>& pairs, const EditOptions& options,
                      const std::function<bool()>& cancelled, const std::function<void(double, double)>& progress,
                      const ImageFeatures* images = nullptr, const Collective* group = nullptr);

// An integer checksum of the tensors' bits (their bit patterns summed as
// integers): equal across ranks when the weights are, and changed by any
// single differing element.
int64_t bits_checksum(const std::vector<torch::Tensor>& tensors);

// The gradients of the loss of one batch (all pairs) with respect to the
// edited FFN weights, without updating them: [layer][param] order.
std::vector<torch::Tensor> edit_gradients(LlamaModel& model, const std::vector<TrainPair>& pairs,
                                          const EditOptions& options, const ImageFeatures* images = nullptr);

// What an independent check of eq. 7 needs from one ungated backward pass at
// `layer`: the FFN input x, the gate and up projections g and u, and the
// upstream gradient δ = ∂L/∂f_l at the FFN output; each [rows, T, ·], float32, CPU.
struct FfnProbe {
  torch::Tensor x, g, u, delta, subject;
};
FfnProbe probe_ffn(LlamaModel& model, const std::vector<TrainPair>& pairs, int64_t layer, double alpha, int64_t pad_id);

}  // namespace ngate
