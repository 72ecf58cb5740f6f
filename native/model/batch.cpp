#include "model/batch.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace ngate {

SequenceBatch make_batch(const std::vector<const TrainSequence*>& seqs, int64_t pad_id, int64_t vocab_size,
                         torch::Device device, int64_t image_id) {
  const int64_t B = static_cast<int64_t>(seqs.size());
  int64_t T = 0;
  for (const auto* s : seqs) T = std::max<int64_t>(T, static_cast<int64_t>(s->ids.size()));
  auto ids = torch::full({B, T}, pad_id, torch::kInt64);
  auto mask = torch::zeros({B, T}, torch::kBool);
  auto subject = torch::zeros({B, T}, torch::kBool);
  auto targets = torch::full({B, T}, -100, torch::kInt64);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<bool, 2>();
  auto subj_a = subject.accessor<bool, 2>();
  auto tgt_a = targets.accessor<int64_t, 2>();
  SequenceBatch batch;
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = *seqs[b];
    const int64_t n = static_cast<int64_t>(s.ids.size());
    if (s.answer_start < 1 || s.answer_start >= n) {
      throw std::runtime_error("a training sequence has no answer tokens after its prompt");
    }
    batch.padded = batch.padded || n < T;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t id = s.ids[t];
      const bool in_vocab = id >= 0 && id < vocab_size;
      if (!in_vocab && (id != image_id || t >= s.answer_start)) {
        throw std::runtime_error("token id " + std::to_string(id) + " is outside the vocabulary");
      }
      ids_a[b][t] = id;
      mask_a[b][t] = true;
    }
    for (int64_t p : s.subject_positions) {
      if (p < 0 || p >= s.answer_start) throw std::runtime_error("a subject position lies outside the query");
      subj_a[b][p] = true;
    }
    // Position t predicts token t + 1: answer tokens are the targets of the positions just before them.
    for (int64_t t = s.answer_start; t < n; ++t) tgt_a[b][t - 1] = s.ids[t];
  }
  batch.ids = ids.to(device);
  batch.key_mask = mask.to(device);
  batch.subject = subject.to(device);
  batch.targets = targets.to(device);
  return batch;
}

void attach_images(SequenceBatch& batch, const std::vector<const TrainSequence*>& seqs, const LlamaModel& model,
                   const ImageFeatures* images) {
  std::vector<int64_t> row_image;
  bool any = false;
  for (const auto* s : seqs) {
    row_image.push_back(s->image);
    any = any || s->image >= 0;
  }
  if (!any) return;
  if (!images) throw std::runtime_error("a sequence names an image, but no images were given");
  torch::NoGradGuard no_grad;  // the embeddings and the vision side stay frozen
  batch.embeds = embed_with_images(model, batch.ids, *images, row_image);
  // Images are never subject tokens (DESIGN.md): a mask or gate never touches them.
  if ((batch.subject & batch.ids.eq(images->image_token_id)).any().item<bool>()) {
    throw std::runtime_error("a subject position lies on an image token");
  }
}

torch::Tensor batch_forward(const LlamaModel& model, const SequenceBatch& batch, const LayerHooks* hooks) {
  if (batch.embeds.defined()) return model.forward_embeds(batch.embeds, batch.key_mask, batch.padded, nullptr, false, hooks);
  return model.forward(batch.ids, batch.key_mask, batch.padded, nullptr, false, hooks);
}

torch::Tensor answer_losses(const torch::Tensor& logits, const torch::Tensor& targets) {
  const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
  auto ce = torch::nn::functional::cross_entropy(
      logits.reshape({B * T, V}).to(torch::kFloat32), targets.reshape({B * T}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone));
  auto counted = targets.ne(-100).to(torch::kFloat32);
  return (ce.view({B, T}) * counted).sum(1) / counted.sum(1).clamp_min(1.0);
}

AnswerIndex make_answer_index(const torch::Tensor& targets) {
  AnswerIndex idx;
  const int64_t B = targets.size(0), T = targets.size(1);
  auto flat_targets = targets.reshape({B * T});
  idx.flat = flat_targets.ne(-100).nonzero().view({-1});
  idx.row = torch::div(idx.flat, T, "floor");
  idx.targets = flat_targets.index_select(0, idx.flat);
  idx.counts = targets.ne(-100).sum(1).to(torch::kFloat32).clamp_min(1.0);
  idx.rows = B;
  return idx;
}

torch::Tensor answer_losses_at(const LlamaModel& model, const torch::Tensor& h, const AnswerIndex& idx) {
  const int64_t H = h.size(2);
  auto selected = h.reshape({-1, H}).index_select(0, idx.flat);  // [N, H]
  auto logits = model.head(selected.unsqueeze(0)).squeeze(0);     // [N, V]
  auto ce = torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat32), idx.targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  auto sums = torch::zeros({idx.rows}, ce.options()).index_add(0, idx.row, ce);
  return sums / idx.counts;
}

}  // namespace ngate
