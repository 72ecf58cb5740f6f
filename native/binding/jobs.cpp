#include "binding/jobs.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <condition_variable>
#include <deque>
#include <mutex>

#include "binding/env_data.h"

namespace ngate::binding {

std::string describe(const std::exception& e) {
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

namespace {

// The worker thread. Never destroyed: joining it at exit could wait on a
// long job; the process ends it.
class Executor {
 public:
  static Executor& instance() {
    static Executor* e = new Executor();
    return *e;
  }
  // The worker's intra-op thread count, once the worker has started and read it.
  int threads() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_threads_.wait(lock, [this] { return threads_ > 0; });
    return threads_;
  }
  void set_threads_seen(int n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads_ = n;
    }
    cv_threads_.notify_all();
  }
  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  Executor() : thread_([this] { loop(); }) { thread_.detach(); }
  void loop() {
    set_threads_seen(at::get_num_threads());
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable cv_threads_;
  int threads_ = 0;
  std::deque<std::function<void()>> tasks_;
  std::thread thread_;
};

struct JobState {
  std::shared_ptr<EnvState> env;  // the environment it answers to
  Job::Work work;
  Job::Result result;
  std::shared_ptr<std::atomic<bool>> cancel;
  Napi::Promise::Deferred deferred;
  Napi::FunctionReference on_progress;
  Napi::ThreadSafeFunction tsfn;
  std::string error;  // set on failure
  bool aborted = false;
  explicit JobState(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

struct Message {
  std::shared_ptr<JobState> job;
  bool done = false;
  Progress progress;
  std::function<void(Napi::Env)> call;  // a post(): run it, nothing else
};

// Runs on the event loop for every message the worker sends.
void deliver_now(Napi::Env env, Message& msg);

void deliver(Napi::Env env, Napi::Function, Message* msg) {
  // With no environment, the queue is being dropped at its teardown: the
  // message's JavaScript handles cannot be freed any more, so it is leaked.
  if (env == nullptr) return;
  std::unique_ptr<Message> m(msg);
  try {
    deliver_now(env, *m);
  } catch (...) {
    // Only while the environment stops (worker.terminate()): no JavaScript runs
    // any more, and an exception must not cross this C callback.
  }
}

void deliver_now(Napi::Env env, Message& msg) {
  Napi::HandleScope scope(env);
  auto* m = &msg;
  auto& job = *m->job;
  if (m->call) {
    try {
      m->call(env);
    } catch (const Napi::Error&) {
      // A throwing callback must not take the job down with it.
    }
    return;
  }
  if (!m->done) {
    if (job.on_progress.IsEmpty()) return;
    try {
      job.on_progress.Call({Napi::Number::New(env, m->progress.done), Napi::Number::New(env, m->progress.total)});
    } catch (const Napi::Error&) {
      // A throwing progress callback must not take the job down with it.
    }
    return;
  }
  if (!job.error.empty()) {
    auto err = Napi::Error::New(env, job.aborted ? "The operation was aborted" : job.error).Value();
    err.Set("name", job.aborted ? "AbortError" : "Error");
    err.Set("code", job.aborted ? "ERR_ABORTED" : "ERR_NATIVE");
    job.deferred.Reject(err);
    return;
  }
  try {
    job.deferred.Resolve(job.result(env));
  } catch (const Napi::Error& e) {
    job.deferred.Reject(e.Value());
  } catch (const std::exception& e) {
    job.deferred.Reject(Napi::Error::New(env, describe(e)).Value());
  }
}

}  // namespace

Napi::Promise Job::Start(Napi::Env env, Work work, Result result, std::shared_ptr<std::atomic<bool>> cancel,
                         Napi::Value on_progress) {
  auto job = std::make_shared<JobState>(env);
  job->work = std::move(work);
  job->result = std::move(result);
  job->cancel = std::move(cancel);
  if (on_progress.IsFunction()) job->on_progress = Napi::Persistent(on_progress.As<Napi::Function>());
  // The thread-safe function also keeps the event loop alive until the job ends.
  job->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "ngate", 0, 1);
  auto promise = job->deferred.Promise();
  job->env = EnvDataOf(env).state;
  {
    std::lock_guard<std::mutex> lock(job->env->mu);
    job->env->cancels.insert(job->cancel);
  }
  Executor::instance().post([job]() mutable {
    auto tsfn = job->tsfn;
    auto state = job->env;
    {
      std::lock_guard<std::mutex> lock(state->mu);
      // Its environment is gone: the job never starts, and its handles are leaked with it.
      if (state->closing) { new std::shared_ptr<JobState>(std::move(job)); return; }
      ++state->running;
    }
    // Every call into the environment is made under the lock, after checking
    // that it is still there: a teardown waits for the lock, then for `running`.
    auto call = [state, tsfn](Message* m, bool blocking) mutable {
      std::lock_guard<std::mutex> lock(state->mu);
      if (state->closing) return false;
      return (blocking ? tsfn.BlockingCall(m, deliver) : tsfn.NonBlockingCall(m, deliver)) == napi_ok;
    };
    {
      JobContext ctx;
      auto cancel = job->cancel;
      ctx.cancelled = [cancel] { return cancel->load(); };
      const bool wants_progress = !job->on_progress.IsEmpty();
      ctx.report = [job, wants_progress, call](double done, double total) mutable {
        if (!wants_progress) return;
        auto* m = new Message{job, false, Progress{done, total}, {}};
        if (!call(m, false)) new std::shared_ptr<JobState>(std::move(m->job));  // dropped; the handles are leaked, not freed here
      };
      ctx.post = [job, call](std::function<void(Napi::Env)> fn) mutable {
        auto* m = new Message{job, false, {}, std::move(fn)};
        // The queue is unbounded, so this fails only while the environment closes.
        if (!call(m, false)) new std::shared_ptr<JobState>(std::move(m->job));
      };
      try {
        job->work(ctx);
      } catch (const std::exception& e) {
        job->aborted = job->cancel->load();
        job->error = describe(e);
        if (job->error.empty()) job->error = "native error";
      } catch (...) {
        job->error = "unknown native error";
      }
    }
    {
      std::lock_guard<std::mutex> lock(state->mu);
      state->cancels.erase(job->cancel);
    }
    // The message takes the last reference here, so the job's JavaScript
    // handles are released on the event-loop thread, never on this one.
    auto* m = new Message{std::move(job), true, {}, {}};
    if (call(m, true)) {
      tsfn.Release();
    } else {
      new std::shared_ptr<JobState>(std::move(m->job));  // the environment is gone: leak, never free off-thread
    }
    {
      std::lock_guard<std::mutex> lock(state->mu);
      --state->running;
    }
    state->cv.notify_all();
  });
  return promise;
}

int WorkerThreads() { return Executor::instance().threads(); }

Napi::Promise SetWorkerThreads(Napi::Env env, int threads) {
  auto seen = std::make_shared<int>(0);
  return Job::Start(
      env,
      [threads, seen](JobContext&) {
        at::set_num_threads(threads);
        *seen = at::get_num_threads();
        Executor::instance().set_threads_seen(*seen);
      },
      [seen](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *seen); },
      std::make_shared<std::atomic<bool>>(false), env.Undefined());
}

Napi::Function CancelToken::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "CancelToken",
                                 {InstanceMethod("cancel", &CancelToken::Cancel),
                                  InstanceAccessor("cancelled", &CancelToken::Cancelled, nullptr)});
  EnvDataOf(env).cancel_token = Napi::Persistent(f);
  return f;
}

CancelToken::CancelToken(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CancelToken>(info) {}

Napi::Value CancelToken::Cancel(const Napi::CallbackInfo& info) {
  flag_->store(true);
  return info.Env().Undefined();
}

Napi::Value CancelToken::Cancelled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), flag_->load());
}

std::shared_ptr<std::atomic<bool>> CancelToken::FromValue(Napi::Value v) {
  auto& ctor = EnvDataOf(v.Env()).cancel_token;
  if (v.IsObject() && !ctor.IsEmpty() && v.As<Napi::Object>().InstanceOf(ctor.Value())) {
    return Napi::ObjectWrap<CancelToken>::Unwrap(v.As<Napi::Object>())->flag();
  }
  if (!v.IsUndefined() && !v.IsNull()) throw Napi::TypeError::New(v.Env(), "expected a CancelToken");
  return std::make_shared<std::atomic<bool>>(false);
}

}  // namespace ngate::binding
