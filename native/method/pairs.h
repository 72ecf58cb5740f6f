// Training data of the method, as token ids: a PrivacyPair is a sensitive and
// a benign query about the same subject, each followed by its target answer
// (r_safe for the sensitive query, r_org for the benign one).
#pragma once
#include <vector>

#include "model/batch.h"

namespace ngate {

struct TrainPair {
  TrainSequence sensitive;
  TrainSequence benign;
};

// The rows of `pairs[first, first + count)` laid out as [sensitive..., benign...].
std::vector<const TrainSequence*> pair_rows(const std::vector<TrainPair>& pairs, size_t first, size_t count);

}  // namespace ngate
