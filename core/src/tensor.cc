#include "lockstep/tensor.h"

#include <sys/mman.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "lockstep/build_config.h"
#include "lockstep/cuda_check.h"
#include "lockstep/log.h"

namespace lockstep {

namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeInfo, 7> kDTypes = {{
    {DType::kF32, "f32", 4},
    {DType::kF16, "f16", 2},
    {DType::kBF16, "bf16", 2},
    {DType::kF64, "f64", 8},
    {DType::kI32, "i32", 4},
    {DType::kI64, "i64", 8},
    {DType::kU8, "u8", 1},
}};
constexpr std::array<DType, 7> kAllDTypes = {DType::kF32, DType::kF16, DType::kBF16, DType::kF64,
                                             DType::kI32, DType::kI64, DType::kU8};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  throw UsageError(fmt::format("invalid dtype value {}", static_cast<int>(dtype)));
}

constexpr std::size_t kHostAlignment = 64;
constexpr std::size_t kHugePage = 2U << 20;

#if LOCKSTEP_HAVE_CUDA
// Pinned memory needs a working driver and at least one GPU; without them
// cudaMallocHost fails and ordinary memory serves as well.
bool cuda_usable() {
  static const bool usable = [] {
    int count = 0;
    const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
    cudaGetLastError();  // clear the sticky error of a failed probe
    return ok;
  }();
  return usable;
}
#endif

std::shared_ptr<void> allocate_host(std::size_t bytes, bool* pinned) {
  *pinned = false;
  const std::size_t size = bytes == 0 ? kHostAlignment : bytes;
#if LOCKSTEP_HAVE_CUDA
  if (cuda_usable()) {
    void* data = nullptr;
    LOCKSTEP_CHECK_CUDA(cudaMallocHost(&data, size));
    std::memset(data, 0, size);
    *pinned = true;
    return {data, [](void* p) { cudaFreeHost(p); }};
  }
#endif
  // Large buffers start on a huge-page boundary and ask for transparent
  // huge pages (advice only: the kernel may decline). Copies through them
  // fault and miss the TLB far less; on virtual machines, where memory left
  // idle for a few seconds costs a fault per page at its next touch, a
  // checkpoint's staging copy ran 30 % faster. posix_memalign needs no
  // padding of the size, so no physical memory is wasted.
  void* data = nullptr;
  if (size >= kHugePage) {
    if (::posix_memalign(&data, kHugePage, size) != 0) data = nullptr;
    if (data != nullptr) ::madvise(data, size / kHugePage * kHugePage, MADV_HUGEPAGE);
  } else {
    data = std::aligned_alloc(kHostAlignment,
                              (size + kHostAlignment - 1) / kHostAlignment * kHostAlignment);
  }
  if (data == nullptr) {
    throw BackendError("libc", 0,
                       fmt::format("cannot allocate {} bytes of host memory; reduce the model or "
                                   "batch size, or run fewer ranks per node",
                                   bytes));
  }
  std::memset(data, 0, size);
  return {data, [](void* p) { std::free(p); }};
}

std::shared_ptr<void> allocate_cuda([[maybe_unused]] std::size_t bytes,
                                    [[maybe_unused]] int device) {
#if LOCKSTEP_HAVE_CUDA
  int previous = 0;
  LOCKSTEP_CHECK_CUDA(cudaGetDevice(&previous));
  LOCKSTEP_CHECK_CUDA(cudaSetDevice(device));
  void* data = nullptr;
  LOCKSTEP_CHECK_CUDA(cudaMalloc(&data, bytes == 0 ? 1 : bytes));
  LOCKSTEP_CHECK_CUDA(cudaMemset(data, 0, bytes == 0 ? 1 : bytes));
  LOCKSTEP_CHECK_CUDA(cudaSetDevice(previous));
  return {data, [](void* p) { cudaFree(p); }};
#else
  throw UsageError(
      "a CUDA tensor was requested but this lockstep was built without CUDA; rebuild with "
      "-DLOCKSTEP_CUDA=ON on a machine with the CUDA toolkit, or use Device::cpu()");
#endif
}

}  // namespace

std::size_t dtype_size(DType dtype) { return info(dtype).size; }
std::string_view dtype_name(DType dtype) { return info(dtype).name; }
std::span<const DType> all_dtypes() { return kAllDTypes; }

DType parse_dtype(std::string_view name) {
  for (const auto& entry : kDTypes) {
    if (entry.name == name) return entry.dtype;
  }
  throw UsageError(
      fmt::format("unknown dtype '{}'; accepted: f32, f16, bf16, f64, i32, i64, u8", name));
}

Device Device::cuda(int index) {
  if (index < 0) throw UsageError(fmt::format("CUDA device index must be >= 0, got {}", index));
  return {Kind::kCuda, index};
}

std::string Device::str() const { return is_cpu() ? "cpu" : fmt::format("cuda:{}", index); }

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::int64_t checked_numel(const Shape& shape, std::string_view what) {
  std::int64_t numel = 1;
  for (const std::int64_t dim : shape) {
    if (dim < 0) {
      throw UsageError(fmt::format("{}: shape {} has a negative dimension; dimensions must be >= 0",
                                   what, shape_str(shape)));
    }
    if (dim != 0 && numel > std::numeric_limits<std::int64_t>::max() / dim) {
      throw UsageError(fmt::format("{}: shape {} has more elements than fit in 64 bits", what,
                                   shape_str(shape)));
    }
    numel *= dim;
  }
  return numel;
}

Tensor Tensor::allocate(std::string name, DType dtype, Shape shape, Device device) {
  Tensor tensor;
  tensor.numel_ = checked_numel(shape, name);
  tensor.name_ = std::move(name);
  tensor.dtype_ = dtype;
  tensor.shape_ = std::move(shape);
  tensor.device_ = device;
  const std::size_t bytes = tensor.nbytes();
  tensor.owner_ =
      device.is_cpu() ? allocate_host(bytes, &tensor.pinned_) : allocate_cuda(bytes, device.index);
  tensor.data_ = tensor.owner_.get();
  return tensor;
}

Tensor Tensor::borrow(std::string name, void* data, DType dtype, Shape shape, Device device) {
  Tensor tensor;
  tensor.numel_ = checked_numel(shape, name);
  if (data == nullptr && tensor.numel_ > 0) {
    throw UsageError(fmt::format("tensor '{}': cannot borrow a null pointer for {} elements", name,
                                 tensor.numel_));
  }
  tensor.name_ = std::move(name);
  tensor.dtype_ = dtype;
  tensor.shape_ = std::move(shape);
  tensor.device_ = device;
  tensor.data_ = data;
  return tensor;
}

Tensor Tensor::view(std::string name, std::size_t byte_offset, DType dtype, Shape shape) const {
  const std::int64_t numel = checked_numel(shape, name);
  const std::size_t bytes = static_cast<std::size_t>(numel) * dtype_size(dtype);
  if (byte_offset > nbytes() || bytes > nbytes() - byte_offset) {
    throw UsageError(
        fmt::format("tensor '{}': a view of {} bytes at byte {} reaches past the {} bytes of '{}'",
                    name, bytes, byte_offset, nbytes(), describe()));
  }
  Tensor tensor = *this;
  tensor.name_ = std::move(name);
  tensor.dtype_ = dtype;
  tensor.shape_ = std::move(shape);
  tensor.numel_ = numel;
  tensor.data_ = static_cast<char*>(data_) + byte_offset;
  return tensor;
}

std::string Tensor::describe() const {
  return fmt::format("{} {}{} {}", name_.empty() ? "<unnamed>" : name_, dtype_name(dtype_),
                     shape_str(shape_), device_.str());
}

void Tensor::check_host_access(DType requested) const {
  if (requested != dtype_) {
    throw UsageError(fmt::format("tensor '{}' holds {} but was accessed as {}", name_,
                                 dtype_name(dtype_), dtype_name(requested)));
  }
  if (!device_.is_cpu()) {
    throw UsageError(
        fmt::format("tensor '{}' lives on {}; copy it to the host before reading it "
                    "through data_as<>()",
                    name_, device_.str()));
  }
}

}  // namespace lockstep
