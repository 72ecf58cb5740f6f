#include "model/vision.h"

#include <stdexcept>

namespace ngate {

torch::Tensor embed_with_images(const LlamaModel& decoder, const torch::Tensor& ids, const ImageFeatures& images,
                                const std::vector<int64_t>& row_image) {
  const int64_t B = ids.size(0), V = decoder.config().vocab_size;
  const int64_t token = images.image_token_id;
  auto is_image = ids.eq(token);
  // The image token's own embedding row is never used; an id past the vocabulary must not be looked up.
  auto h = decoder.embed(torch::where(is_image, torch::zeros_like(ids), ids).clamp(0, V - 1));
  if (static_cast<int64_t>(row_image.size()) != B) throw std::runtime_error("one image index per row is needed");
  // One host read of the per-row counts to check them; the merge itself is a
  // single masked scatter (row-major order: row by row, position by position).
  auto counts = is_image.sum(1).to(torch::kCPU);
  auto counts_a = counts.accessor<int64_t, 1>();
  std::vector<int64_t> shown;  // the image of each row that shows one, in row order
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = counts_a[b];
    const int64_t img = row_image[static_cast<size_t>(b)];
    if (img < 0) {
      if (n != 0) throw std::runtime_error("row " + std::to_string(b) + " holds image tokens but no image was given for it");
      continue;
    }
    if (!images.features.defined() || img >= images.features.size(0)) throw std::runtime_error("image index out of range");
    const int64_t P = images.features.size(1);
    if (n != P) {
      throw std::runtime_error("row " + std::to_string(b) + " holds " + std::to_string(n) + " image tokens, its image has " +
                               std::to_string(P) + " features");
    }
    shown.push_back(img);
  }
  if (shown.empty()) return h;
  auto features = images.features.index_select(0, torch::tensor(shown, torch::kInt64).to(images.features.device()));
  return h.masked_scatter(is_image.unsqueeze(-1), features.to(h.scalar_type()));
}

}  // namespace ngate
