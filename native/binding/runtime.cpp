// Facts about the libtorch the addon runs on, and its global settings.
#include "binding/runtime.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>

#include "binding/jobs.h"
#include "model/llama.h"

namespace ngate::binding {

Napi::Value Info(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("torchVersion", TORCH_VERSION);
  const bool cuda = torch::cuda::is_available();
  o.Set("cuda", cuda);
  o.Set("cudaDevices", static_cast<double>(cuda ? torch::cuda::device_count() : 0));
  o.Set("fusedAttention", fused_attention_available());
  o.Set("cxx11Abi", static_cast<double>(_GLIBCXX_USE_CXX11_ABI));
  // The count on the thread the work runs on, not this one (OpenMP keeps it per thread).
  o.Set("threads", static_cast<double>(WorkerThreads()));
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

// setThreads(n) → Promise<number>: libtorch's intra-op threads for the work, set on the worker thread.
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "setThreads: the thread count must be a number");
  const int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1) throw Napi::RangeError::New(info.Env(), "setThreads: the thread count must be at least 1");
  return SetWorkerThreads(info.Env(), n);
}

}  // namespace ngate::binding
