#include "binding/convert.h"

#include <torch/version.h>

#include <cstring>

namespace ngate::binding {

torch::ScalarType parse_dtype(const std::string& s) {
  if (s == "float32") return torch::kFloat32;
  if (s == "float16") return torch::kFloat16;
  if (s == "bfloat16") return torch::kBFloat16;
  throw std::runtime_error("unknown dtype " + s + " (expected float32, float16 or bfloat16)");
}

torch::Device parse_device(const std::string& s) {
  if (s == "cpu") return torch::Device(torch::kCPU);
  if (s == "cuda" || s.rfind("cuda:", 0) == 0) {
    const int index = s == "cuda" ? 0 : std::stoi(s.substr(5));
    if (!torch::cuda::is_available()) {
      throw std::runtime_error("device " + s + " was asked for, but " +
                               (std::string(TORCH_VERSION).empty() ? "" : "this libtorch (" TORCH_VERSION ") ") +
                               "sees no CUDA GPU (a CPU-only build, or no GPU/driver on this machine)");
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count())) {
      throw std::runtime_error("device " + s + " does not exist: " + std::to_string(torch::cuda::device_count()) +
                               " CUDA device(s) visible");
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw std::runtime_error("unknown device " + s + " (expected cpu, cuda or cuda:N)");
}

int64_t get_int(const Napi::Object& o, const char* key) {
  auto v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("config.") + key + " must be a number");
  return v.As<Napi::Number>().Int64Value();
}
double get_double(const Napi::Object& o, const char* key) {
  auto v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("config.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
bool get_bool(const Napi::Object& o, const char* key) { return o.Get(key).ToBoolean().Value(); }

std::vector<int64_t> to_int64(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an Int32Array");
  }
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int64_t>(a.Data(), a.Data() + a.ElementLength());
}

Napi::Float32Array to_float32_array(Napi::Env env, const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  auto out = Napi::Float32Array::New(env, static_cast<size_t>(c.numel()));
  std::memcpy(out.Data(), c.data_ptr<float>(), static_cast<size_t>(c.numel()) * sizeof(float));
  return out;
}

TrainSequence to_sequence(const Napi::Value& v, const std::string& where) {
  if (!v.IsObject()) throw Napi::TypeError::New(v.Env(), where + " must be an object");
  auto o = v.As<Napi::Object>();
  TrainSequence s;
  s.ids = to_int64(o.Get("ids"), (where + ".ids").c_str());
  s.subject_positions = to_int64(o.Get("subjectPositions"), (where + ".subjectPositions").c_str());
  s.answer_start = o.Get("answerStart").As<Napi::Number>().Int64Value();
  auto image = o.Get("image");
  s.image = image.IsNumber() ? image.As<Napi::Number>().Int64Value() : -1;
  return s;
}

std::vector<TrainSequence> to_sequences(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an array");
  auto list = v.As<Napi::Array>();
  std::vector<TrainSequence> seqs;
  for (uint32_t i = 0; i < list.Length(); ++i) seqs.push_back(to_sequence(list.Get(i), std::string(what) + "[" + std::to_string(i) + "]"));
  return seqs;
}

std::vector<TrainPair> to_pairs(const Napi::Value& v) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), "pairs must be an array");
  auto arr = v.As<Napi::Array>();
  std::vector<TrainPair> pairs;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    auto o = arr.Get(i).As<Napi::Object>();
    const std::string where = "pairs[" + std::to_string(i) + "]";
    pairs.push_back({to_sequence(o.Get("sensitive"), where + ".sensitive"), to_sequence(o.Get("benign"), where + ".benign")});
  }
  return pairs;
}

std::vector<int64_t> to_int_list(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).As<Napi::Number>().Int64Value());
  return out;
}

double number_or(const Napi::Object& o, const char* key, double fallback) {
  auto v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

torch::Tensor to_float_tensor(const Napi::Value& v, std::vector<int64_t> shape, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Float32Array");
  }
  auto a = v.As<Napi::Float32Array>();
  int64_t n = 1;
  for (auto d : shape) n *= d;
  if (static_cast<int64_t>(a.ElementLength()) != n) throw Napi::RangeError::New(v.Env(), std::string(what) + " has the wrong length");
  return torch::from_blob(a.Data(), shape, torch::kFloat32).clone();
}

ImageInput to_images(const Napi::Value& v) {
  ImageInput in;
  if (v.IsUndefined() || v.IsNull()) return in;
  if (!v.IsObject()) throw Napi::TypeError::New(v.Env(), "images must be an object");
  auto o = v.As<Napi::Object>();
  const int64_t n = o.Get("count").As<Napi::Number>().Int64Value();
  const int64_t c = o.Get("channels").As<Napi::Number>().Int64Value();
  const int64_t size = o.Get("size").As<Napi::Number>().Int64Value();
  if (n < 0 || c <= 0 || size <= 0) throw Napi::RangeError::New(v.Env(), "images: bad count, channels or size");
  if (n > 0) in.pixels = to_float_tensor(o.Get("pixels"), {n, c, size, size}, "images.pixels");
  if (o.Get("rows").IsTypedArray()) in.rows = to_int64(o.Get("rows"), "images.rows");
  for (int64_t r : in.rows) {
    if (r >= n) throw Napi::RangeError::New(v.Env(), "images.rows names an image that was not given");
  }
  return in;
}

}  // namespace ngate::binding
