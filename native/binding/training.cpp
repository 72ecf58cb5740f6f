// NativeModel.trainLm: every weight trained on teacher-forced sequences, the
// recipe that made the embedded demo model. Not part of the method.
#include "binding/native_model.h"

#include "model/train.h"

namespace ngate::binding {

// trainLm(sequences, { epochs, lr, weightDecay, batchSize, warmupSteps, seed, padId }, token, onProgress)
//   → { losses: number[] } — every weight trained (the demo model's recipe)
Napi::Value NativeModel::TrainLm(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  Require();
  auto seqs = to_sequences(info[0], "sequences");
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

}  // namespace ngate::binding
