#include "method/collective.h"

#include <stdexcept>

namespace ngate {

void require_same_on_all_ranks(const Collective& group, const std::vector<int64_t>& values, const std::string& what) {
  const int64_t k = static_cast<int64_t>(values.size());
  auto mine = torch::tensor(values, torch::kInt64);
  auto both = torch::cat({mine, -mine});
  group.max(both);
  auto hi = both.narrow(0, 0, k), lo = -both.narrow(0, k, k);
  if (!torch::equal(hi, lo)) {
    std::string detail;
    for (int64_t i = 0; i < k; ++i) {
      if (hi[i].item<int64_t>() != lo[i].item<int64_t>()) {
        detail += (detail.empty() ? "" : ", ") + std::string("value ") + std::to_string(i) + " ranges from " +
                  std::to_string(lo[i].item<int64_t>()) + " to " + std::to_string(hi[i].item<int64_t>());
      }
    }
    throw std::runtime_error("the ranks disagree on " + what + " (" + detail + ")");
  }
}

}  // namespace ngate
