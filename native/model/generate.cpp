#include "model/generate.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace ngate {
namespace {

// transformers' RepetitionPenaltyLogitsProcessor: a token already in the row
// (prompt or answer) has its logit divided by the penalty when positive and
// multiplied by it when negative, so it gets less likely either way.
torch::Tensor penalise(const torch::Tensor& logits, const torch::Tensor& seen, double penalty) {
  auto scaled = torch::where(logits > 0, logits / penalty, logits * penalty);
  return torch::where(seen, scaled, logits);
}

// One draw per row from logits [B, V] after temperature, top-k and top-p, in
// transformers' order (TemperatureLogitsWarper, TopKLogitsWarper,
// TopPLogitsWarper). The draw itself runs on the CPU with the call's own
// generator, so a seed repeats a generation on any device.
torch::Tensor sample(const torch::Tensor& logits, const GenerateOptions& o, const at::Generator& gen) {
  auto x = logits.to(torch::kFloat32) / o.temperature;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const int64_t V = x.size(-1);
  if (o.top_k > 0 && o.top_k < V) {
    auto kth = std::get<0>(x.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);  // [B, 1]
    x = x.masked_fill(x < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    // Keep the smallest set of most likely tokens whose probability reaches top_p (at least one).
    auto sorted = x.sort(-1, /*descending=*/true);
    auto values = std::get<0>(sorted), order = std::get<1>(sorted);
    auto cumulative = values.softmax(-1).cumsum(-1);
    auto drop_sorted = (cumulative - values.softmax(-1)) >= o.top_p;  // mass before this token already reaches top_p
    auto drop = torch::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
    x = x.masked_fill(drop, neg_inf);
  }
  auto probs = x.softmax(-1).to(torch::kCPU);
  return torch::multinomial(probs, 1, /*replacement=*/false, gen).view({-1}).to(logits.device());
}

}  // namespace

GenerateResult generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                        const GenerateOptions& options, const std::function<bool()>& cancelled,
                        const std::function<void(int64_t, const std::vector<int64_t>&)>& on_step,
                        const ImageFeatures* images, const std::vector<int64_t>& prompt_image) {
  torch::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size());
  GenerateResult result;
  result.tokens.resize(B);
  result.stopped_at_eos.assign(B, false);
  result.stopped_by_caller.assign(B, false);
  if (B == 0) return result;
  if (options.temperature < 0 || options.top_p <= 0 || options.top_p > 1 || options.top_k < 0 || options.repetition_penalty <= 0) {
    throw std::runtime_error("generate: temperature must be ≥ 0, top_p in (0, 1], top_k ≥ 0 and the repetition penalty > 0");
  }
  int64_t T = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw std::runtime_error("a prompt has no tokens");
    T = std::max<int64_t>(T, static_cast<int64_t>(p.size()));
  }
  // Left padding: every row's last prompt token sits in the last column.
  auto ids_cpu = torch::full({B, T}, options.pad_id, torch::kInt64);
  auto mask_cpu = torch::zeros({B, T}, torch::kBool);
  bool padded = false;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t off = T - static_cast<int64_t>(p.size());
    padded = padded || off > 0;
    for (size_t j = 0; j < p.size(); ++j) ids_cpu[b][off + static_cast<int64_t>(j)] = p[j];
    mask_cpu.narrow(0, b, 1).narrow(1, off, static_cast<int64_t>(p.size())).fill_(true);
  }
  const auto device = model.device();
  const int64_t steps_max = options.max_new_tokens;
  auto key_mask = torch::ones({B, T + steps_max}, torch::TensorOptions().dtype(torch::kBool).device(device));
  key_mask.narrow(1, 0, T).copy_(mask_cpu);
  KVCache cache = model.make_cache(B, T + std::max<int64_t>(steps_max, 1));
  auto eos = torch::tensor(options.eos_ids.empty() ? std::vector<int64_t>{-1} : options.eos_ids, torch::kInt64).to(device);
  auto finished = torch::zeros({B}, torch::TensorOptions().dtype(torch::kBool).device(device));
  auto generated = torch::full({B, std::max<int64_t>(steps_max, 1)}, options.pad_id,
                               torch::TensorOptions().dtype(torch::kInt64).device(device));
  std::vector<torch::Tensor> kept;
  const bool penalty = options.repetition_penalty != 1.0;
  torch::Tensor seen;  // [B, V] bool: tokens already in each row, for the repetition penalty
  if (penalty) {
    seen = torch::zeros({B, model.config().vocab_size}, torch::kBool);
    seen.scatter_(1, ids_cpu, mask_cpu);
    seen = seen.to(device);
  }
  at::Generator gen = at::detail::createCPUGenerator(options.seed);
  auto caller_stopped = [&](int64_t b) { return options.stop_rows && options.stop_rows[b] != 0; };

  auto ids_dev = ids_cpu.to(device);
  // Only the last column's logits are read (left padding puts every row's last
  // prompt token there): the norm and LM head run on it alone, not on B × T
  // positions (for LLaVA-1.5-7B and 16 prompts of ~600 positions, ~0.6 GB of logits).
  auto prefill = images ? model.forward_embeds(embed_with_images(model, ids_dev, *images, prompt_image),
                                               key_mask.narrow(1, 0, T), padded, &cache, /*last_only=*/true)
                        : model.forward(ids_dev, key_mask.narrow(1, 0, T), padded, &cache, /*last_only=*/true);
  auto logits = prefill.select(1, -1);  // [B, V]
  int64_t steps = 0;
  for (; steps < steps_max; ++steps) {
    if (cancelled && cancelled()) throw std::runtime_error("aborted");
    if (options.stop_rows) {
      std::vector<uint8_t> stop(B);
      for (int64_t b = 0; b < B; ++b) stop[b] = caller_stopped(b) ? 1 : 0;
      finished = finished | torch::tensor(stop, torch::kBool).to(device);
    }
    if (penalty) logits = penalise(logits, seen, options.repetition_penalty);
    if (options.keep_logits) kept.push_back(logits.to(torch::kFloat32));
    auto next = options.temperature > 0 ? sample(logits, options, gen) : logits.argmax(-1);
    next = torch::where(finished, torch::full_like(next, options.pad_id), next);
    generated.select(1, steps).copy_(next);
    if (penalty) seen.scatter_(1, next.unsqueeze(1), true);
    // A row is finished once it has produced an EOS; isin is spelled out for libtorch 1.13.
    finished = finished | (next.unsqueeze(1) == eos.unsqueeze(0)).any(1);
    if (on_step) {
      auto host = next.to(torch::kCPU);
      on_step(steps + 1, std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + B));
    }
    // One small device→host read per step decides whether to stop early.
    if (finished.all().item<bool>() || steps + 1 == steps_max) {
      ++steps;
      break;
    }
    logits = model.forward(next.unsqueeze(1), key_mask.narrow(1, 0, cache.length + 1), true, &cache, false)
                 .select(1, 0);
  }

  auto gen_cpu = generated.narrow(1, 0, steps).to(torch::kCPU).contiguous();
  auto acc = gen_cpu.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t id = acc[b][s];
      if (std::find(options.eos_ids.begin(), options.eos_ids.end(), id) != options.eos_ids.end()) {
        result.stopped_at_eos[b] = true;
        break;
      }
      result.tokens[b].push_back(id);
    }
    result.stopped_by_caller[b] = !result.stopped_at_eos[b] && caller_stopped(b);
  }
  if (options.keep_logits && !kept.empty()) result.step_logits = torch::stack(kept, 1).to(torch::kCPU);
  return result;
}

}  // namespace ngate
