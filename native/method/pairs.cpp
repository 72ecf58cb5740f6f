#include "method/pairs.h"

namespace ngate {

std::vector<const TrainSequence*> pair_rows(const std::vector<TrainPair>& pairs, size_t first, size_t count) {
  std::vector<const TrainSequence*> rows;
  for (size_t i = first; i < first + count; ++i) rows.push_back(&pairs[i].sensitive);
  for (size_t i = first; i < first + count; ++i) rows.push_back(&pairs[i].benign);
  return rows;
}

}  // namespace ngate
