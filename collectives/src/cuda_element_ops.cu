#include "cuda_element_ops.h"

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "lockstep/cuda_grid.cuh"

namespace lockstep::detail {

namespace {

using cuda_grid::blocks_for;
using cuda_grid::first_index;
using cuda_grid::kThreads;
using cuda_grid::stride;

__device__ double widen(float value) { return static_cast<double>(value); }
__device__ double widen(double value) { return value; }
__device__ double widen(__half value) { return static_cast<double>(__half2float(value)); }
__device__ double widen(__nv_bfloat16 value) {
  return static_cast<double>(__bfloat162float(value));
}

// Like the host's store(): to float first, then to the 16-bit format.
template <class T>
__device__ T narrow(double value);
template <>
__device__ float narrow<float>(double value) {
  return static_cast<float>(value);
}
template <>
__device__ double narrow<double>(double value) {
  return value;
}
template <>
__device__ __half narrow<__half>(double value) {
  return __float2half_rn(static_cast<float>(value));
}
template <>
__device__ __nv_bfloat16 narrow<__nv_bfloat16>(double value) {
  return __float2bfloat16_rn(static_cast<float>(value));
}

template <class Source, class Destination>
__global__ void convert_scaled_kernel(const Source* source, Destination* destination,
                                      std::size_t count, double scale) {
  for (std::size_t i = first_index(); i < count; i += stride()) {
    destination[i] = narrow<Destination>(widen(source[i]) * scale);
  }
}

// The host's fast path for f32 gradients: one float multiplication.
__global__ void scale_f32_kernel(const float* source, float* destination, std::size_t count,
                                 float scale) {
  for (std::size_t i = first_index(); i < count; i += stride()) {
    destination[i] = source[i] * scale;
  }
}

template <class T, class Compute>
__global__ void divide_kernel(T* data, std::size_t count, Compute divisor) {
  for (std::size_t i = first_index(); i < count; i += stride()) {
    data[i] = narrow<T>(static_cast<double>(static_cast<Compute>(widen(data[i])) / divisor));
  }
}

// Calls `call` with a value of the C++ type that stores `type`.
template <class Call>
void with_type(CudaFloat type, Call&& call) {
  switch (type) {
    case CudaFloat::kF32:
      call(float{});
      return;
    case CudaFloat::kF64:
      call(double{});
      return;
    case CudaFloat::kF16:
      call(__half{});
      return;
    case CudaFloat::kBF16:
      call(__nv_bfloat16{});
      return;
  }
}

}  // namespace

cudaError_t cuda_convert_scaled(const void* source, CudaFloat source_type, void* destination,
                                CudaFloat destination_type, std::size_t count, double scale) {
  if (count == 0) return cudaSuccess;
  if (source_type == CudaFloat::kF32 && destination_type == CudaFloat::kF32) {
    scale_f32_kernel<<<blocks_for(count), kThreads, 0, cudaStreamLegacy>>>(
        static_cast<const float*>(source), static_cast<float*>(destination), count,
        static_cast<float>(scale));
    return cudaGetLastError();
  }
  with_type(source_type, [&](auto source_value) {
    using Source = decltype(source_value);
    with_type(destination_type, [&](auto destination_value) {
      using Destination = decltype(destination_value);
      convert_scaled_kernel<<<blocks_for(count), kThreads, 0, cudaStreamLegacy>>>(
          static_cast<const Source*>(source), static_cast<Destination*>(destination), count, scale);
    });
  });
  return cudaGetLastError();
}

cudaError_t cuda_divide_in_place(void* data, CudaFloat type, std::size_t count, int divisor) {
  if (count == 0) return cudaSuccess;
  with_type(type, [&](auto value) {
    using T = decltype(value);
    // Halves divide in float, as on the host.
    using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;
    divide_kernel<<<blocks_for(count), kThreads, 0, cudaStreamLegacy>>>(
        static_cast<T*>(data), count, static_cast<Compute>(divisor));
  });
  return cudaGetLastError();
}

}  // namespace lockstep::detail
