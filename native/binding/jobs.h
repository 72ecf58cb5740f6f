// Running work off the event-loop thread: a Promise-returning job on libuv's
// pool, with progress delivered to a JavaScript callback and cancellation
// through a CancelToken flag polled by the C++ loops.
#pragma once
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace ngate::binding {

struct Progress {
  double done = 0;
  double total = 0;
};

// What a job does on the worker thread; `report` and `post` may be called from there.
struct JobContext {
  std::function<bool()> cancelled;
  std::function<void(double, double)> report;
  // Runs `call` on the event loop, in order with other posts and reports
  // (streamed tokens); never dropped while the environment is alive.
  std::function<void(std::function<void(Napi::Env)>)> post;
};

// All native work runs on one worker thread, in the order it was queued:
// CUDA contexts, cuBLAS handles and workspaces are per thread, so a pool that
// hands successive calls to different threads pays their set-up again and
// again; one thread pays once. Results and progress come back to the event
// loop through a thread-safe function.
class Job {
 public:
  using Work = std::function<void(JobContext&)>;
  using Result = std::function<Napi::Value(Napi::Env)>;

  // Queues the job and returns its promise.
  static Napi::Promise Start(Napi::Env env, Work work, Result result, std::shared_ptr<std::atomic<bool>> cancel,
                             Napi::Value on_progress);
};

// new CancelToken(); token.cancel() — shared with the jobs it is given to.
class CancelToken : public Napi::ObjectWrap<CancelToken> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit CancelToken(const Napi::CallbackInfo& info);
  std::shared_ptr<std::atomic<bool>> flag() const { return flag_; }
  // The flag of a CancelToken argument, or a fresh one if undefined/null.
  static std::shared_ptr<std::atomic<bool>> FromValue(Napi::Value v);

 private:
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Cancelled(const Napi::CallbackInfo& info);
  std::shared_ptr<std::atomic<bool>> flag_ = std::make_shared<std::atomic<bool>>(false);
};

// Message of an exception from libtorch or our own code, without C++ backtraces.
std::string describe(const std::exception& e);

// The intra-op threads libtorch uses for the jobs: read on the worker thread
// itself, where the work runs (OpenMP keeps the setting per thread), and
// cached. SetWorkerThreads changes it there and resolves to the new count.
int WorkerThreads();
Napi::Promise SetWorkerThreads(Napi::Env env, int threads);

}  // namespace ngate::binding
