// Plain causal-LM training of every weight: how the embedded demo model is
// made (scripts/train-demo-model.js). Not part of the method.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/llama.h"
#include "model/batch.h"

namespace ngate {

struct TrainOptions {
  int64_t epochs = 1;
  double lr = 1e-3;
  double weight_decay = 0.0;
  int64_t batch_size = 16;
  int64_t warmup_steps = 0;  // linear learning-rate warm-up, then constant
  uint64_t seed = 0;         // order of the sequences in each epoch
  int64_t pad_id = 0;
};

// Adam(W) on the mean answer-token cross-entropy of each batch; returns the
// loss of every step. The model must be float32.
std::vector<double> train_causal_lm(LlamaModel& model, const std::vector<TrainSequence>& seqs,
                                    const TrainOptions& options, const std::function<bool()>& cancelled,
                                    const std::function<void(double, double)>& progress);

}  // namespace ngate
