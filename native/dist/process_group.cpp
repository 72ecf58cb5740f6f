#include "dist/process_group.h"

#include <torch/version.h>

#include <atomic>
#include <mutex>
#include <stdexcept>

#if defined(NGATE_HAS_GLOO) || defined(NGATE_HAS_NCCL)
#define NGATE_HAS_DIST 1
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef NGATE_HAS_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef NGATE_HAS_NCCL
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace ngate::dist {

bool gloo_available() {
#ifdef NGATE_HAS_GLOO
  return true;
#else
  return false;
#endif
}

bool nccl_available() {
#ifdef NGATE_HAS_NCCL
  return true;
#else
  return false;
#endif
}

#ifdef NGATE_HAS_DIST

namespace {
// torch 2 split the backends (Gloo, NCCL) from the ProcessGroup that
// dispatches to them; we call a backend directly, which both versions allow.
#if TORCH_VERSION_MAJOR >= 2
using Backend = c10d::Backend;
#else
using Backend = c10d::ProcessGroup;
#endif

std::string message_of(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string seconds(std::chrono::milliseconds ms) {
  const auto n = ms.count();
  return n % 1000 == 0 ? std::to_string(n / 1000) + " s" : std::to_string(n) + " ms";
}

c10d::ReduceOp to_c10d(Reduce op) {
  switch (op) {
    case Reduce::Max: return c10d::ReduceOp::MAX;
    case Reduce::Min: return c10d::ReduceOp::MIN;
    default: return c10d::ReduceOp::SUM;
  }
}
}  // namespace

struct Group::Impl {
  GroupOptions options;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Backend> backend;
  std::mutex mu;
  std::string failure;  // the first collective error; empty while healthy
  std::atomic<bool> failed{false};
  bool destroyed = false;

  ~Impl() {
    if (!failure.empty()) {
      // Gloo's destructor joins its worker threads, and one may be stuck on a
      // peer that will never answer: leave both to the end of the process.
      (void)new c10::intrusive_ptr<Backend>(std::move(backend));
      (void)new c10::intrusive_ptr<c10d::Store>(std::move(store));
    }
  }

  std::string where() const {
    return options.backend + " process group, rank " + std::to_string(options.rank) + " of " +
           std::to_string(options.size);
  }
};

std::shared_ptr<Group> Group::create(const GroupOptions& o) {
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size) {
    throw std::runtime_error("rank " + std::to_string(o.rank) + " is not in [0, " + std::to_string(o.size) + ")");
  }
  if (o.backend == "gloo" && !gloo_available()) {
    throw std::runtime_error("this build of the addon has no Gloo backend (its headers were missing at build time)");
  }
  if (o.backend == "nccl" && !nccl_available()) {
    throw std::runtime_error("this build of the addon has no NCCL backend (it needs a CUDA libtorch and nccl.h at build time)");
  }
  if (o.backend != "gloo" && o.backend != "nccl") throw std::runtime_error("unknown backend " + o.backend);
  auto impl = std::make_unique<Impl>();
  impl->options = o;
  try {
    c10::intrusive_ptr<c10d::Store> base;
    if (!o.file.empty()) {
      auto fs = c10::make_intrusive<c10d::FileStore>(o.file, o.size);
      fs->setTimeout(o.store_timeout);
      base = fs;
    } else {
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(o.port);
      so.isServer = o.store_server;
      so.numWorkers = static_cast<std::size_t>(o.size);
      so.waitWorkers = true;
      so.timeout = o.store_timeout;
      so.multiTenant = true;  // as torch.distributed's env:// rendezvous
      base = c10::make_intrusive<c10d::TCPStore>(o.host, so);
    }
    impl->store = base;
    auto store = c10::make_intrusive<c10d::PrefixStore>(o.prefix, base);
    if (o.backend == "gloo") {
#ifdef NGATE_HAS_GLOO
      auto go = c10d::ProcessGroupGloo::Options::create(o.timeout);
      if (!o.interface.empty()) go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(o.interface));
      else if (!o.bind_host.empty()) go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.bind_host));
      else go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      go->threads = 2;
      impl->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.size, go);
#endif
    } else {
#ifdef NGATE_HAS_NCCL
      c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(o.cuda_device));
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = o.timeout;
      impl->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.size, no);
#endif
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous of the " + impl->where() + " failed: " + message_of(e));
  }
  return std::shared_ptr<Group>(new Group(std::move(impl)));
}

Group::Group(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;

int Group::rank() const { return impl_->options.rank; }
int Group::size() const { return impl_->options.size; }
const std::string& Group::backend() const { return impl_->options.backend; }

torch::Device Group::device() const {
  if (impl_->options.backend == "nccl") return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(impl_->options.cuda_device));
  return torch::Device(torch::kCPU);
}

bool Group::failed() const { return impl_->failed.load(); }

void Group::allreduce(torch::Tensor& t, Reduce op) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->destroyed) throw std::runtime_error("the " + impl_->where() + " has been destroyed");
  if (!impl_->failure.empty()) {
    throw std::runtime_error("the " + impl_->where() + " failed earlier and cannot be used again: " + impl_->failure);
  }
  const auto dev = device();
  const bool moved = t.device() != dev || !t.is_contiguous();
  std::vector<at::Tensor> tensors{moved ? t.to(dev).contiguous() : t};
  c10d::AllreduceOptions ao;
  ao.reduceOp = to_c10d(op);
  try {
#ifdef NGATE_HAS_NCCL
    c10::optional<c10::cuda::CUDAGuard> guard;
    if (dev.is_cuda()) guard.emplace(dev.index());
#endif
    impl_->backend->allreduce(tensors, ao)->wait();
  } catch (const std::exception& e) {
    impl_->failure = message_of(e);
    impl_->failed = true;
    throw std::runtime_error("a collective of the " + impl_->where() + " failed (another rank died, left, or hung past the " +
                             seconds(impl_->options.timeout) + " timeout): " + impl_->failure);
  }
  if (moved) t.copy_(tensors[0]);
}

void Group::destroy() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->destroyed) return;
  impl_->destroyed = true;
  if (!impl_->failure.empty()) return;  // left to the process's end (see ~Impl)
  impl_->backend.reset();
  impl_->store.reset();
}

#else  // no c10d in this build

struct Group::Impl {};

std::shared_ptr<Group> Group::create(const GroupOptions&) {
  throw std::runtime_error(
      "this build of the addon has no distributed support: it was compiled without torch's c10d headers "
      "(on Debian: apt-get install libgloo-dev, then rebuild with `npm run build:native`)");
}
Group::Group(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;
int Group::rank() const { return 0; }
int Group::size() const { return 1; }
const std::string& Group::backend() const {
  static const std::string none = "none";
  return none;
}
torch::Device Group::device() const { return torch::Device(torch::kCPU); }
bool Group::failed() const { return false; }
void Group::allreduce(torch::Tensor&, Reduce) { throw std::runtime_error("no distributed support in this build"); }
void Group::destroy() {}

#endif

}  // namespace ngate::dist
