// One c10d process group per call of initProcessGroup: the rendezvous, the
// backend (Gloo on the CPU, NCCL on CUDA) and a blocking in-place all-reduce.
// No c10d type appears in this header, so the files that include it build
// whether or not the addon was compiled with c10d.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>

namespace ngate::dist {

// Which backends this build of the addon carries (the headers were found at build time).
bool gloo_available();
bool nccl_available();

enum class Reduce { Sum, Max, Min };

struct GroupOptions {
  int rank = 0;
  int size = 1;
  std::string backend = "gloo";  // "gloo" | "nccl"
  // Rendezvous: a FileStore at `file` when set, else a TCPStore at host:port.
  std::string file;
  std::string host = "127.0.0.1";
  int port = 29500;
  bool store_server = true;      // rank 0 hosts the TCPStore unless torchrun's agent already does
  std::string prefix = "ngate";  // the keys' namespace inside the store
  // How long a collective may wait for the other ranks: a hung rank is caught
  // by this and nothing else (see README.md, "More than one GPU").
  std::chrono::milliseconds timeout{30 * 60 * 1000};
  std::chrono::milliseconds store_timeout{5 * 60 * 1000};  // the rendezvous itself
  // Gloo binds one network device per rank: this interface when set
  // (GLOO_SOCKET_IFNAME), else this host name or address, else the machine's
  // default (its host name's address). Never the master's address.
  std::string interface;
  std::string bind_host;
  int cuda_device = 0;  // NCCL: this rank's GPU
};

class Group {
 public:
  // Runs the rendezvous; blocks until every rank has joined or the store timeout passes.
  static std::shared_ptr<Group> create(const GroupOptions& options);
  ~Group();

  int rank() const;
  int size() const;
  const std::string& backend() const;
  // Where collectives run: the CPU for Gloo, this rank's GPU for NCCL.
  torch::Device device() const;

  // Reduces `t` in place across the ranks, issuing the collective and waiting
  // for it on the calling thread. Any device and a dtype c10d reduces; a
  // tensor on another device than the group's is copied there and back.
  // Every rank must make the same calls in the same order. After a failure the
  // group is unusable for good (Gloo's pairs are closed): this and every later
  // call throw, and the process should end.
  void allreduce(torch::Tensor& t, Reduce op);

  // True once a collective failed.
  bool failed() const;
  // Releases the backend now (a failed group's is left to the process's end:
  // its destructor would join threads that may never return).
  void destroy();

 private:
  struct Impl;
  explicit Group(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ngate::dist
