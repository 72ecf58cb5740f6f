#include "model/generate.h"

#include <algorithm>
#include <stdexcept>

namespace ngate {

GreedyResult greedy_generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                             const GreedyOptions& options, const std::function<bool()>& cancelled,
                             const std::function<void(int64_t, int64_t)>& progress, const ImageFeatures* images,
                             const std::vector<int64_t>& prompt_image) {
  torch::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size());
  GreedyResult result;
  result.tokens.resize(B);
  result.stopped_at_eos.assign(B, false);
  if (B == 0) return result;
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
    if (options.keep_logits) kept.push_back(logits.to(torch::kFloat32));
    auto next = logits.argmax(-1);
    next = torch::where(finished, torch::full_like(next, options.pad_id), next);
    generated.select(1, steps).copy_(next);
    // A row is finished once it has produced an EOS; isin is spelled out for libtorch 1.13.
    finished = finished | (next.unsqueeze(1) == eos.unsqueeze(0)).any(1);
    if (progress) progress(steps + 1, steps_max);
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
  }
  if (options.keep_logits && !kept.empty()) result.step_logits = torch::stack(kept, 1).to(torch::kCPU);
  return result;
}

}  // namespace ngate
