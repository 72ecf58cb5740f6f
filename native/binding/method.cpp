// NativeModel's method calls: mask learning (eq. 2–5, 8), the gated edit
// (eq. 7, and DINM's edit through its settings), DINM's layer distances, their
// single-step probes for the tests, and FFN snapshots.
#include "binding/native_model.h"

#include <algorithm>
#include <cstring>

#include "binding/dist_group.h"
#include "method/dinm.h"
#include "method/gated_edit.h"
#include "method/learn_mask.h"

namespace ngate::binding {
namespace {

HookPoint to_hook_point(const Napi::Value& v) {
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "ffn";
  if (s == "ffn") return HookPoint::Ffn;
  if (s == "block") return HookPoint::Block;
  throw Napi::TypeError::New(v.Env(), "hookPoint must be 'ffn' or 'block'");
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
  e.check_every = static_cast<int64_t>(number_or(o, "checkEvery", static_cast<double>(e.check_every)));
  e.sensitive_weight = number_or(o, "sensitiveWeight", 1.0);
  if (o.Has("benignLoss") && o.Get("benignLoss").IsString()) {
    const std::string b = o.Get("benignLoss").As<Napi::String>().Utf8Value();
    if (b != "ce" && b != "kl") throw Napi::TypeError::New(o.Env(), "benignLoss must be 'ce' or 'kl'");
    e.benign_kl = b == "kl";
  }
  e.kl_gradient = !o.Has("klGradient") || o.Get("klGradient").ToBoolean().Value();
  e.steps_per_batch = static_cast<int64_t>(number_or(o, "stepsPerBatch", 1));
  e.fresh_optimizer_per_batch = o.Has("freshOptimizerPerBatch") && o.Get("freshOptimizerPerBatch").ToBoolean().Value();
  e.stop_below = number_or(o, "stopBelow", 0);
  e.norm_constraint = number_or(o, "normConstraint", 0);
  return e;
}

// The method's view of a process group: its reductions run on the calling
// thread, which is the worker's (see dist_group.cpp for why that keeps every
// rank's collectives in one order).
std::shared_ptr<Collective> to_collective(const std::shared_ptr<dist::Group>& g) {
  if (!g) return nullptr;
  auto c = std::make_shared<Collective>();
  c->rank = g->rank();
  c->size = g->size();
  c->sum = [g](torch::Tensor& t) { g->allreduce(t, dist::Reduce::Sum); };
  c->max = [g](torch::Tensor& t) { g->allreduce(t, dist::Reduce::Max); };
  return c;
}

}  // namespace

// learnMasks(pairs, { layers, hookPoint, alpha, l1, lr, steps, batchSize, padId, reuseLowerLayers, reusePrefix }, token, onProgress)
//   → { masks: Float32Array [N, L, H], losses: Float32Array [N, 3] }
Napi::Value NativeModel::LearnMasks(const Napi::CallbackInfo& info) {
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
Napi::Value NativeModel::MaskedLogits(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto& model = Require();
  auto seqs = to_sequences(info[0], "sequences");
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

// gatedEdit(pairs, { layers, params, keep, gated, epochs, lr, alpha, batchSize, padId, reuseLowerLayers, checkEvery },
//           token, onProgress, images, group) → { epochLosses: number[] }
// With a process group, `pairs` are all the pairs and the edit is data-parallel.
Napi::Value NativeModel::GatedEdit(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto& model = Require();
  auto pairs = to_pairs(info[0]);
  auto opts = to_edit_options(info[1].As<Napi::Object>(), model.config().hidden_size);
  auto cancel = CancelToken::FromValue(info[2]);
  auto images = to_images(info[4]);
  auto group = to_collective(NativeProcessGroup::FromValue(info[5]));
  auto out = std::make_shared<EditResult>();
  return OnModel(
      env, cancel,
      [pairs = std::move(pairs), opts, out, images, group](ModelState& state, LlamaModel& model, JobContext& ctx) {
        auto features = Encode(state, images);
        *out = gated_edit(model, pairs, opts, ctx.cancelled, ctx.report, features.get(), group.get());
      },
      [out](Napi::Env env) -> Napi::Value {
        auto res = Napi::Object::New(env);
        auto losses = Napi::Array::New(env, out->epoch_losses.size());
        for (size_t i = 0; i < out->epoch_losses.size(); ++i) losses.Set(static_cast<uint32_t>(i), out->epoch_losses[i]);
        res.Set("epochLosses", losses);
        auto steps = Napi::Float64Array::New(env, out->step_losses.size());
        std::copy(out->step_losses.begin(), out->step_losses.end(), steps.Data());
        res.Set("stepLosses", steps);
        return res;
      },
      info[3]);
}

// answerDistances([{ a: Int32Array, b: Int32Array }], token, onProgress) → Float64Array [pairs, layers]:
// DINM's distances between the hidden states of a safe and an unsafe answer.
Napi::Value NativeModel::AnswerDistances(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  Require();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "answers must be an array of { a, b }");
  auto arr = info[0].As<Napi::Array>();
  std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> answers;
  auto ids = [&](const Napi::Value& v) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      throw Napi::TypeError::New(env, "answer ids must be Int32Arrays");
    }
    auto t = v.As<Napi::Int32Array>();
    return std::vector<int64_t>(t.Data(), t.Data() + t.ElementLength());
  };
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    auto o = arr.Get(i).As<Napi::Object>();
    answers.emplace_back(ids(o.Get("a")), ids(o.Get("b")));
  }
  auto cancel = CancelToken::FromValue(info[1]);
  auto out = std::make_shared<torch::Tensor>();
  return OnModel(
      env, cancel,
      [answers = std::move(answers), out](ModelState&, LlamaModel& model, JobContext&) {
        *out = answer_distances(model, answers);
      },
      [out](Napi::Env env) -> Napi::Value {
        auto t = out->contiguous();
        auto res = Napi::Float64Array::New(env, static_cast<size_t>(t.numel()));
        std::memcpy(res.Data(), t.data_ptr<double>(), static_cast<size_t>(t.numel()) * sizeof(double));
        return res;
      },
      info[2]);
}

// editGradients(pairs, options) → Float32Array[] in [layer][param] order (one batch, no update)
Napi::Value NativeModel::EditGradients(const Napi::CallbackInfo& info) {
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
Napi::Value NativeModel::ProbeFfn(const Napi::CallbackInfo& info) {
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

// snapshotFfn(layers) → id: copies of the FFN weights of those layers, kept natively.
Napi::Value NativeModel::SnapshotFfn(const Napi::CallbackInfo& info) {
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
Napi::Value NativeModel::RestoreFfn(const Napi::CallbackInfo& info) {
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

}  // namespace ngate::binding
