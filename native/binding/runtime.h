// Module-level functions of the addon: libtorch facts and global settings.
#pragma once
#include <napi.h>

namespace ngate::binding {

// info() → { torchVersion, cuda, cudaDevices, fusedAttention, cxx11Abi, threads }
Napi::Value Info(const Napi::CallbackInfo& info);
Napi::Value SetAttentionKernel(const Napi::CallbackInfo& info);
Napi::Value SetAttentionChunkBytes(const Napi::CallbackInfo& info);
Napi::Value LiveModels(const Napi::CallbackInfo& info);
Napi::Value SetThreads(const Napi::CallbackInfo& info);

}  // namespace ngate::binding
