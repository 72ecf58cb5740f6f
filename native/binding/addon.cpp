// The addon's table of contents: what require('ngate.node') exports, and the
// file that defines each. The JavaScript side of this boundary is typed in
// types/native.d.ts.
#include <napi.h>

#include <string>

#include "binding/dist_group.h"    // NativeProcessGroup, distBackends: dist_group.cpp
#include "binding/env_data.h"      // what each JavaScript environment keeps: env_data.cpp
#include "binding/jobs.h"          // CancelToken, and the worker that runs every long call
#include "binding/native_model.h"  // NativeModel: native_model.cpp, method.cpp, training.cpp
#include "binding/runtime.h"       // info, settings: runtime.cpp

// libtorch passes std::string across its API: a build whose flags picked the
// other std::string ABI would link and then crash. The build states the ABI
// libtorch's CMake config declares; refuse to compile against the other one.
#if defined(NGATE_TORCH_CXX11_ABI) && defined(_GLIBCXX_USE_CXX11_ABI) && (_GLIBCXX_USE_CXX11_ABI != NGATE_TORCH_CXX11_ABI)
#error "the compiler's _GLIBCXX_USE_CXX11_ABI differs from the one libtorch was built with (see scripts/find-libtorch.js); remove the conflicting CXXFLAGS"
#endif

namespace ngate::binding {
namespace {

Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  InitEnvData(env);  // per environment: the main thread and each Worker
  exports.Set("NativeModel", NativeModel::Init(env));
  exports.Set("CancelToken", CancelToken::Init(env));
  exports.Set("NativeProcessGroup", NativeProcessGroup::Init(env));
  exports.Set("distBackends", Napi::Function::New(env, DistBackends));
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
