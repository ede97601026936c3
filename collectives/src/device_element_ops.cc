#include "device_element_ops.h"

#include <string>

#include "element_ops.h"
#include "lockstep/build_config.h"
#include "lockstep/error.h"
#if LOCKSTEP_HAVE_CUDA
#include "cuda_element_ops.h"
#include "lockstep/cuda_check.h"
#endif

namespace lockstep::detail {

namespace {

#if LOCKSTEP_HAVE_CUDA
CudaFloat cuda_float(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return CudaFloat::kF32;
    case DType::kF64:
      return CudaFloat::kF64;
    case DType::kF16:
      return CudaFloat::kF16;
    case DType::kBF16:
      return CudaFloat::kBF16;
    default:
      throw UsageError("cannot convert " + std::string(dtype_name(dtype)) +
                       " elements on a GPU; only f32, f64, f16 and bf16 are supported");
  }
}

// Kernels and copies go to the current device: makes `device` current for
// the guard's lifetime and gives the caller's thread its own back after.
class CurrentDevice {
 public:
  explicit CurrentDevice(Device device) {
    LOCKSTEP_CHECK_CUDA(cudaGetDevice(&previous_));
    if (previous_ != device.index) LOCKSTEP_CHECK_CUDA(cudaSetDevice(device.index));
  }
  // Scoped to one call: neither copied nor moved.
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;
  ~CurrentDevice() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};
#else
[[noreturn]] void throw_no_cuda(Device device) {
  throw UsageError("buffers in " + device.str() +
                   " memory need CUDA, and this lockstep was built without it");
}
#endif

}  // namespace

void convert_scaled_on(Device device, const void* source, DType source_dtype, void* destination,
                       DType destination_dtype, std::size_t count, double scale) {
  if (device.is_cpu()) {
    convert_scaled(source, source_dtype, destination, destination_dtype, count, scale);
    return;
  }
#if LOCKSTEP_HAVE_CUDA
  if (count == 0) return;
  const CurrentDevice current(device);
  if (source_dtype == destination_dtype && scale == 1.0) {
    LOCKSTEP_CHECK_CUDA(cudaMemcpyAsync(destination, source, count * dtype_size(source_dtype),
                                        cudaMemcpyDeviceToDevice, cudaStreamLegacy));
    return;
  }
  LOCKSTEP_CHECK_CUDA(cuda_convert_scaled(source, cuda_float(source_dtype), destination,
                                          cuda_float(destination_dtype), count, scale));
#else
  throw_no_cuda(device);
#endif
}

void divide_in_place_on(Device device, void* data, DType dtype, std::size_t count, int divisor) {
  if (device.is_cpu()) {
    divide_in_place(data, dtype, count, divisor);
    return;
  }
#if LOCKSTEP_HAVE_CUDA
  if (count == 0) return;
  const CurrentDevice current(device);
  LOCKSTEP_CHECK_CUDA(cuda_divide_in_place(data, cuda_float(dtype), count, divisor));
#else
  throw_no_cuda(device);
#endif
}

}  // namespace lockstep::detail
