// Tensor: a named, typed, shaped block of memory on the host or a GPU. It is
// a handle for gradients and training state, not a math library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/error.h"

namespace lockstep {

enum class DType : std::uint8_t { kF32, kF16, kBF16, kF64, kI32, kI64, kU8 };

// Bytes per element.
std::size_t dtype_size(DType dtype);
// "f32", "f16", "bf16", "f64", "i32", "i64", "u8".
std::string_view dtype_name(DType dtype);
// Inverse of dtype_name; throws UsageError naming the accepted names.
DType parse_dtype(std::string_view name);
// Every dtype, in declaration order.
std::span<const DType> all_dtypes();

// Where a tensor's memory lives.
struct Device {
  enum class Kind : std::uint8_t { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = -1;  // CUDA device ordinal; -1 on the CPU.

  static Device cpu() { return {}; }
  static Device cuda(int index);
  bool is_cpu() const { return kind == Kind::kCpu; }
  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string str() const;  // "cpu" or "cuda:3"
  bool operator==(const Device&) const = default;
};

using Shape = std::vector<std::int64_t>;
std::string shape_str(const Shape& shape);  // "[2, 3]"

// A Tensor either owns its storage (allocate) or borrows memory that the
// caller keeps alive (borrow). Copies share storage, like a shared_ptr: a
// Tensor is cheap to pass around and never copies data implicitly.
class Tensor {
 public:
  // An empty, unnamed, zero-element f32 tensor on the CPU.
  Tensor() = default;

  // Allocates zero-filled storage. Host memory is page-locked (pinned) when
  // CUDA is built and a GPU is usable, so copies to and from GPUs run at full
  // speed; otherwise it is 64-byte aligned ordinary memory (from 2 MiB on,
  // aligned to 2 MiB and advised for transparent huge pages). Throws
  // UsageError for negative dimensions or a CUDA device without CUDA support,
  // BackendError when the allocation fails.
  static Tensor allocate(std::string name, DType dtype, Shape shape, Device device = Device::cpu());

  // Wraps memory owned by the caller, who must keep it alive and large
  // enough (nbytes()) for as long as any copy of this Tensor is used.
  static Tensor borrow(std::string name, void* data, DType dtype, Shape shape,
                       Device device = Device::cpu());

  // A tensor of `dtype` and `shape` over this one's bytes from
  // `byte_offset` on, sharing its storage (an owned storage stays alive as
  // long as the view). Throws UsageError when the view would reach past
  // the last byte.
  Tensor view(std::string name, std::size_t byte_offset, DType dtype, Shape shape) const;

  const std::string& name() const { return name_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  Device device() const { return device_; }
  std::int64_t numel() const { return numel_; }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }
  bool owns_storage() const { return owner_ != nullptr; }
  // True when the host storage is pinned (page-locked) CUDA host memory.
  bool is_pinned() const { return pinned_; }

  void* data() { return data_; }
  const void* data() const { return data_; }

  // Typed host access; throws UsageError when T does not match dtype() or
  // the tensor is not in host memory.
  template <class T>
  T* data_as();
  template <class T>
  const T* data_as() const {
    return const_cast<Tensor*>(this)->data_as<T>();
  }

  // "model/fc1.weight f32[256, 784] cpu"
  std::string describe() const;

 private:
  void check_host_access(DType requested) const;

  std::string name_;
  DType dtype_ = DType::kF32;
  Shape shape_;
  Device device_;
  std::int64_t numel_ = 0;
  void* data_ = nullptr;
  bool pinned_ = false;
  std::shared_ptr<void> owner_;  // null when borrowed
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::kF64;
}
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::kI32;
}
template <>
constexpr DType dtype_of<std::int64_t>() {
  return DType::kI64;
}
template <>
constexpr DType dtype_of<std::uint8_t>() {
  return DType::kU8;
}

template <class T>
T* Tensor::data_as() {
  check_host_access(dtype_of<T>());
  return static_cast<T*>(data_);
}

// Number of elements of a shape; throws UsageError on negative dimensions or
// overflow, naming `what`.
std::int64_t checked_numel(const Shape& shape, std::string_view what);

}  // namespace lockstep
