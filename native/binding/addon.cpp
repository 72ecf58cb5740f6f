// The N-API surface: converts between JavaScript values and the C++ model,
// and schedules work on worker threads. No model logic lives here.
#include <napi.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <mutex>
#include <optional>

#include "binding/jobs.h"

// libtorch passes std::string across its API: a build whose flags picked the
// other std::string ABI would link and then crash. The build states the ABI
// libtorch's CMake config declares; refuse to compile against the other one.
#if defined(NGATE_TORCH_CXX11_ABI) && defined(_GLIBCXX_USE_CXX11_ABI) && (_GLIBCXX_USE_CXX11_ABI != NGATE_TORCH_CXX11_ABI)
#error "the compiler's _GLIBCXX_USE_CXX11_ABI differs from the one libtorch was built with (see scripts/find-libtorch.js); remove the conflicting CXXFLAGS"
#endif
#include "model/generate.h"
#include "model/llama.h"
#include "model/llava.h"
#include "model/tensor_file.h"
#include "model/train.h"
#include "ngate/gated_edit.h"
#include "ngate/learn_mask.h"

namespace ngate::binding {
namespace {

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

HookPoint to_hook_point(const Napi::Value& v) {
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "ffn";
  if (s == "ffn") return HookPoint::Ffn;
  if (s == "block") return HookPoint::Block;
  throw Napi::TypeError::New(v.Env(), "hookPoint must be 'ffn' or 'block'");
}

// A [n0, n1, ...] float32 tensor from a Float32Array of that many values.
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

// { pixels: Float32Array [count·channels·size·size], count, channels, size, rows?: Int32Array }:
// the preprocessed images of one call (lib/image.ts), or undefined for none.
struct ImageInput {
  torch::Tensor pixels;       // [N, C, S, S] float32, CPU; undefined when no images
  std::vector<int64_t> rows;  // per batch row: its image, -1 for none (forward and generate)
};

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

EditOptions to_edit_options(const Napi::Object& o, int64_t hidden) {
  EditOptions e;
  e.layers = to_int_list(o.Get("layers"), "layers");
  if (o.Get("params").IsArray()) {
    e.params.clear();
    auto ps = o.Get("params").As<Napi::Array>();
    for (uint32_t i = 0; i < ps.Length(); ++i) e.params.push_back(ps.Get(i).ToString());
  }
  e.gated = o.Get("gated").ToBoolean().Value();
  if (e.gated) {
    auto keep = o.Get("keep");
    if (!keep.IsTypedArray() || keep.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw Napi::TypeError::New(o.Env(), "keep must be a Uint8Array");
    }
    auto k = keep.As<Napi::Uint8Array>();
    const int64_t L = static_cast<int64_t>(e.layers.size());
    if (static_cast<int64_t>(k.ElementLength()) != L * hidden) throw Napi::RangeError::New(o.Env(), "keep must hold layers × hiddenSize values");
    e.keep = torch::from_blob(k.Data(), {L, hidden}, torch::kUInt8).to(torch::kBool).clone();
  }
  e.epochs = static_cast<int64_t>(number_or(o, "epochs", 10));
  e.lr = number_or(o, "lr", 1e-5);
  e.alpha = number_or(o, "alpha", 1.25);
  e.batch_size = static_cast<int64_t>(number_or(o, "batchSize", 8));
  e.pad_id = static_cast<int64_t>(number_or(o, "padId", 0));
  e.reuse_lower_layers = !o.Has("reuseLowerLayers") || o.Get("reuseLowerLayers").ToBoolean().Value();
  return e;
}

struct TensorSource {
  std::string name, file, dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// What a JavaScript model object owns. Jobs hold a reference too, so that a
// model disposed or collected while a job runs is freed when the job ends.
struct ModelState {
  std::mutex mu;  // one operation at a time on one model
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<LlavaVision> vision;  // LLaVA's vision tower and projector; null for a text-only model
  std::shared_ptr<std::atomic<bool>> running_cancel;  // the token of the job in flight
  bool dispose_requested = false;
  // Copies of FFN weights taken by snapshotFfn, to put back with restoreFfn.
  std::map<int64_t, std::vector<std::pair<torch::Tensor, torch::Tensor>>> snapshots;
  int64_t next_snapshot = 1;
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("load", &NativeModel::Load),
                        InstanceMethod("forward", &NativeModel::Forward),
                        InstanceMethod("generate", &NativeModel::Generate),
                        InstanceMethod("parameters", &NativeModel::Parameters),
                        InstanceMethod("writeTensors", &NativeModel::WriteTensors),
                        InstanceMethod("learnMasks", &NativeModel::LearnMasks),
                        InstanceMethod("maskedLogits", &NativeModel::MaskedLogits),
                        InstanceMethod("gatedEdit", &NativeModel::GatedEdit),
                        InstanceMethod("editGradients", &NativeModel::EditGradients),
                        InstanceMethod("probeFfn", &NativeModel::ProbeFfn),
                        InstanceMethod("snapshotFfn", &NativeModel::SnapshotFfn),
                        InstanceMethod("trainLm", &NativeModel::TrainLm),
                        InstanceMethod("restoreFfn", &NativeModel::RestoreFfn),
                        InstanceMethod("dispose", &NativeModel::Dispose),
                        InstanceAccessor("disposed", &NativeModel::Disposed, nullptr),
                        InstanceAccessor("parameterBytes", &NativeModel::ParameterBytes, nullptr)});
  }

  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}

  ~NativeModel() override {
    // The finaliser of a model nobody disposed.
    if (external_bytes_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
    Release();
  }

 private:
  // Runs `work` holding the model's lock; frees the model afterwards if
  // dispose() was called meanwhile.
  template <typename F>
  static void Locked(const std::shared_ptr<ModelState>& state, const std::shared_ptr<std::atomic<bool>>& cancel,
                     F&& work) {
    std::lock_guard<std::mutex> lock(state->mu);
    if (state->dispose_requested && state->model) {
      state->snapshots.clear();
      state->vision.reset();
      state->model.reset();
    }
    state->running_cancel = cancel;
    struct Reset {
      ModelState* s;
      ~Reset() {
        s->running_cancel.reset();
        if (s->dispose_requested) {
          s->snapshots.clear();
          s->vision.reset();
          s->model.reset();
        }
      }
    } reset{state.get()};
    work();
  }

  LlamaModel& Require() {
    if (!state_ || state_->dispose_requested) throw Napi::Error::New(Env(), "the model has been disposed");
    if (!loaded_) throw Napi::Error::New(Env(), "the model is not loaded");
    return *state_->model;
  }

  static LlamaModel& RequireIn(const std::shared_ptr<ModelState>& s) {
    if (!s->model) throw std::runtime_error("the model has been disposed");
    return *s->model;
  }

  // The features of a call's images, computed on the worker thread; null when the call has none.
  static std::unique_ptr<ImageFeatures> Encode(const ModelState& state, const ImageInput& in) {
    if (!in.pixels.defined()) return nullptr;
    if (!state.vision) throw std::runtime_error("images were given, but this model has no vision tower");
    return std::make_unique<ImageFeatures>(state.vision->encode(in.pixels));
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    if (loaded_ || loading_) throw Napi::Error::New(env, "load() may be called once");
    auto spec = info[0].As<Napi::Object>();
    auto cfg_js = spec.Get("config").As<Napi::Object>();
    LlamaConfig cfg;
    cfg.hidden_size = get_int(cfg_js, "hiddenSize");
    cfg.intermediate_size = get_int(cfg_js, "intermediateSize");
    cfg.num_layers = get_int(cfg_js, "numLayers");
    cfg.num_heads = get_int(cfg_js, "numHeads");
    cfg.num_kv_heads = get_int(cfg_js, "numKvHeads");
    cfg.head_dim = get_int(cfg_js, "headDim");
    cfg.vocab_size = get_int(cfg_js, "vocabSize");
    cfg.rms_norm_eps = get_double(cfg_js, "rmsNormEps");
    cfg.rope_theta = get_double(cfg_js, "ropeTheta");
    cfg.tie_word_embeddings = get_bool(cfg_js, "tieWordEmbeddings");
    cfg.attention_bias = get_bool(cfg_js, "attentionBias");
    cfg.mlp_bias = get_bool(cfg_js, "mlpBias");
    // LLaVA: the vision tower and projector beside the decoder.
    std::optional<LlavaConfig> llava;
    if (spec.Get("llava").IsObject()) {
      auto lv = spec.Get("llava").As<Napi::Object>();
      auto vj = lv.Get("vision").As<Napi::Object>();
      LlavaConfig lc;
      lc.vision.hidden_size = get_int(vj, "hiddenSize");
      lc.vision.intermediate_size = get_int(vj, "intermediateSize");
      lc.vision.num_layers = get_int(vj, "numLayers");
      lc.vision.num_heads = get_int(vj, "numHeads");
      lc.vision.num_channels = get_int(vj, "numChannels");
      lc.vision.image_size = get_int(vj, "imageSize");
      lc.vision.patch_size = get_int(vj, "patchSize");
      lc.vision.layer_norm_eps = get_double(vj, "layerNormEps");
      lc.vision.hidden_act = vj.Get("hiddenAct").ToString();
      lc.text_hidden_size = cfg.hidden_size;
      lc.feature_layers = to_int_list(lv.Get("featureLayers"), "featureLayers");
      lc.keep_cls = get_bool(lv, "keepCls");
      lc.projector_act = lv.Get("projectorAct").ToString();
      lc.projector_bias = get_bool(lv, "projectorBias");
      lc.image_token_id = get_int(lv, "imageTokenId");
      llava = lc;
    }
    const std::string device = spec.Get("device").ToString();
    const std::string dtype = spec.Get("dtype").ToString();
    std::vector<TensorSource> sources;
    auto arr = spec.Get("tensors").As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      auto t = arr.Get(i).As<Napi::Object>();
      TensorSource s;
      s.name = t.Get("name").ToString();
      s.file = t.Get("file").ToString();
      s.dtype = t.Get("dtype").ToString();
      auto shape = t.Get("shape").As<Napi::Array>();
      for (uint32_t j = 0; j < shape.Length(); ++j) s.shape.push_back(shape.Get(j).As<Napi::Number>().Int64Value());
      s.begin = static_cast<uint64_t>(t.Get("begin").As<Napi::Number>().Int64Value());
      s.end = static_cast<uint64_t>(t.Get("end").As<Napi::Number>().Int64Value());
      sources.push_back(std::move(s));
    }
    auto cancel = CancelToken::FromValue(info[1]);
    auto state = state_;
    loading_ = true;
    auto self = Napi::Persistent(info.This().As<Napi::Object>());
    auto self_ref = std::make_shared<Napi::ObjectReference>(std::move(self));
    return Job::Start(
        env,
        [state, cfg, llava, device, dtype, sources, cancel](JobContext& ctx) {
          Locked(state, cancel, [&] {
            torch::NoGradGuard no_grad;
            const auto dev = parse_device(device);
            const auto type = parse_dtype(dtype);
            if (dev.is_cpu() && type == torch::kFloat16) {
              // libtorch 1.13 has no CPU kernels for half-precision matmul.
              try {
                torch::matmul(torch::ones({2, 2}, torch::kFloat16), torch::ones({2, 2}, torch::kFloat16));
              } catch (const std::exception&) {
                throw std::runtime_error("float16 on the CPU is not supported by this libtorch (" TORCH_VERSION
                                         "); use float32 or bfloat16");
              }
            }
            auto model = std::make_unique<LlamaModel>(cfg, dev, type);
            std::unique_ptr<LlavaVision> vision;
            if (llava) vision = std::make_unique<LlavaVision>(*llava, dev, type);
            auto is_vision = [](const std::string& n) {
              return n.rfind("vision_tower.", 0) == 0 || n.rfind("multi_modal_projector.", 0) == 0;
            };
            std::map<std::string, std::unique_ptr<MappedFile>> files;
            size_t done = 0;
            for (const auto& s : sources) {
              if (ctx.cancelled()) throw std::runtime_error("aborted");
              auto& f = files[s.file];
              if (!f) f = std::make_unique<MappedFile>(s.file);
              try {
                auto value = view_tensor(*f, s.name, s.dtype, s.shape, s.begin, s.end);
                if (vision && is_vision(s.name)) vision->set_parameter(s.name, value);
                else model->set_parameter(s.name, value);
              } catch (const c10::Error& e) {
                throw std::runtime_error(s.file + ": tensor " + s.name + ": " + e.what_without_backtrace());
              }
              ctx.report(static_cast<double>(++done), static_cast<double>(sources.size()));
            }
            model->finish_loading();
            if (vision) vision->finish_loading();
            state->model = std::move(model);
            state->vision = std::move(vision);
          });
        },
        [this, state, self_ref](Napi::Env env) -> Napi::Value {
          loading_ = false;
          if (state->model) {
            loaded_ = true;
            external_bytes_ = state->model->parameter_bytes() + (state->vision ? state->vision->parameter_bytes() : 0);
            // Let V8's collector feel the weight of a forgotten model.
            if (state->model->device().is_cpu()) Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
            else external_bytes_ = 0;
          }
          self_ref->Reset();
          return env.Undefined();
        },
        cancel, info[2]);
  }

  // Runs `work(state, model, ctx)` on the worker thread holding the model's
  // lock; `result` turns what it left behind into a value on the event loop.
  template <typename Work>
  Napi::Value OnModel(Napi::Env env, std::shared_ptr<std::atomic<bool>> cancel, Work work, Job::Result result,
                      Napi::Value on_progress) {
    Require();
    auto state = state_;
    return Job::Start(
        env,
        [state, cancel, work = std::move(work)](JobContext& ctx) mutable {
          Locked(state, cancel, [&] { work(*state, RequireIn(state), ctx); });
        },
        std::move(result), cancel, on_progress);
  }

  // forward(ids Int32Array[B*T], mask Uint8Array[B*T], B, T, lastOnly, token)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    Require();
    auto ids = to_int64(info[0], "ids");
    auto mask_arr = info[1].As<Napi::Uint8Array>();
    std::vector<uint8_t> mask(mask_arr.Data(), mask_arr.Data() + mask_arr.ElementLength());
    const int64_t B = info[2].As<Napi::Number>().Int64Value(), T = info[3].As<Napi::Number>().Int64Value();
    const bool last_only = info[4].ToBoolean().Value();
    if (B <= 0 || T <= 0 || static_cast<int64_t>(ids.size()) != B * T || static_cast<int64_t>(mask.size()) != B * T) {
      throw Napi::RangeError::New(env, "forward: ids and mask must hold batch × length values");
    }
    auto cancel = CancelToken::FromValue(info[5]);
    auto images = to_images(info[6]);
    if (images.pixels.defined() && static_cast<int64_t>(images.rows.size()) != B) {
      throw Napi::RangeError::New(env, "forward: images.rows must name one image (or -1) per row");
    }
    auto out = std::make_shared<torch::Tensor>();
    return OnModel(
        env, cancel,
        [ids = std::move(ids), mask = std::move(mask), B, T, last_only, out, images](ModelState& state, LlamaModel& model, JobContext&) mutable {
          torch::NoGradGuard no_grad;
          const int64_t V = model.config().vocab_size;
          auto ids_t = torch::from_blob(ids.data(), {B, T}, torch::kInt64).to(model.device());
          for (int64_t id : ids) {
            if (id < 0 || id >= V) throw std::runtime_error("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
          }
          auto mask_t = torch::from_blob(mask.data(), {B, T}, torch::kUInt8).to(torch::kBool).to(model.device());
          const bool padded = std::find(mask.begin(), mask.end(), 0) != mask.end();
          auto features = Encode(state, images);
          auto logits = features ? model.forward_embeds(LlavaVision::embed(model, ids_t, *features, images.rows), mask_t,
                                                        padded, nullptr, last_only)
                                 : model.forward(ids_t, mask_t, padded, nullptr, last_only);
          *out = logits.to(torch::kFloat32).to(torch::kCPU);
        },
        [out](Napi::Env env) -> Napi::Value { return to_float32_array(env, *out); }, env.Undefined());
  }

  // generate(prompts Int32Array[], { maxNewTokens, eosIds, padId, keepLogits }, token, onProgress)
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& model_ref = Require();
    const int64_t V = model_ref.config().vocab_size;
    auto list = info[0].As<Napi::Array>();
    std::vector<std::vector<int64_t>> prompts;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      prompts.push_back(to_int64(list.Get(i), "prompt"));
      for (int64_t id : prompts.back()) {
        if (id < 0 || id >= V) throw Napi::RangeError::New(env, "prompt " + std::to_string(i) + ": token id " + std::to_string(id) + " is outside the vocabulary");
      }
    }
    auto o = info[1].As<Napi::Object>();
    GreedyOptions opts;
    opts.max_new_tokens = o.Get("maxNewTokens").As<Napi::Number>().Int64Value();
    opts.pad_id = o.Get("padId").As<Napi::Number>().Int64Value();
    opts.keep_logits = o.Get("keepLogits").ToBoolean().Value();
    auto eos = o.Get("eosIds").As<Napi::Array>();
    for (uint32_t i = 0; i < eos.Length(); ++i) opts.eos_ids.push_back(eos.Get(i).As<Napi::Number>().Int64Value());
    auto cancel = CancelToken::FromValue(info[2]);
    auto images = to_images(info[4]);
    if (images.pixels.defined() && images.rows.size() != prompts.size()) {
      throw Napi::RangeError::New(env, "generate: images.rows must name one image (or -1) per prompt");
    }
    auto out = std::make_shared<GreedyResult>();
    return OnModel(
        env, cancel,
        [prompts = std::move(prompts), opts, out, images](ModelState& state, LlamaModel& model, JobContext& ctx) {
          auto features = Encode(state, images);
          *out = greedy_generate(model, prompts, opts, ctx.cancelled, ctx.report, features.get(), images.rows);
        },
        [out](Napi::Env env) -> Napi::Value {
          auto res = Napi::Object::New(env);
          auto tokens = Napi::Array::New(env, out->tokens.size());
          auto eos = Napi::Array::New(env, out->tokens.size());
          for (size_t b = 0; b < out->tokens.size(); ++b) {
            const auto& t = out->tokens[b];
            auto a = Napi::Int32Array::New(env, t.size());
            for (size_t j = 0; j < t.size(); ++j) a[j] = static_cast<int32_t>(t[j]);
            tokens.Set(static_cast<uint32_t>(b), a);
            eos.Set(static_cast<uint32_t>(b), Napi::Boolean::New(env, out->stopped_at_eos[b]));
          }
          res.Set("tokens", tokens);
          res.Set("stoppedAtEos", eos);
          if (out->step_logits.defined()) {
            res.Set("logits", to_float32_array(env, out->step_logits));
            res.Set("steps", Napi::Number::New(env, static_cast<double>(out->step_logits.size(1))));
          }
          return res;
        },
        info[3]);
  }

  // [{ name, dtype, shape }] of every weight, in checkpoint order.
  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& model = Require();
    std::lock_guard<std::mutex> lock(state_->mu);
    auto params = model.named_parameters();
    if (state_->vision) {
      for (auto& p : state_->vision->named_parameters()) params.push_back(p);
    }
    auto out = Napi::Array::New(env, params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      auto o = Napi::Object::New(env);
      o.Set("name", params[i].first);
      o.Set("dtype", safetensors_dtype_name(params[i].second.scalar_type()));
      auto shape = Napi::Array::New(env, params[i].second.dim());
      for (int64_t d = 0; d < params[i].second.dim(); ++d) shape.Set(static_cast<uint32_t>(d), Napi::Number::New(env, static_cast<double>(params[i].second.size(d))));
      o.Set("shape", shape);
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  }

  // writeTensors(path, header Uint8Array, names string[], dtypes string[], token)
  Napi::Value WriteTensors(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    Require();
    const std::string path = info[0].ToString();
    auto h = info[1].As<Napi::Uint8Array>();
    std::vector<uint8_t> header(h.Data(), h.Data() + h.ElementLength());
    auto names_js = info[2].As<Napi::Array>();
    auto dtypes_js = info[3].As<Napi::Array>();
    std::vector<std::string> names;
    std::vector<c10::ScalarType> types;
    for (uint32_t i = 0; i < names_js.Length(); ++i) {
      names.push_back(names_js.Get(i).ToString());
      types.push_back(scalar_type_from_safetensors(dtypes_js.Get(i).ToString()));
    }
    auto cancel = CancelToken::FromValue(info[4]);
    return OnModel(
        env, cancel,
        [path, header = std::move(header), names, types](ModelState& state, LlamaModel& model, JobContext& ctx) {
          std::map<std::string, torch::Tensor> by_name;
          for (auto& [n, t] : model.named_parameters()) by_name[n] = t;
          if (state.vision) {
            for (auto& [n, t] : state.vision->named_parameters()) by_name[n] = t;
          }
          std::vector<torch::Tensor> tensors;
          for (const auto& n : names) {
            auto it = by_name.find(n);
            if (it == by_name.end()) throw std::runtime_error("no weight named " + n);
            tensors.push_back(it->second);
          }
          write_tensor_file(path, header, tensors, types, ctx.cancelled);
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); }, env.Undefined());
  }

  // learnMasks(pairs, { layers, hookPoint, alpha, l1, lr, steps, batchSize, padId, reuseLowerLayers, reusePrefix }, token, onProgress)
  //   → { masks: Float32Array [N, L, H], losses: Float32Array [N, 3] }
  Napi::Value LearnMasks(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    Require();
    auto pairs = to_pairs(info[0]);
    auto o = info[1].As<Napi::Object>();
    MaskOptions opts;
    opts.layers = to_int_list(o.Get("layers"), "layers");
    opts.hook_point = to_hook_point(o.Get("hookPoint"));
    opts.alpha = number_or(o, "alpha", opts.alpha);
    opts.l1 = number_or(o, "l1", opts.l1);
    opts.lr = number_or(o, "lr", opts.lr);
    opts.steps = static_cast<int64_t>(number_or(o, "steps", static_cast<double>(opts.steps)));
    opts.batch_size = static_cast<int64_t>(number_or(o, "batchSize", static_cast<double>(opts.batch_size)));
    opts.pad_id = static_cast<int64_t>(number_or(o, "padId", 0));
    opts.reuse_lower_layers = !o.Has("reuseLowerLayers") || o.Get("reuseLowerLayers").ToBoolean().Value();
    opts.reuse_prefix = !o.Has("reusePrefix") || o.Get("reusePrefix").ToBoolean().Value();
    auto cancel = CancelToken::FromValue(info[2]);
    auto images = to_images(info[4]);
    auto out = std::make_shared<MaskResult>();
    return OnModel(
        env, cancel,
        [pairs = std::move(pairs), opts, out, images](ModelState& state, LlamaModel& model, JobContext& ctx) {
          auto features = Encode(state, images);
          *out = learn_masks(model, pairs, opts, ctx.cancelled, ctx.report, features.get());
        },
        [out](Napi::Env env) -> Napi::Value {
          auto res = Napi::Object::New(env);
          res.Set("masks", to_float32_array(env, out->masks));
          res.Set("losses", to_float32_array(env, out->losses));
          return res;
        },
        info[3]);
  }

  // maskedLogits(sequences, layers, hookPoint, masks Float32Array [B, L, H], padId) → Float32Array [B, T, V]
  Napi::Value MaskedLogits(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& model = Require();
    auto list = info[0].As<Napi::Array>();
    std::vector<TrainSequence> seqs;
    for (uint32_t i = 0; i < list.Length(); ++i) seqs.push_back(to_sequence(list.Get(i), "sequences[" + std::to_string(i) + "]"));
    auto layers = to_int_list(info[1], "layers");
    auto point = to_hook_point(info[2]);
    auto masks = to_float_tensor(info[3], {static_cast<int64_t>(seqs.size()), static_cast<int64_t>(layers.size()), model.config().hidden_size}, "masks");
    const int64_t pad = info[4].As<Napi::Number>().Int64Value();
    auto images = to_images(info[5]);
    auto out = std::make_shared<torch::Tensor>();
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    return OnModel(
        env, cancel,
        [seqs = std::move(seqs), layers, point, masks, pad, out, images](ModelState& state, LlamaModel& model, JobContext&) {
          auto features = Encode(state, images);
          *out = masked_logits(model, seqs, layers, point, masks, pad, features.get());
        },
        [out](Napi::Env env) -> Napi::Value { return to_float32_array(env, *out); }, env.Undefined());
  }

  // gatedEdit(pairs, { layers, params, keep, gated, epochs, lr, alpha, batchSize, padId, reuseLowerLayers }, token, onProgress)
  //   → { epochLosses: number[] }
  Napi::Value GatedEdit(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& model = Require();
    auto pairs = to_pairs(info[0]);
    auto opts = to_edit_options(info[1].As<Napi::Object>(), model.config().hidden_size);
    auto cancel = CancelToken::FromValue(info[2]);
    auto images = to_images(info[4]);
    auto out = std::make_shared<EditResult>();
    return OnModel(
        env, cancel,
        [pairs = std::move(pairs), opts, out, images](ModelState& state, LlamaModel& model, JobContext& ctx) {
          auto features = Encode(state, images);
          *out = gated_edit(model, pairs, opts, ctx.cancelled, ctx.report, features.get());
        },
        [out](Napi::Env env) -> Napi::Value {
          auto res = Napi::Object::New(env);
          auto losses = Napi::Array::New(env, out->epoch_losses.size());
          for (size_t i = 0; i < out->epoch_losses.size(); ++i) losses.Set(static_cast<uint32_t>(i), out->epoch_losses[i]);
          res.Set("epochLosses", losses);
          return res;
        },
        info[3]);
  }

  // editGradients(pairs, options) → Float32Array[] in [layer][param] order (one batch, no update)
  Napi::Value EditGradients(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& model = Require();
    auto pairs = to_pairs(info[0]);
    auto opts = to_edit_options(info[1].As<Napi::Object>(), model.config().hidden_size);
    auto images = to_images(info[2]);
    auto out = std::make_shared<std::vector<torch::Tensor>>();
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    return OnModel(
        env, cancel,
        [pairs = std::move(pairs), opts, out, images](ModelState& state, LlamaModel& model, JobContext&) {
          auto features = Encode(state, images);
          *out = edit_gradients(model, pairs, opts, features.get());
        },
        [out](Napi::Env env) -> Napi::Value {
          auto arr = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); ++i) arr.Set(static_cast<uint32_t>(i), to_float32_array(env, (*out)[i]));
          return arr;
        },
        env.Undefined());
  }

  // probeFfn(pairs, layer, alpha, padId) → { x, g, u, delta: Float32Array, subject: Uint8Array, rows, length }
  Napi::Value ProbeFfn(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    Require();
    auto pairs = to_pairs(info[0]);
    const int64_t layer = info[1].As<Napi::Number>().Int64Value();
    const double alpha = info[2].As<Napi::Number>().DoubleValue();
    const int64_t pad = info[3].As<Napi::Number>().Int64Value();
    auto out = std::make_shared<FfnProbe>();
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    return OnModel(
        env, cancel,
        [pairs = std::move(pairs), layer, alpha, pad, out](ModelState&, LlamaModel& model, JobContext&) {
          *out = probe_ffn(model, pairs, layer, alpha, pad);
        },
        [out](Napi::Env env) -> Napi::Value {
          auto res = Napi::Object::New(env);
          res.Set("x", to_float32_array(env, out->x));
          res.Set("g", to_float32_array(env, out->g));
          res.Set("u", to_float32_array(env, out->u));
          res.Set("delta", to_float32_array(env, out->delta));
          auto subj = out->subject.to(torch::kUInt8).contiguous();
          auto s = Napi::Uint8Array::New(env, static_cast<size_t>(subj.numel()));
          std::memcpy(s.Data(), subj.data_ptr<uint8_t>(), static_cast<size_t>(subj.numel()));
          res.Set("subject", s);
          res.Set("rows", static_cast<double>(out->x.size(0)));
          res.Set("length", static_cast<double>(out->x.size(1)));
          return res;
        },
        env.Undefined());
  }

  // trainLm(sequences, { epochs, lr, weightDecay, batchSize, warmupSteps, seed, padId }, token, onProgress)
  //   → { losses: number[] } — every weight trained (the demo model's recipe)
  Napi::Value TrainLm(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    Require();
    auto list = info[0].As<Napi::Array>();
    std::vector<TrainSequence> seqs;
    for (uint32_t i = 0; i < list.Length(); ++i) seqs.push_back(to_sequence(list.Get(i), "sequences[" + std::to_string(i) + "]"));
    auto o = info[1].As<Napi::Object>();
    TrainOptions opts;
    opts.epochs = static_cast<int64_t>(number_or(o, "epochs", 1));
    opts.lr = number_or(o, "lr", opts.lr);
    opts.weight_decay = number_or(o, "weightDecay", 0);
    opts.batch_size = static_cast<int64_t>(number_or(o, "batchSize", 16));
    opts.warmup_steps = static_cast<int64_t>(number_or(o, "warmupSteps", 0));
    opts.seed = static_cast<uint64_t>(number_or(o, "seed", 0));
    opts.pad_id = static_cast<int64_t>(number_or(o, "padId", 0));
    auto cancel = CancelToken::FromValue(info[2]);
    auto out = std::make_shared<std::vector<double>>();
    return OnModel(
        env, cancel,
        [seqs = std::move(seqs), opts, out](ModelState&, LlamaModel& model, JobContext& ctx) {
          *out = train_causal_lm(model, seqs, opts, ctx.cancelled, ctx.report);
        },
        [out](Napi::Env env) -> Napi::Value {
          auto res = Napi::Object::New(env);
          auto losses = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); ++i) losses.Set(static_cast<uint32_t>(i), (*out)[i]);
          res.Set("losses", losses);
          return res;
        },
        info[3]);
  }

  // snapshotFfn(layers) → id: copies of the FFN weights of those layers, kept natively.
  Napi::Value SnapshotFfn(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    Require();
    auto layers = to_int_list(info[0], "layers");
    auto id = std::make_shared<int64_t>(0);
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    return OnModel(
        env, cancel,
        [layers, id](ModelState& state, LlamaModel& model, JobContext&) {
          torch::NoGradGuard no_grad;
          std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
          for (int64_t l : layers) {
            for (const char* p : {"gate_proj", "up_proj", "down_proj"}) {
              auto w = model.ffn_weight(l, p);
              copies.push_back({w, w.detach().clone()});
            }
          }
          *id = state.next_snapshot++;
          state.snapshots[*id] = std::move(copies);
        },
        [id](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*id)); },
        env.Undefined());
  }

  // restoreFfn(id, drop): writes the snapshot back into the model (and forgets it when drop).
  Napi::Value RestoreFfn(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    Require();
    const int64_t id = info[0].As<Napi::Number>().Int64Value();
    const bool drop = info[1].ToBoolean().Value();
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    return OnModel(
        env, cancel,
        [id, drop](ModelState& state, LlamaModel&, JobContext&) {
          auto it = state.snapshots.find(id);
          if (it == state.snapshots.end()) throw std::runtime_error("no FFN snapshot " + std::to_string(id));
          torch::NoGradGuard no_grad;
          for (auto& [target, copy] : it->second) target.copy_(copy);
          if (drop) state.snapshots.erase(it);
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); }, env.Undefined());
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (external_bytes_ != 0) {
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -external_bytes_);
      external_bytes_ = 0;
    }
    Release();
    return info.Env().Undefined();
  }

  // Frees the weights now, or as soon as the job in flight stops (it is cancelled).
  void Release() {
    if (!state_) return;
    state_->dispose_requested = true;
    if (state_->mu.try_lock()) {
      state_->snapshots.clear();
      state_->vision.reset();
      state_->model.reset();
      state_->mu.unlock();
    } else if (auto c = state_->running_cancel) {
      c->store(true);
    }
    loaded_ = false;
  }

  Napi::Value Disposed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), !state_ || state_->dispose_requested);
  }

  Napi::Value ParameterBytes(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->model) return Napi::Number::New(info.Env(), 0.0);
    const int64_t bytes = state_->model->parameter_bytes() + (state_->vision ? state_->vision->parameter_bytes() : 0);
    return Napi::Number::New(info.Env(), static_cast<double>(bytes));
  }

  std::shared_ptr<ModelState> state_ = std::make_shared<ModelState>();
  bool loaded_ = false, loading_ = false;
  int64_t external_bytes_ = 0;
};

Napi::Value Info(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("torchVersion", TORCH_VERSION);
  const bool cuda = torch::cuda::is_available();
  o.Set("cuda", cuda);
  o.Set("cudaDevices", static_cast<double>(cuda ? torch::cuda::device_count() : 0));
  o.Set("fusedAttention", fused_attention_available());
  o.Set("cxx11Abi", static_cast<double>(_GLIBCXX_USE_CXX11_ABI));
  o.Set("threads", static_cast<double>(at::get_num_threads()));
  return o;
}

// setAttentionKernel('auto' | 'explicit'): the explicit path is the reference
// the fused kernel is tested against.
Napi::Value SetAttentionKernel(const Napi::CallbackInfo& info) {
  const std::string k = info[0].ToString();
  if (k == "auto") set_attention_kernel(AttentionKernel::Auto);
  else if (k == "explicit") set_attention_kernel(AttentionKernel::Explicit);
  else throw Napi::TypeError::New(info.Env(), "attention kernel must be 'auto' or 'explicit'");
  return info.Env().Undefined();
}

// setAttentionChunkBytes(n): the explicit path's largest piece of attention
// scores (0: the whole batch at once, the reference the split is tested against).
Napi::Value SetAttentionChunkBytes(const Napi::CallbackInfo& info) {
  const double n = info[0].ToNumber().DoubleValue();
  if (!(n >= 0) || n != std::floor(n)) throw Napi::TypeError::New(info.Env(), "attention chunk bytes must be a non-negative integer");
  set_attention_chunk_bytes(static_cast<int64_t>(n));
  return info.Env().Undefined();
}

Napi::Value LiveModels(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(LlamaModel::live_count()));
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  const int n = info[0].As<Napi::Number>().Int32Value();
  if (n > 0) at::set_num_threads(n);
  return info.Env().Undefined();
}

Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeModel", NativeModel::Init(env));
  exports.Set("CancelToken", CancelToken::Init(env));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setAttentionKernel", Napi::Function::New(env, SetAttentionKernel));
  exports.Set("setAttentionChunkBytes", Napi::Function::New(env, SetAttentionChunkBytes));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("liveModels", Napi::Function::New(env, LiveModels));
  return exports;
}

}  // namespace
}  // namespace ngate::binding

// NODE_API_MODULE pastes the function's name into an identifier, so it must be unqualified.
static Napi::Object InitNgate(Napi::Env env, Napi::Object exports) { return ngate::binding::InitAddon(env, exports); }
NODE_API_MODULE(ngate, InitNgate)
