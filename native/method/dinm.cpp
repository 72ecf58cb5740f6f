#include "method/dinm.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace ngate {

namespace {

// The hidden states of one unpadded sequence after every decoder layer, the
// last one through the final norm (hidden_states[1..L] of transformers).
std::vector<torch::Tensor> layer_states(const LlamaModel& model, const std::vector<int64_t>& ids) {
  const int64_t V = model.config().vocab_size, L = model.config().num_layers;
  for (int64_t id : ids) {
    if (id < 0 || id >= V) throw std::runtime_error("token id " + std::to_string(id) + " is outside the vocabulary");
  }
  auto t = torch::tensor(ids, torch::kInt64).unsqueeze(0).to(model.device());
  auto mask = torch::ones_like(t, torch::kBool);
  auto attn = model.attention_inputs(mask, 0, t.size(1), false);
  auto h = model.embed(t);
  std::vector<torch::Tensor> out;
  for (int64_t l = 0; l < L; ++l) {
    h = model.run_layers(h, attn, nullptr, l, l + 1);
    out.push_back(h[0]);
  }
  // transformers applies the final norm to the last entry of hidden_states; the
  // model's norm is reached through the weight it is built from.
  torch::Tensor norm_weight;
  for (const auto& [name, w] : model.named_parameters()) {
    if (name == "model.norm.weight") norm_weight = w;
  }
  if (!norm_weight.defined()) throw std::runtime_error("the model has no model.norm.weight");
  auto xf = out.back().to(torch::kFloat32);
  xf = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + model.config().rms_norm_eps);
  out.back() = norm_weight * xf.to(out.back().scalar_type());
  return out;
}

}  // namespace

torch::Tensor answer_distances(const LlamaModel& model,
                               const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>& answers) {
  torch::NoGradGuard no_grad;
  const int64_t P = static_cast<int64_t>(answers.size()), L = model.config().num_layers;
  auto out = torch::zeros({P, L}, torch::kFloat64);
  auto acc = out.accessor<double, 2>();
  for (int64_t p = 0; p < P; ++p) {
    const auto& [safe, unsafe] = answers[static_cast<size_t>(p)];
    if (safe.empty() || unsafe.empty()) throw std::runtime_error("an answer has no tokens");
    auto a = layer_states(model, safe), b = layer_states(model, unsafe);
    const int64_t T = static_cast<int64_t>(std::min(safe.size(), unsafe.size()));
    for (int64_t l = 0; l < L; ++l) {
      auto d = a[l].narrow(0, 0, T).to(torch::kFloat64) - b[l].narrow(0, 0, T).to(torch::kFloat64);
      acc[p][l] = d.pow(2).sum().sqrt().item<double>();
    }
  }
  return out;
}

}  // namespace ngate
