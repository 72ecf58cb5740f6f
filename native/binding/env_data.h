// What the addon keeps for each JavaScript environment that loads it: the main
// thread and each worker_threads Worker load it once each, and share nothing
// but the worker thread that runs the jobs (jobs.cpp). Kept as the
// environment's instance data, never in statics: a class constructor of one
// environment is not a value in another.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>

namespace ngate::binding {

// The part the jobs share, since a job may outlive its environment (a Worker
// terminated while it runs). Guarded by `mu`.
struct EnvState {
  std::mutex mu;
  std::condition_variable cv;
  bool closing = false;  // the environment is being torn down: no call into it any more
  int running = 0;       // jobs of this environment between the start of their work and their last call into it
  std::set<std::shared_ptr<std::atomic<bool>>> cancels;  // the cancel flags of its unfinished jobs
};

struct EnvData {
  Napi::FunctionReference cancel_token;   // CancelToken's constructor here
  Napi::FunctionReference process_group;  // NativeProcessGroup's constructor here
  std::shared_ptr<EnvState> state = std::make_shared<EnvState>();
};

// Made at the addon's load in `env`, with a cleanup hook that stops the
// environment's jobs before it goes: each is cancelled, the one running is
// waited for, and none calls into the environment afterwards.
void InitEnvData(Napi::Env env);
EnvData& EnvDataOf(Napi::Env env);

}  // namespace ngate::binding
