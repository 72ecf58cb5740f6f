// The JavaScript process group object (NativeProcessGroup): the rendezvous
// and the collectives lib/dist/ builds on, each run as a job on the addon's
// worker thread.
#pragma once
#include <napi.h>

#include <memory>

#include "dist/process_group.h"

namespace ngate::binding {

class NativeProcessGroup : public Napi::ObjectWrap<NativeProcessGroup> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NativeProcessGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeProcessGroup>(info) {}
  // The group of a NativeProcessGroup argument; null for undefined/null, a
  // TypeError for anything else or a group that is not initialised.
  static std::shared_ptr<dist::Group> FromValue(Napi::Value v);

 private:
  Napi::Value InitGroup(const Napi::CallbackInfo& info);
  Napi::Value Allreduce(const Napi::CallbackInfo& info);
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  Napi::Value Failed(const Napi::CallbackInfo& info);

  // Shared with the jobs that use it; set by init's job.
  std::shared_ptr<std::shared_ptr<dist::Group>> group_ = std::make_shared<std::shared_ptr<dist::Group>>();
  bool initialising_ = false;
};

// distBackends() → { gloo, nccl }: what this build was compiled with.
Napi::Value DistBackends(const Napi::CallbackInfo& info);

}  // namespace ngate::binding
