#include "model/clip.h"

#include <cmath>
#include <stdexcept>

namespace ngate {

namespace {
std::string shape_string(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

bool activation_known(const std::string& name) {
  return name == "quick_gelu" || name == "gelu" || name == "gelu_new" || name == "gelu_pytorch_tanh" ||
         name == "relu" || name == "silu";
}

torch::Tensor activation(const std::string& name, const torch::Tensor& x) {
  // quick_gelu is CLIP's x·σ(1.702x); gelu is the exact erf form (ACT2FN["gelu"]).
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  if (name == "gelu") return torch::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  if (name == "silu") return torch::silu(x);
  throw std::runtime_error("activation " + name + " is not supported");
}

ClipVisionModel::ClipVisionModel(ClipVisionConfig config, torch::Device device, torch::ScalarType dtype)
    : config_(std::move(config)), device_(device), dtype_(dtype) {
  const auto& c = config_;
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 ||
      c.image_size <= 0 || c.patch_size <= 0 || c.num_channels <= 0) {
    throw std::runtime_error("vision_config: sizes must be positive");
  }
  if (c.hidden_size % c.num_heads != 0) throw std::runtime_error("vision_config: num_attention_heads must divide hidden_size");
  if (!activation_known(c.hidden_act)) throw std::runtime_error("vision_config: hidden_act " + c.hidden_act + " is not supported");
}

int64_t ClipVisionModel::num_patches() const {
  const int64_t side = config_.image_size / config_.patch_size;
  return side * side;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ClipVisionModel::expected_parameters() const {
  const auto& c = config_;
  const int64_t D = c.hidden_size, I = c.intermediate_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"embeddings.class_embedding", {D}});
  out.push_back({"embeddings.patch_embedding.weight", {D, c.num_channels, c.patch_size, c.patch_size}});
  out.push_back({"embeddings.position_embedding.weight", {num_patches() + 1, D}});
  out.push_back({"pre_layrnorm.weight", {D}});  // sic: transformers' spelling
  out.push_back({"pre_layrnorm.bias", {D}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i) + ".";
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      out.push_back({p + "self_attn." + proj + ".weight", {D, D}});
      out.push_back({p + "self_attn." + proj + ".bias", {D}});
    }
    out.push_back({p + "layer_norm1.weight", {D}});
    out.push_back({p + "layer_norm1.bias", {D}});
    out.push_back({p + "mlp.fc1.weight", {I, D}});
    out.push_back({p + "mlp.fc1.bias", {I}});
    out.push_back({p + "mlp.fc2.weight", {D, I}});
    out.push_back({p + "mlp.fc2.bias", {D}});
    out.push_back({p + "layer_norm2.weight", {D}});
    out.push_back({p + "layer_norm2.bias", {D}});
  }
  // Unused by LLaVA's features, but part of the checkpoint: kept so that it saves unchanged.
  out.push_back({"post_layernorm.weight", {D}});
  out.push_back({"post_layernorm.bias", {D}});
  return out;
}

void ClipVisionModel::set_parameter(const std::string& name, const torch::Tensor& value) {
  for (const auto& [expected, shape] : expected_parameters()) {
    if (expected != name) continue;
    if (value.sizes() != at::IntArrayRef(shape)) {
      throw std::runtime_error("tensor " + name + " has shape " + shape_string(value.sizes()) +
                               ", the vision config implies " + shape_string(shape));
    }
    params_[name] = value.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
    return;
  }
  throw std::runtime_error("tensor " + name + " is not a weight of the vision tower");
}

const torch::Tensor& ClipVisionModel::param(const std::string& name) const {
  auto it = params_.find(name);
  if (it == params_.end()) throw std::runtime_error("vision tower tensor " + name + " is missing from the checkpoint");
  return it->second;
}

void ClipVisionModel::finish_loading() {
  layers_.clear();
  for (const auto& [name, shape] : expected_parameters()) param(name);  // every weight present
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i) + ".";
    Layer l;
    l.ln1_w = param(p + "layer_norm1.weight");
    l.ln1_b = param(p + "layer_norm1.bias");
    l.q = param(p + "self_attn.q_proj.weight");
    l.q_b = param(p + "self_attn.q_proj.bias");
    l.k = param(p + "self_attn.k_proj.weight");
    l.k_b = param(p + "self_attn.k_proj.bias");
    l.v = param(p + "self_attn.v_proj.weight");
    l.v_b = param(p + "self_attn.v_proj.bias");
    l.o = param(p + "self_attn.out_proj.weight");
    l.o_b = param(p + "self_attn.out_proj.bias");
    l.ln2_w = param(p + "layer_norm2.weight");
    l.ln2_b = param(p + "layer_norm2.bias");
    l.fc1 = param(p + "mlp.fc1.weight");
    l.fc1_b = param(p + "mlp.fc1.bias");
    l.fc2 = param(p + "mlp.fc2.weight");
    l.fc2_b = param(p + "mlp.fc2.bias");
    layers_.push_back(std::move(l));
  }
}

std::vector<std::pair<std::string, torch::Tensor>> ClipVisionModel::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, shape] : expected_parameters()) out.push_back({name, param(name)});
  return out;
}

int64_t ClipVisionModel::parameter_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel() * t.element_size();
  return n;
}

torch::Tensor ClipVisionModel::layer_forward(const Layer& l, const torch::Tensor& h) const {
  const auto& c = config_;
  const int64_t N = h.size(0), T = h.size(1), nh = c.num_heads, hd = c.hidden_size / c.num_heads;
  const std::vector<int64_t> norm_shape{c.hidden_size};
  auto x = torch::layer_norm(h, norm_shape, l.ln1_w, l.ln1_b, c.layer_norm_eps);
  auto q = torch::linear(x, l.q, l.q_b).view({N, T, nh, hd}).transpose(1, 2);
  auto k = torch::linear(x, l.k, l.k_b).view({N, T, nh, hd}).transpose(1, 2);
  auto v = torch::linear(x, l.v, l.v_b).view({N, T, nh, hd}).transpose(1, 2);
  // Every patch attends to every other (no mask); softmax in float32 as transformers' eager path.
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  auto a = torch::matmul(probs, v).transpose(1, 2).reshape({N, T, c.hidden_size});
  auto out = h + torch::linear(a, l.o, l.o_b);
  x = torch::layer_norm(out, norm_shape, l.ln2_w, l.ln2_b, c.layer_norm_eps);
  x = torch::linear(activation(c.hidden_act, torch::linear(x, l.fc1, l.fc1_b)), l.fc2, l.fc2_b);
  return out + x;
}

std::vector<torch::Tensor> ClipVisionModel::hidden_states(const torch::Tensor& pixels, int64_t upto) const {
  const auto& c = config_;
  if (pixels.dim() != 4 || pixels.size(1) != c.num_channels || pixels.size(2) != c.image_size ||
      pixels.size(3) != c.image_size) {
    throw std::runtime_error("pixel values have shape " + shape_string(pixels.sizes()) + ", the vision tower takes [N, " +
                             std::to_string(c.num_channels) + ", " + std::to_string(c.image_size) + ", " +
                             std::to_string(c.image_size) + "]");
  }
  if (upto < 0 || upto > c.num_layers) throw std::runtime_error("vision feature layer out of range");
  const int64_t N = pixels.size(0);
  auto x = pixels.to(device_, dtype_);
  auto patches = torch::conv2d(x, param("embeddings.patch_embedding.weight"), {}, c.patch_size);  // [N, D, s, s]
  patches = patches.flatten(2).transpose(1, 2);                                                     // [N, P, D]
  auto cls = param("embeddings.class_embedding").view({1, 1, -1}).expand({N, 1, c.hidden_size});
  auto h = torch::cat({cls, patches}, 1) + param("embeddings.position_embedding.weight").unsqueeze(0);
  h = torch::layer_norm(h, {c.hidden_size}, param("pre_layrnorm.weight"), param("pre_layrnorm.bias"), c.layer_norm_eps);
  std::vector<torch::Tensor> states{h};
  for (int64_t i = 0; i < upto; ++i) {
    h = layer_forward(layers_.at(static_cast<size_t>(i)), h);
    states.push_back(h);
  }
  return states;
}

}  // namespace ngate
