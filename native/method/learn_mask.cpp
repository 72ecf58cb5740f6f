#include "method/learn_mask.h"

#include <algorithm>
#include <stdexcept>

namespace ngate {

LayerHooks mask_hooks(const std::vector<int64_t>& layers, HookPoint point, const torch::Tensor& masks,
                      const torch::Tensor& subject) {
  // Eq. 2: f_l^S ← f_l^S ⊙ m_l at subject positions, f_l unchanged elsewhere.
  auto selected = subject.to(torch::kFloat32).unsqueeze(-1);  // [R, T, 1]
  LayerHook hook = [layers, masks, selected](int64_t layer, const torch::Tensor& f) -> torch::Tensor {
    auto it = std::find(layers.begin(), layers.end(), layer);
    if (it == layers.end()) return f;
    const int64_t li = it - layers.begin();
    auto m = masks.select(1, li).unsqueeze(1);        // [R, 1, H]
    auto scale = 1.0 + selected * (m - 1.0);           // m at subject positions, 1 elsewhere
    return (f.to(torch::kFloat32) * scale).to(f.scalar_type());
  };
  LayerHooks hooks;
  if (point == HookPoint::Ffn) hooks.ffn = hook;
  else hooks.block = hook;
  return hooks;
}

static void check_layers(const LlamaModel& model, const std::vector<int64_t>& layers) {
  if (layers.empty()) throw std::runtime_error("layers: at least one layer is needed");
  for (int64_t l : layers) {
    if (l < 0 || l >= model.config().num_layers) {
      throw std::runtime_error("layers: layer " + std::to_string(l) + " is outside the model's " +
                               std::to_string(model.config().num_layers) + " layers");
    }
  }
}

MaskResult learn_masks(const LlamaModel& model, const std::vector<TrainPair>& pairs, const MaskOptions& o,
                       const std::function<bool()>& cancelled, const std::function<void(double, double)>& progress,
                       const ImageFeatures* images) {
  check_layers(model, o.layers);
  if (o.steps < 1) throw std::runtime_error("steps must be at least 1");
  if (o.batch_size < 1) throw std::runtime_error("batchSize must be at least 1");
  const int64_t N = static_cast<int64_t>(pairs.size());
  const int64_t L = static_cast<int64_t>(o.layers.size());
  const int64_t H = model.config().hidden_size;
  MaskResult result;
  result.masks = torch::ones({N, L, H}, torch::kFloat32);
  result.losses = torch::zeros({N, 3}, torch::kFloat32);
  const auto device = model.device();
  const double total_steps = static_cast<double>(((N + o.batch_size - 1) / o.batch_size) * o.steps);
  double done = 0;

  // Each pair's masks are independent of the others in its batch (per-element
  // Adam, a sum of per-pair losses), so the batches may be formed in any
  // order: pairs whose subject starts at similar positions go together, which
  // lengthens the kept prefix of each batch and shortens its padding.
  std::vector<int64_t> order(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) order[static_cast<size_t>(i)] = i;
  if (o.reuse_prefix) {
    auto first_subject = [](const TrainPair& p) {
      auto first = [](const TrainSequence& s) {
        return s.subject_positions.empty() ? s.answer_start - 1
                                           : *std::min_element(s.subject_positions.begin(), s.subject_positions.end());
      };
      return std::min(first(p.sensitive), first(p.benign));
    };
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return first_subject(pairs[static_cast<size_t>(a)]) < first_subject(pairs[static_cast<size_t>(b)]);
    });
  }
  std::vector<TrainPair> ordered;
  ordered.reserve(pairs.size());
  for (int64_t i : order) ordered.push_back(pairs[static_cast<size_t>(i)]);
  const auto order_index = torch::tensor(order, torch::kInt64);

  for (int64_t first = 0; first < N; first += o.batch_size) {
    const int64_t P = std::min<int64_t>(o.batch_size, N - first);
    const auto rows = pair_rows(ordered, first, P);
    auto batch = make_batch(rows, o.pad_id, model.config().vocab_size, device, images ? images->image_token_id : -1);
    // Image features are merged once per batch: the masks never reach them.
    attach_images(batch, rows, model, images);
    // One leaf per pair and layer, initialised to 1. Adam is per element and the
    // loss is a sum over pairs, so each pair's mask follows its own trajectory.
    auto masks = torch::ones({P, L, H}, torch::TensorOptions().dtype(torch::kFloat32).device(device)).set_requires_grad(true);
    torch::optim::Adam adam({masks}, torch::optim::AdamOptions(o.lr));
    auto row_pair = torch::cat({torch::arange(P), torch::arange(P)}).to(device);  // sensitive rows, then benign rows

    // The hidden states entering the first masked layer do not depend on m.
    const int64_t num_layers = model.config().num_layers;
    const int64_t first_masked = o.reuse_lower_layers ? *std::min_element(o.layers.begin(), o.layers.end()) : 0;
    const int64_t T = batch.ids.size(1);
    const auto attn = model.attention_inputs(batch.key_mask, 0, T, batch.padded);
    torch::Tensor below;
    {
      torch::NoGradGuard no_grad;
      // Image features, when a row shows an image, are already merged into batch.embeds.
      below = model.run_layers(batch.embeds.defined() ? batch.embeds : model.embed(batch.ids), attn, nullptr, 0, first_masked);
    }
    // Nor do the keys and values of positions before the batch's first subject
    // token (an image in front of the question included), at any layer.
    int64_t prefix = 0;
    KVCache kept;
    if (o.reuse_prefix) {
      // The earliest position any row's mask or loss touches: its first subject
      // token, or its first answer target should a row lack subject tokens.
      auto pos = torch::arange(T, batch.ids.options()).unsqueeze(0).expand_as(batch.ids);
      auto never = torch::full_like(pos, T);
      auto touched = batch.subject.logical_or(batch.targets.ne(-100));
      prefix = torch::where(touched, pos, never).amin().item<int64_t>();
    }
    if (prefix > 0) {
      // One pass over the prefix positions alone (causal: they never see what follows),
      // with buffers for the prefix of the layers that run at every step, and no more.
      torch::NoGradGuard no_grad;
      kept = model.make_cache(batch.ids.size(0), prefix, first_masked);
      const auto prefix_attn = model.attention_inputs(batch.key_mask.narrow(1, 0, prefix), 0, prefix, batch.padded);
      model.run_layers(below.narrow(1, 0, prefix), prefix_attn, &kept, first_masked, num_layers);
      kept.length = prefix;
      kept.frozen = true;
    }
    const int64_t S = T - prefix;  // positions recomputed at every step
    const auto step_attn = prefix > 0 ? model.attention_inputs(batch.key_mask, prefix, S, batch.padded) : attn;
    const auto step_below = below.narrow(1, prefix, S);
    const auto step_subject = batch.subject.narrow(1, prefix, S);
    // The prefix holds no answer token; the loss reads the answer positions only.
    const auto answers = make_answer_index(batch.targets.narrow(1, prefix, S));

    auto evaluate = [&]() {
      auto row_masks = masks.index_select(0, row_pair);  // [2P, L, H]
      auto hooks = mask_hooks(o.layers, o.hook_point, row_masks, step_subject);
      auto h = model.run_layers(step_below, step_attn, prefix > 0 ? &kept : nullptr, first_masked, num_layers, &hooks);
      auto per_row = answer_losses_at(model, h, answers);  // [2P]
      auto sen = per_row.narrow(0, 0, P), ben = per_row.narrow(0, P, P);
      auto l1 = (masks - 1.0).abs().sum({1, 2});  // ‖m − 1‖₁ over every masked layer (eq. 5, eq. 8)
      return std::make_tuple(sen, ben, l1);
    };

    // The first step whose loss is not finite, tracked on the device and read
    // once per batch (no host sync in the step loop): -1 while all are finite.
    auto first_bad = torch::full({}, -1, torch::TensorOptions().dtype(torch::kInt64).device(model.device()));
    for (int64_t step = 0; step < o.steps; ++step) {
      if (cancelled && cancelled()) throw std::runtime_error("aborted");
      adam.zero_grad();
      auto [sen, ben, l1] = evaluate();
      auto loss = (sen + o.alpha * ben + o.l1 * l1).sum();
      {
        torch::NoGradGuard no_grad;
        first_bad = torch::where((first_bad < 0) & loss.detach().isfinite().logical_not(), torch::full_like(first_bad, step), first_bad);
      }
      loss.backward();
      adam.step();
      {
        torch::NoGradGuard no_grad;
        masks.clamp_(-1.0, 1.0);  // m stays in [-1, 1] after every step
      }
      done += 1;
      if (progress) progress(done, total_steps);
    }
    torch::NoGradGuard no_grad;
    if (const int64_t bad = first_bad.item<int64_t>(); bad >= 0) {
      throw std::runtime_error("mask step " + std::to_string(bad + 1) + " of the batch starting at pair " + std::to_string(first) +
                               ": the loss is not finite (NaN or Inf); no masks are returned (lower lr, or check the model's weights)");
    }
    auto [sen, ben, l1] = evaluate();
    // Back to the caller's order.
    const auto where = order_index.narrow(0, first, P);
    result.masks.index_copy_(0, where, masks.detach().to(torch::kCPU));
    result.losses.index_copy_(0, where, torch::stack({sen, ben, l1}, 1).to(torch::kCPU));
  }
  return result;
}

torch::Tensor masked_logits(const LlamaModel& model, const std::vector<TrainSequence>& seqs,
                            const std::vector<int64_t>& layers, HookPoint point, const torch::Tensor& masks,
                            int64_t pad_id, const ImageFeatures* images) {
  check_layers(model, layers);
  torch::NoGradGuard no_grad;
  std::vector<const TrainSequence*> rows;
  for (const auto& s : seqs) rows.push_back(&s);
  auto batch = make_batch(rows, pad_id, model.config().vocab_size, model.device(), images ? images->image_token_id : -1);
  attach_images(batch, rows, model, images);
  auto hooks = mask_hooks(layers, point, masks.to(model.device(), torch::kFloat32), batch.subject);
  return batch_forward(model, batch, &hooks).to(torch::kFloat32).to(torch::kCPU);
}

}  // namespace ngate
