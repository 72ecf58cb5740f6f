// NativeModel: loading a checkpoint's tensors, forward, generate, the list of
// weights, writing them, and disposal.
#include "binding/native_model.h"

#include <torch/version.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "model/generate.h"
#include "model/tensor_file.h"

namespace ngate::binding {

Napi::Function NativeModel::Init(Napi::Env env) {
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
                      InstanceMethod("answerDistances", &NativeModel::AnswerDistances),
                      InstanceMethod("probeFfn", &NativeModel::ProbeFfn),
                      InstanceMethod("snapshotFfn", &NativeModel::SnapshotFfn),
                      InstanceMethod("trainLm", &NativeModel::TrainLm),
                      InstanceMethod("restoreFfn", &NativeModel::RestoreFfn),
                      InstanceMethod("dispose", &NativeModel::Dispose),
                      InstanceAccessor("disposed", &NativeModel::Disposed, nullptr),
                      InstanceAccessor("parameterBytes", &NativeModel::ParameterBytes, nullptr)});
}

NativeModel::~NativeModel() {
  // The finaliser of a model nobody disposed (or of every model, as its environment stops).
  try {
    if (external_bytes_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
  } catch (...) {
    // The environment is stopping: there is no heap to tell any more.
  }
  Release();
}

Napi::Value NativeModel::Load(const Napi::CallbackInfo& info) {
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
  // MiniGPT-4: the EVA ViT, ln_vision and llama_proj beside the decoder.
  std::optional<MiniGpt4Config> minigpt4;
  if (spec.Get("minigpt4").IsObject()) {
    auto mj = spec.Get("minigpt4").As<Napi::Object>();
    auto vj = mj.Get("vision").As<Napi::Object>();
    MiniGpt4Config mc;
    mc.vit.image_size = get_int(vj, "imageSize");
    mc.vit.patch_size = get_int(vj, "patchSize");
    mc.vit.width = get_int(vj, "width");
    mc.vit.depth = get_int(vj, "depth");
    mc.vit.num_heads = get_int(vj, "numHeads");
    mc.vit.mlp_hidden = get_int(vj, "mlpHidden");
    mc.vit.norm_eps = get_double(vj, "normEps");
    mc.ln_vision_eps = get_double(mj, "lnVisionEps");
    mc.tokens_per_embedding = get_int(mj, "tokensPerEmbedding");
    mc.image_token_id = get_int(mj, "imageTokenId");
    mc.text_hidden_size = cfg.hidden_size;
    minigpt4 = mc;
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
      [state, cfg, llava, minigpt4, device, dtype, sources, cancel](JobContext& ctx) {
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
          std::unique_ptr<VisionEncoder> vision;
          if (llava) vision = std::make_unique<LlavaVision>(*llava, dev, type);
          if (minigpt4) vision = std::make_unique<MiniGpt4Vision>(*minigpt4, dev, type);
          std::map<std::string, std::unique_ptr<MappedFile>> files;
          size_t done = 0;
          for (const auto& s : sources) {
            if (ctx.cancelled()) throw std::runtime_error("aborted");
            auto& f = files[s.file];
            if (!f) f = std::make_unique<MappedFile>(s.file);
            try {
              auto value = view_tensor(*f, s.name, s.dtype, s.shape, s.begin, s.end);
              if (vision && vision->owns(s.name)) vision->set_parameter(s.name, value);
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

// forward(ids Int32Array[B*T], mask Uint8Array[B*T], B, T, lastOnly, token)
Napi::Value NativeModel::Forward(const Napi::CallbackInfo& info) {
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
        const int64_t image_id = state.vision ? state.vision->image_token_id() : -1;
        for (int64_t id : ids) {
          if ((id < 0 || id >= V) && id != image_id) throw std::runtime_error("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
        }
        auto mask_t = torch::from_blob(mask.data(), {B, T}, torch::kUInt8).to(torch::kBool).to(model.device());
        const bool padded = std::find(mask.begin(), mask.end(), 0) != mask.end();
        auto features = Encode(state, images);
        auto logits = features ? model.forward_embeds(embed_with_images(model, ids_t, *features, images.rows), mask_t,
                                                      padded, nullptr, last_only)
                               : model.forward(ids_t, mask_t, padded, nullptr, last_only);
        *out = logits.to(torch::kFloat32).to(torch::kCPU);
      },
      [out](Napi::Env env) -> Napi::Value { return to_float32_array(env, *out); }, env.Undefined());
}

// generate(prompts Int32Array[], { maxNewTokens, eosIds, padId, keepLogits, temperature?, topK?, topP?,
//   repetitionPenalty?, seed?, stopRows?: Uint8Array }, token, onProgress, images, onTokens?(step, ids Int32Array))
Napi::Value NativeModel::Generate(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto& model_ref = Require();
  const int64_t V = model_ref.config().vocab_size;
  auto list = info[0].As<Napi::Array>();
  std::vector<std::vector<int64_t>> prompts;
  const int64_t image_id = state_->vision ? state_->vision->image_token_id() : -1;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    prompts.push_back(to_int64(list.Get(i), "prompt"));
    for (int64_t id : prompts.back()) {
      if ((id < 0 || id >= V) && id != image_id) throw Napi::RangeError::New(env, "prompt " + std::to_string(i) + ": token id " + std::to_string(id) + " is outside the vocabulary");
    }
  }
  auto o = info[1].As<Napi::Object>();
  GenerateOptions opts;
  opts.max_new_tokens = o.Get("maxNewTokens").As<Napi::Number>().Int64Value();
  opts.pad_id = o.Get("padId").As<Napi::Number>().Int64Value();
  opts.keep_logits = o.Get("keepLogits").ToBoolean().Value();
  auto eos = o.Get("eosIds").As<Napi::Array>();
  for (uint32_t i = 0; i < eos.Length(); ++i) opts.eos_ids.push_back(eos.Get(i).As<Napi::Number>().Int64Value());
  opts.temperature = number_or(o, "temperature", 0.0);
  opts.top_k = static_cast<int64_t>(number_or(o, "topK", 0));
  opts.top_p = number_or(o, "topP", 1.0);
  opts.repetition_penalty = number_or(o, "repetitionPenalty", 1.0);
  opts.seed = static_cast<uint64_t>(number_or(o, "seed", 0));
  // The caller's per-row stop flags, read by the worker between steps; the
  // reference keeps the array alive until the job is over.
  std::shared_ptr<Napi::ObjectReference> stop_ref;
  if (o.Get("stopRows").IsTypedArray()) {
    auto a = o.Get("stopRows").As<Napi::TypedArray>();
    if (a.TypedArrayType() != napi_uint8_array || a.ElementLength() != prompts.size()) {
      throw Napi::TypeError::New(env, "generate: stopRows must be a Uint8Array with one entry per prompt");
    }
    stop_ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(a.As<Napi::Object>()));
    opts.stop_rows = a.As<Napi::Uint8Array>().Data();
  }
  auto cancel = CancelToken::FromValue(info[2]);
  auto images = to_images(info[4]);
  if (images.pixels.defined() && images.rows.size() != prompts.size()) {
    throw Napi::RangeError::New(env, "generate: images.rows must name one image (or -1) per prompt");
  }
  std::shared_ptr<Napi::FunctionReference> on_tokens;
  if (info[5].IsFunction()) on_tokens = std::make_shared<Napi::FunctionReference>(Napi::Persistent(info[5].As<Napi::Function>()));
  auto out = std::make_shared<GenerateResult>();
  return OnModel(
      env, cancel,
      [prompts = std::move(prompts), opts, out, images, stop_ref, on_tokens](ModelState& state, LlamaModel& model, JobContext& ctx) {
        auto features = Encode(state, images);
        const int64_t steps_max = opts.max_new_tokens;
        auto report = ctx.report;
        auto post = ctx.post;
        std::function<void(int64_t, const std::vector<int64_t>&)> on_step = [&](int64_t step, const std::vector<int64_t>& ids) {
          report(static_cast<double>(step), static_cast<double>(steps_max));
          if (!on_tokens) return;
          post([on_tokens, step, ids](Napi::Env env) {
            auto a = Napi::Int32Array::New(env, ids.size());
            for (size_t b = 0; b < ids.size(); ++b) a[b] = static_cast<int32_t>(ids[b]);
            on_tokens->Call({Napi::Number::New(env, static_cast<double>(step)), a});
          });
        };
        *out = generate(model, prompts, opts, ctx.cancelled, on_step, features.get(), images.rows);
      },
      [out](Napi::Env env) -> Napi::Value {
        auto res = Napi::Object::New(env);
        auto tokens = Napi::Array::New(env, out->tokens.size());
        auto eos = Napi::Array::New(env, out->tokens.size());
        auto stopped = Napi::Array::New(env, out->tokens.size());
        for (size_t b = 0; b < out->tokens.size(); ++b) {
          const auto& t = out->tokens[b];
          auto a = Napi::Int32Array::New(env, t.size());
          for (size_t j = 0; j < t.size(); ++j) a[j] = static_cast<int32_t>(t[j]);
          tokens.Set(static_cast<uint32_t>(b), a);
          eos.Set(static_cast<uint32_t>(b), Napi::Boolean::New(env, out->stopped_at_eos[b]));
          stopped.Set(static_cast<uint32_t>(b), Napi::Boolean::New(env, out->stopped_by_caller[b]));
        }
        res.Set("tokens", tokens);
        res.Set("stoppedAtEos", eos);
        res.Set("stoppedByCaller", stopped);
        if (out->step_logits.defined()) {
          res.Set("logits", to_float32_array(env, out->step_logits));
          res.Set("steps", Napi::Number::New(env, static_cast<double>(out->step_logits.size(1))));
        }
        return res;
      },
      info[3]);
}

// [{ name, dtype, shape }] of every weight, in checkpoint order.
Napi::Value NativeModel::Parameters(const Napi::CallbackInfo& info) {
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
Napi::Value NativeModel::WriteTensors(const Napi::CallbackInfo& info) {
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

Napi::Value NativeModel::Dispose(const Napi::CallbackInfo& info) {
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -external_bytes_);
    external_bytes_ = 0;
  }
  Release();
  return info.Env().Undefined();
}

void NativeModel::Release() {
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

Napi::Value NativeModel::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !state_ || state_->dispose_requested);
}

Napi::Value NativeModel::ParameterBytes(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->model) return Napi::Number::New(info.Env(), 0.0);
  const int64_t bytes = state_->model->parameter_bytes() + (state_->vision ? state_->vision->parameter_bytes() : 0);
  return Napi::Number::New(info.Env(), static_cast<double>(bytes));
}

}  // namespace ngate::binding
