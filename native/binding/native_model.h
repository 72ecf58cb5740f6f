// The JavaScript model object (NativeModel): what it owns, and how its calls
// run on the worker thread under the model's lock. Its methods are defined by
// area: loading, running and saving in native_model.cpp, the method in
// method.cpp, LM training in training.cpp.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "binding/convert.h"
#include "binding/jobs.h"
#include "model/llama.h"
#include "model/llava.h"
#include "model/minigpt4.h"

namespace ngate::binding {

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
  std::unique_ptr<VisionEncoder> vision;  // LLaVA's or MiniGPT-4's image side; null for a text-only model
  std::shared_ptr<std::atomic<bool>> running_cancel;  // the token of the job in flight
  bool dispose_requested = false;
  // Copies of FFN weights taken by snapshotFfn, to put back with restoreFfn.
  std::map<int64_t, std::vector<std::pair<torch::Tensor, torch::Tensor>>> snapshots;
  int64_t next_snapshot = 1;
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}
  ~NativeModel() override;

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

  // Frees the weights now, or as soon as the job in flight stops (it is cancelled).
  void Release();

  // Loading, running, saving (native_model.cpp).
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Parameters(const Napi::CallbackInfo& info);
  Napi::Value WriteTensors(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ParameterBytes(const Napi::CallbackInfo& info);
  // The method (method.cpp).
  Napi::Value LearnMasks(const Napi::CallbackInfo& info);
  Napi::Value MaskedLogits(const Napi::CallbackInfo& info);
  Napi::Value GatedEdit(const Napi::CallbackInfo& info);
  Napi::Value EditGradients(const Napi::CallbackInfo& info);
  Napi::Value AnswerDistances(const Napi::CallbackInfo& info);
  Napi::Value ProbeFfn(const Napi::CallbackInfo& info);
  Napi::Value SnapshotFfn(const Napi::CallbackInfo& info);
  Napi::Value RestoreFfn(const Napi::CallbackInfo& info);
  // Training every weight: the demo model's recipe (training.cpp).
  Napi::Value TrainLm(const Napi::CallbackInfo& info);

  std::shared_ptr<ModelState> state_ = std::make_shared<ModelState>();
  bool loaded_ = false, loading_ = false;
  int64_t external_bytes_ = 0;
};

}  // namespace ngate::binding
