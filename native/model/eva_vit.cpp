#include "model/eva_vit.h"

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

EvaVisionTransformer::EvaVisionTransformer(EvaVitConfig config, torch::Device device, torch::ScalarType dtype)
    : config_(std::move(config)), device_(device), dtype_(dtype) {
  const auto& c = config_;
  if (c.image_size <= 0 || c.patch_size <= 0 || c.width <= 0 || c.depth <= 0 || c.num_heads <= 0 || c.mlp_hidden <= 0) {
    throw std::runtime_error("vision_tower: sizes must be positive");
  }
  if (c.width % c.num_heads != 0) throw std::runtime_error("vision_tower: num_heads must divide embed_dim");
  if (c.image_size % c.patch_size != 0) throw std::runtime_error("vision_tower: patch_size must divide image_size");
}

int64_t EvaVisionTransformer::num_patches() const {
  const int64_t side = config_.image_size / config_.patch_size;
  return side * side;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> EvaVisionTransformer::expected_parameters() const {
  const auto& c = config_;
  const int64_t D = c.width, I = c.mlp_hidden;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"cls_token", {1, 1, D}});
  out.push_back({"pos_embed", {1, num_patches() + 1, D}});
  out.push_back({"patch_embed.proj.weight", {D, c.num_channels, c.patch_size, c.patch_size}});
  out.push_back({"patch_embed.proj.bias", {D}});
  for (int64_t i = 0; i < c.depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    out.push_back({p + "norm1.weight", {D}});
    out.push_back({p + "norm1.bias", {D}});
    out.push_back({p + "attn.q_bias", {D}});
    out.push_back({p + "attn.v_bias", {D}});
    out.push_back({p + "attn.qkv.weight", {3 * D, D}});
    out.push_back({p + "attn.proj.weight", {D, D}});
    out.push_back({p + "attn.proj.bias", {D}});
    out.push_back({p + "norm2.weight", {D}});
    out.push_back({p + "norm2.bias", {D}});
    out.push_back({p + "mlp.fc1.weight", {I, D}});
    out.push_back({p + "mlp.fc1.bias", {I}});
    out.push_back({p + "mlp.fc2.weight", {D, I}});
    out.push_back({p + "mlp.fc2.bias", {D}});
  }
  return out;
}

void EvaVisionTransformer::set_parameter(const std::string& name, const torch::Tensor& value) {
  for (const auto& [expected, shape] : expected_parameters()) {
    if (expected != name) continue;
    torch::Tensor v = value;
    if (name == "pos_embed" && value.dim() == 3 && value.size(0) == 1 && value.size(2) == shape[2] && value.size(1) != shape[1]) {
      // interpolate_pos_embed: the grid part of a square table resampled
      // bicubically in float32, the CLS row kept.
      const int64_t from = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(value.size(1) - 1))));
      const int64_t to = config_.image_size / config_.patch_size;
      if (from * from + 1 != value.size(1)) {
        throw std::runtime_error("tensor pos_embed has " + std::to_string(value.size(1)) + " rows: not a CLS row and a square grid");
      }
      auto table = value.to(torch::kFloat32);
      auto grid = table.narrow(1, 1, from * from).reshape({1, from, from, shape[2]}).permute({0, 3, 1, 2});
      grid = torch::nn::functional::interpolate(
          grid, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{to, to}).mode(torch::kBicubic).align_corners(false));
      v = torch::cat({table.narrow(1, 0, 1), grid.permute({0, 2, 3, 1}).flatten(1, 2)}, 1);
    }
    if (v.sizes() != at::IntArrayRef(shape)) {
      throw std::runtime_error("tensor " + name + " has shape " + shape_string(v.sizes()) + ", the vision tower implies " +
                               shape_string(shape));
    }
    params_[name] = v.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
    return;
  }
  throw std::runtime_error("tensor " + name + " is not a weight of the EVA vision transformer");
}

const torch::Tensor& EvaVisionTransformer::param(const std::string& name) const {
  auto it = params_.find(name);
  if (it == params_.end()) throw std::runtime_error("vision tower tensor " + name + " is missing from the checkpoint");
  return it->second;
}

void EvaVisionTransformer::finish_loading() {
  blocks_.clear();
  for (const auto& [name, shape] : expected_parameters()) param(name);
  for (int64_t i = 0; i < config_.depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Block b;
    b.norm1_w = param(p + "norm1.weight");
    b.norm1_b = param(p + "norm1.bias");
    b.qkv_w = param(p + "attn.qkv.weight");
    // The key has no bias: the original concatenates (q_bias, zeros, v_bias) on every call.
    const auto& qb = param(p + "attn.q_bias");
    b.qkv_b = torch::cat({qb, torch::zeros_like(qb), param(p + "attn.v_bias")});
    b.proj_w = param(p + "attn.proj.weight");
    b.proj_b = param(p + "attn.proj.bias");
    b.norm2_w = param(p + "norm2.weight");
    b.norm2_b = param(p + "norm2.bias");
    b.fc1_w = param(p + "mlp.fc1.weight");
    b.fc1_b = param(p + "mlp.fc1.bias");
    b.fc2_w = param(p + "mlp.fc2.weight");
    b.fc2_b = param(p + "mlp.fc2.bias");
    blocks_.push_back(std::move(b));
  }
}

std::vector<std::pair<std::string, torch::Tensor>> EvaVisionTransformer::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, shape] : expected_parameters()) out.push_back({name, param(name)});
  return out;
}

int64_t EvaVisionTransformer::parameter_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel() * t.element_size();
  return n;
}

torch::Tensor EvaVisionTransformer::block_forward(const Block& b, const torch::Tensor& h) const {
  const auto& c = config_;
  const int64_t N = h.size(0), T = h.size(1), nh = c.num_heads, hd = c.width / c.num_heads;
  const std::vector<int64_t> norm_shape{c.width};
  auto x = torch::layer_norm(h, norm_shape, b.norm1_w, b.norm1_b, c.norm_eps);
  // qkv rows are [q | k | v], each head-major: (N, T, 3, heads, hd).
  auto qkv = torch::linear(x, b.qkv_w, b.qkv_b).view({N, T, 3, nh, hd}).permute({2, 0, 3, 1, 4});
  auto q = qkv[0] * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto scores = torch::matmul(q, qkv[1].transpose(-2, -1));
  auto probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  auto a = torch::matmul(probs, qkv[2]).transpose(1, 2).reshape({N, T, c.width});
  auto out = h + torch::linear(a, b.proj_w, b.proj_b);
  x = torch::layer_norm(out, norm_shape, b.norm2_w, b.norm2_b, c.norm_eps);
  x = torch::linear(torch::gelu(torch::linear(x, b.fc1_w, b.fc1_b)), b.fc2_w, b.fc2_b);
  return out + x;
}

torch::Tensor EvaVisionTransformer::forward(const torch::Tensor& pixels) const {
  const auto& c = config_;
  if (pixels.dim() != 4 || pixels.size(1) != c.num_channels || pixels.size(2) != c.image_size || pixels.size(3) != c.image_size) {
    throw std::runtime_error("pixel values have shape " + shape_string(pixels.sizes()) + ", the vision tower takes [N, " +
                             std::to_string(c.num_channels) + ", " + std::to_string(c.image_size) + ", " +
                             std::to_string(c.image_size) + "]");
  }
  const int64_t N = pixels.size(0);
  auto x = pixels.to(device_, dtype_);
  auto patches = torch::conv2d(x, param("patch_embed.proj.weight"), param("patch_embed.proj.bias"), c.patch_size);
  patches = patches.flatten(2).transpose(1, 2);  // [N, P, D], row-major patch order
  auto cls = param("cls_token").expand({N, 1, c.width});
  auto h = torch::cat({cls, patches}, 1) + param("pos_embed");
  for (const auto& b : blocks_) h = block_forward(b, h);
  return h;
}

}  // namespace ngate
