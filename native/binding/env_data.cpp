#include "binding/env_data.h"

namespace ngate::binding {
namespace {

// Runs on the environment's own thread as it is torn down (process exit or
// worker.terminate()), before its handles are freed.
void StopJobs(void* arg) {
  auto* holder = static_cast<std::shared_ptr<EnvState>*>(arg);
  auto state = *holder;
  delete holder;
  std::unique_lock<std::mutex> lock(state->mu);
  state->closing = true;
  for (const auto& c : state->cancels) c->store(true);
  // The running job stops at its next cancellation check (a step, a token); jobs not started yet never start.
  state->cv.wait(lock, [&] { return state->running == 0; });
}

}  // namespace

void InitEnvData(Napi::Env env) {
  auto* data = new EnvData();
  env.SetInstanceData<EnvData>(data);
  napi_add_env_cleanup_hook(env, StopJobs, new std::shared_ptr<EnvState>(data->state));
}

EnvData& EnvDataOf(Napi::Env env) {
  auto* data = env.GetInstanceData<EnvData>();
  if (!data) throw Napi::Error::New(env, "the addon's environment data is missing");
  return *data;
}

}  // namespace ngate::binding
