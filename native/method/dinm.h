// DINM's location of the "toxic" layer as EasyEdit implements it
// (SafetyEditor._locate_toxic_layer): the safe and the unsafe answer go
// through the model on their own, and the layer whose hidden states of the two
// lie furthest apart (Euclidean distance) is where DINM edits. The edit itself
// is the loop of gated_edit with its DINM settings.
#pragma once
#include <torch/torch.h>

#include <utility>
#include <vector>

#include "model/llama.h"

namespace ngate {

// For each pair (safe ids, unsafe ids): the distance at every decoder layer l
// between the two answers' hidden states after layer l, as transformers'
// hidden_states[l + 1] holds them (the last entry has the final norm applied).
// The two are compared over the positions both have. [pairs, num_layers], float64.
torch::Tensor answer_distances(const LlamaModel& model,
                               const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>& answers);

}  // namespace ngate
