// NativeProcessGroup. Why every collective runs on the worker thread rather
// than being issued from the event loop: c10d matches collectives across
// ranks by the order each process issues them, and the method's native loops
// (the data-parallel edit) issue theirs from the worker thread in the middle
// of a job. The worker runs one job at a time in the order the calls were
// made, so a collective called from JavaScript after an edit is issued after
// every collective of that edit, on every rank alike. Issuing JavaScript's
// collectives from the event loop instead could slip one in between an edit's
// steps on one rank and not on another: a deadlock, or buffers summed with
// the wrong partners.
#include "binding/dist_group.h"

#include <cstring>

#include "binding/convert.h"
#include "binding/env_data.h"
#include "binding/jobs.h"

namespace ngate::binding {

Napi::Function NativeProcessGroup::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "NativeProcessGroup",
                                 {InstanceMethod("init", &NativeProcessGroup::InitGroup),
                                  InstanceMethod("allreduce", &NativeProcessGroup::Allreduce),
                                  InstanceMethod("destroy", &NativeProcessGroup::Destroy),
                                  InstanceAccessor("failed", &NativeProcessGroup::Failed, nullptr)});
  EnvDataOf(env).process_group = Napi::Persistent(f);
  return f;
}

std::shared_ptr<dist::Group> NativeProcessGroup::FromValue(Napi::Value v) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  auto& ctor = EnvDataOf(v.Env()).process_group;
  if (!v.IsObject() || ctor.IsEmpty() || !v.As<Napi::Object>().InstanceOf(ctor.Value())) {
    throw Napi::TypeError::New(v.Env(), "group must be a process group made by initProcessGroup");
  }
  auto* self = Napi::ObjectWrap<NativeProcessGroup>::Unwrap(v.As<Napi::Object>());
  if (!*self->group_) throw Napi::Error::New(v.Env(), "the process group is not initialised, or has been destroyed");
  return *self->group_;
}

namespace {

std::string string_or(const Napi::Object& o, const char* key, const std::string& fallback) {
  auto v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
}

// The dtype of a typed array c10d can reduce, or a TypeError.
torch::ScalarType dtype_of(const Napi::TypedArray& a) {
  switch (a.TypedArrayType()) {
    case napi_float32_array: return torch::kFloat32;
    case napi_float64_array: return torch::kFloat64;
    case napi_int32_array: return torch::kInt32;
    case napi_bigint64_array: return torch::kInt64;
    case napi_uint8_array: return torch::kUInt8;
    default: throw Napi::TypeError::New(a.Env(), "allreduce takes a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array");
  }
}

}  // namespace

// init({ rank, size, backend, file?, host?, port?, storeServer?, prefix?, timeoutMs, storeTimeoutMs, interface?, bindHost?, cudaDevice? })
Napi::Value NativeProcessGroup::InitGroup(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (*group_ || initialising_) throw Napi::Error::New(env, "init() may be called once per process group object");
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "init(options) takes an object");
  auto o = info[0].As<Napi::Object>();
  dist::GroupOptions g;
  g.rank = static_cast<int>(get_int(o, "rank"));
  g.size = static_cast<int>(get_int(o, "size"));
  g.backend = string_or(o, "backend", "gloo");
  g.file = string_or(o, "file", "");
  g.host = string_or(o, "host", "127.0.0.1");
  g.port = static_cast<int>(number_or(o, "port", 29500));
  g.store_server = o.Has("storeServer") ? o.Get("storeServer").ToBoolean().Value() : g.rank == 0;
  g.prefix = string_or(o, "prefix", "ngate");
  g.timeout = std::chrono::milliseconds(static_cast<int64_t>(get_double(o, "timeoutMs")));
  g.store_timeout = std::chrono::milliseconds(static_cast<int64_t>(get_double(o, "storeTimeoutMs")));
  g.interface = string_or(o, "interface", "");
  g.bind_host = string_or(o, "bindHost", "");
  g.cuda_device = static_cast<int>(number_or(o, "cudaDevice", 0));
  initialising_ = true;
  auto slot = group_;
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  return Job::Start(
      env, [g, slot](JobContext&) { *slot = dist::Group::create(g); },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); }, cancel, env.Undefined());
}

// allreduce(typedArray, 'sum' | 'max' | 'min') → a new typed array of the same kind with the result.
Napi::Value NativeProcessGroup::Allreduce(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto group = FromValue(info.This());
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "allreduce(data, op) takes a typed array");
  auto a = info[0].As<Napi::TypedArray>();
  const auto dtype = dtype_of(a);
  const std::string op_name = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "sum";
  dist::Reduce op;
  if (op_name == "sum") op = dist::Reduce::Sum;
  else if (op_name == "max") op = dist::Reduce::Max;
  else if (op_name == "min") op = dist::Reduce::Min;
  else throw Napi::TypeError::New(env, "op must be 'sum', 'max' or 'min'");
  // A copy made now: the caller may reuse its array while the job waits.
  const auto n = static_cast<int64_t>(a.ElementLength());
  auto* data = static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  auto t = std::make_shared<torch::Tensor>(torch::from_blob(data, {n}, torch::TensorOptions().dtype(dtype)).clone());
  const auto kind = a.TypedArrayType();
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  return Job::Start(
      env, [group, t, op](JobContext&) { group->allreduce(*t, op); },
      [t, kind](Napi::Env env) -> Napi::Value {
        const size_t n = static_cast<size_t>(t->numel());
        const size_t bytes = n * t->element_size();
        auto buffer = Napi::ArrayBuffer::New(env, bytes);
        std::memcpy(buffer.Data(), t->data_ptr(), bytes);
        napi_value out;
        NAPI_THROW_IF_FAILED(env, napi_create_typedarray(env, kind, n, buffer, 0, &out), Napi::Value());
        return Napi::Value(env, out);
      },
      cancel, env.Undefined());
}

// destroy(): releases the group after every job queued before it.
Napi::Value NativeProcessGroup::Destroy(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto slot = group_;
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  return Job::Start(
      env,
      [slot](JobContext&) {
        if (*slot) (*slot)->destroy();
        slot->reset();
      },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); }, cancel, env.Undefined());
}

Napi::Value NativeProcessGroup::Failed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), *group_ && (*group_)->failed());
}

Napi::Value DistBackends(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("gloo", dist::gloo_available());
  o.Set("nccl", dist::nccl_available());
  return o;
}

}  // namespace ngate::binding
