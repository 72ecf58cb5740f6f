#include "model/minigpt4.h"

#include <algorithm>
#include <stdexcept>

namespace ngate {

namespace {
const std::string kVit = "visual_encoder.";
const std::string kProj = "llama_proj.";
}  // namespace

MiniGpt4Vision::MiniGpt4Vision(MiniGpt4Config config, torch::Device device, torch::ScalarType dtype)
    : config_(std::move(config)), device_(device), dtype_(dtype),
      vit_(std::make_unique<EvaVisionTransformer>(config_.vit, device, dtype)) {
  if (config_.text_hidden_size <= 0) throw std::runtime_error("the language model's hidden size must be positive");
  if (config_.tokens_per_embedding <= 0 || vit_->num_patches() % config_.tokens_per_embedding != 0) {
    throw std::runtime_error("the vision tower's " + std::to_string(vit_->num_patches()) +
                             " patches cannot be grouped by tokens_per_embedding " +
                             std::to_string(config_.tokens_per_embedding));
  }
}

int64_t MiniGpt4Vision::image_tokens() const { return vit_->num_patches() / config_.tokens_per_embedding; }

bool MiniGpt4Vision::owns(const std::string& name) const {
  return name.rfind(kVit, 0) == 0 || name.rfind(kProj, 0) == 0;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> MiniGpt4Vision::expected_parameters() const {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (auto& [name, shape] : vit_->expected_parameters()) out.push_back({kVit + name, shape});
  const int64_t in = config_.vit.width * config_.tokens_per_embedding;
  out.push_back({kProj + "weight", {config_.text_hidden_size, in}});
  out.push_back({kProj + "bias", {config_.text_hidden_size}});
  return out;
}

void MiniGpt4Vision::set_parameter(const std::string& name, const torch::Tensor& value) {
  if (name.rfind(kVit, 0) == 0) return vit_->set_parameter(name.substr(kVit.size()), value);
  const int64_t H = config_.text_hidden_size, in = config_.vit.width * config_.tokens_per_embedding;
  if (name == kProj + "weight" && value.sizes() == at::IntArrayRef({H, in})) {
    proj_w_ = value.to(device_, dtype_, false, true).contiguous();
  } else if (name == kProj + "bias" && value.sizes() == at::IntArrayRef({H})) {
    proj_b_ = value.to(device_, dtype_, false, true).contiguous();
  } else {
    throw std::runtime_error("tensor " + name + " is not a weight of MiniGPT-4's projector, or not of its shape");
  }
}

void MiniGpt4Vision::finish_loading() {
  vit_->finish_loading();
  if (!proj_w_.defined() || !proj_b_.defined()) throw std::runtime_error("llama_proj.weight and llama_proj.bias are needed");
}

std::vector<std::pair<std::string, torch::Tensor>> MiniGpt4Vision::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, t] : vit_->named_parameters()) out.push_back({kVit + name, t});
  out.push_back({kProj + "weight", proj_w_});
  out.push_back({kProj + "bias", proj_b_});
  return out;
}

int64_t MiniGpt4Vision::parameter_bytes() const {
  return vit_->parameter_bytes() + (proj_w_.numel() + proj_b_.numel()) * proj_w_.element_size();
}

ImageFeatures MiniGpt4Vision::encode(const torch::Tensor& pixels) const {
  torch::NoGradGuard no_grad;
  const int64_t D = config_.vit.width, k = config_.tokens_per_embedding, P = vit_->num_patches();
  ImageFeatures out;
  out.image_token_id = config_.image_token_id;
  std::vector<torch::Tensor> chunks;
  // A few images at a time: a 257-token ViT-g's attention and MLP are not small.
  const int64_t N = pixels.size(0), step = 8;
  for (int64_t first = 0; first < N; first += step) {
    const int64_t n = std::min(step, N - first);
    auto h = vit_->forward(pixels.narrow(0, first, n));
    // ln_vision runs in float32 whatever the compute dtype, as the original's LayerNorm subclass does.
    auto e = torch::layer_norm(h.to(torch::kFloat32), {D}, {}, {}, config_.ln_vision_eps).to(dtype_);
    e = e.narrow(1, 1, P).reshape({n, P / k, D * k});
    chunks.push_back(torch::linear(e, proj_w_, proj_b_));
  }
  out.features = chunks.size() == 1 ? chunks[0] : torch::cat(chunks, 0);
  return out;
}

}  // namespace ngate
