#include "model/tensor_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ngate {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw std::runtime_error(path + ": cannot stat: " + std::strerror(err));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    // MAP_PRIVATE: nothing we do can ever write back into the user's checkpoint.
    data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data_ == MAP_FAILED) {
      int err = errno;
      data_ = nullptr;
      ::close(fd);
      throw std::runtime_error(path + ": cannot mmap: " + std::strerror(err));
    }
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

c10::ScalarType scalar_type_from_safetensors(const std::string& d) {
  if (d == "F32") return torch::kFloat32;
  if (d == "F16") return torch::kFloat16;
  if (d == "BF16") return torch::kBFloat16;
  if (d == "F64") return torch::kFloat64;
  if (d == "I64") return torch::kInt64;
  if (d == "I32") return torch::kInt32;
  if (d == "I16") return torch::kInt16;
  if (d == "I8") return torch::kInt8;
  if (d == "U8") return torch::kUInt8;
  if (d == "BOOL") return torch::kBool;
  throw std::runtime_error("safetensors dtype " + d + " is not supported for model weights");
}

std::string safetensors_dtype_name(c10::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "F32";
    case torch::kFloat16: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kFloat64: return "F64";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kInt16: return "I16";
    case torch::kInt8: return "I8";
    case torch::kUInt8: return "U8";
    case torch::kBool: return "BOOL";
    default: throw std::runtime_error("no safetensors dtype for this tensor type");
  }
}

torch::Tensor view_tensor(const MappedFile& file, const std::string& name, const std::string& dtype,
                          const std::vector<int64_t>& shape, uint64_t begin, uint64_t end) {
  const c10::ScalarType type = scalar_type_from_safetensors(dtype);
  if (begin > end || end > file.size()) {
    throw std::runtime_error(file.path() + ": tensor " + name + " lies outside the file");
  }
  uint64_t count = 1;
  for (int64_t s : shape) {
    if (s < 0) throw std::runtime_error(file.path() + ": tensor " + name + " has a negative dimension");
    // Checked: a wrapped product could equal the range (or 0) and pass the
    // size test below with a shape whose numel is astronomically large.
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(s), &count)) {
      throw std::runtime_error(file.path() + ": tensor " + name + " has more elements than 2^64");
    }
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(c10::elementSize(type)), &bytes) || bytes != end - begin) {
    throw std::runtime_error(file.path() + ": tensor " + name + " byte count does not match its shape");
  }
  if (bytes == 0) return torch::empty(shape, torch::TensorOptions().dtype(type));
  // from_blob wants a mutable pointer; the mapping is read-only and the view is
  // only ever read (copied to the model's device/dtype right away).
  void* ptr = const_cast<uint8_t*>(file.data() + begin);
  auto t = torch::from_blob(ptr, shape, torch::TensorOptions().dtype(type));
  // Data offsets need not be aligned to the element size; an unaligned view is
  // copied through a byte buffer instead of being read in place.
  if (reinterpret_cast<uintptr_t>(ptr) % c10::elementSize(type) != 0) {
    auto bytes_view = torch::from_blob(ptr, {static_cast<int64_t>(bytes)}, torch::kUInt8).clone();
    t = bytes_view.view(type).view(shape);
  }
  return t;
}

static void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void write_tensor_file(const std::string& path, const std::vector<uint8_t>& header,
                       const std::vector<torch::Tensor>& tensors,
                       const std::vector<c10::ScalarType>& types,
                       const std::function<bool()>& cancelled) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(path + ": cannot create: " + std::strerror(errno));
  try {
    write_all(fd, header.data(), header.size(), path);
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (cancelled && cancelled()) throw std::runtime_error("aborted");
      torch::Tensor t = tensors[i].detach().to(torch::kCPU, types[i]).contiguous();
      write_all(fd, t.data_ptr(), t.numel() * t.element_size(), path);
    }
    if (::fsync(fd) != 0) throw std::runtime_error(path + ": fsync failed: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(path.c_str());
    throw;
  }
  ::close(fd);
}

}  // namespace ngate
