// What the method's data-parallel loop needs from a process group, without
// knowing c10d: this process's place in the group and blocking in-place
// reductions over the ranks (the binding wires them to native/dist).
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace ngate {

struct Collective {
  int64_t rank = 0;
  int64_t size = 1;
  // Reduce `t` over the ranks in place; every rank gets the same values.
  std::function<void(torch::Tensor&)> sum;
  std::function<void(torch::Tensor&)> max;
};

// Throws, on every rank alike, unless every rank passed the same `values`
// (one max-reduction of [v, −v]); `what` names them in the message.
void require_same_on_all_ranks(const Collective& group, const std::vector<int64_t>& values, const std::string& what);

}  // namespace ngate
