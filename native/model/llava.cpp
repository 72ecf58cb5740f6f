#include "model/llava.h"

#include <algorithm>
#include <stdexcept>

namespace ngate {

namespace {
const std::string kTower = "vision_tower.";
const std::string kProjector = "multi_modal_projector.";
}  // namespace

LlavaVision::LlavaVision(LlavaConfig config, torch::Device device, torch::ScalarType dtype)
    : config_(std::move(config)), device_(device), dtype_(dtype),
      tower_(std::make_unique<ClipVisionModel>(config_.vision, device, dtype)) {
  if (config_.text_hidden_size <= 0) throw std::runtime_error("text_config: hidden_size must be positive");
  if (config_.feature_layers.empty()) throw std::runtime_error("vision_feature_layer: at least one layer is needed");
  const int64_t n = config_.vision.num_layers;
  for (int64_t l : config_.feature_layers) {
    // hidden_states has num_layers + 1 entries; Python indexing allows -(n+1) .. n.
    if (l < -(n + 1) || l > n) {
      throw std::runtime_error("vision_feature_layer " + std::to_string(l) + " is outside the vision tower's " +
                               std::to_string(n + 1) + " hidden states");
    }
  }
  if (!activation_known(config_.projector_act)) {
    throw std::runtime_error("projector_hidden_act " + config_.projector_act + " is not supported");
  }
}

int64_t LlavaVision::image_tokens() const { return tower_->num_patches() + (config_.keep_cls ? 1 : 0); }

bool LlavaVision::owns(const std::string& name) const {
  return name.rfind(kTower, 0) == 0 || name.rfind(kProjector, 0) == 0;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> LlavaVision::expected_parameters() const {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (auto& [name, shape] : tower_->expected_parameters()) out.push_back({kTower + name, shape});
  const int64_t in = config_.vision.hidden_size * static_cast<int64_t>(config_.feature_layers.size());
  const int64_t H = config_.text_hidden_size;
  out.push_back({kProjector + "linear_1.weight", {H, in}});
  if (config_.projector_bias) out.push_back({kProjector + "linear_1.bias", {H}});
  out.push_back({kProjector + "linear_2.weight", {H, H}});
  if (config_.projector_bias) out.push_back({kProjector + "linear_2.bias", {H}});
  return out;
}

void LlavaVision::set_parameter(const std::string& name, const torch::Tensor& value) {
  if (name.rfind(kTower, 0) == 0) return tower_->set_parameter(name.substr(kTower.size()), value);
  for (const auto& [expected, shape] : expected_parameters()) {
    if (expected != name) continue;
    if (value.sizes() != at::IntArrayRef(shape)) {
      throw std::runtime_error("tensor " + name + " does not have the shape the config implies");
    }
    projector_[name] = value.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
    return;
  }
  throw std::runtime_error("tensor " + name + " is not a weight of the LLaVA vision side");
}

void LlavaVision::finish_loading() {
  tower_->finish_loading();
  auto get = [&](const std::string& n) -> torch::Tensor {
    auto it = projector_.find(kProjector + n);
    if (it == projector_.end()) throw std::runtime_error("tensor " + kProjector + n + " is missing from the checkpoint");
    return it->second;
  };
  linear1_w_ = get("linear_1.weight");
  linear2_w_ = get("linear_2.weight");
  if (config_.projector_bias) {
    linear1_b_ = get("linear_1.bias");
    linear2_b_ = get("linear_2.bias");
  }
}

std::vector<std::pair<std::string, torch::Tensor>> LlavaVision::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, t] : tower_->named_parameters()) out.push_back({kTower + name, t});
  for (const auto& [name, shape] : expected_parameters()) {
    if (name.rfind(kProjector, 0) == 0) out.push_back({name, projector_.at(name)});
  }
  return out;
}

int64_t LlavaVision::parameter_bytes() const {
  int64_t n = tower_->parameter_bytes();
  for (const auto& [name, t] : projector_) n += t.numel() * t.element_size();
  return n;
}

ImageFeatures LlavaVision::encode(const torch::Tensor& pixels) const {
  torch::NoGradGuard no_grad;
  const int64_t n = config_.vision.num_layers;
  std::vector<int64_t> index;
  for (int64_t l : config_.feature_layers) index.push_back(l < 0 ? n + 1 + l : l);
  const int64_t upto = *std::max_element(index.begin(), index.end());
  ImageFeatures out;
  out.image_token_id = config_.image_token_id;
  std::vector<torch::Tensor> chunks;
  // A few images at a time: the attention of a 577-token ViT is not small.
  const int64_t N = pixels.size(0), step = 8;
  for (int64_t first = 0; first < N; first += step) {
    auto states = tower_->hidden_states(pixels.narrow(0, first, std::min(step, N - first)), upto);
    std::vector<torch::Tensor> pool;
    for (int64_t i : index) pool.push_back(config_.keep_cls ? states[i] : states[i].narrow(1, 1, states[i].size(1) - 1));
    auto selected = pool.size() == 1 ? pool[0] : torch::cat(pool, -1);
    auto h = activation(config_.projector_act, torch::linear(selected, linear1_w_, linear1_b_));
    chunks.push_back(torch::linear(h, linear2_w_, linear2_b_));
  }
  out.features = chunks.size() == 1 ? chunks[0] : torch::cat(chunks, 0);
  return out;
}

}  // namespace ngate
