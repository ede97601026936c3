#include "cuda_element_ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace lockstep::detail {

namespace {

constexpr int kThreads = 256;
constexpr std::size_t kMaxBlocks = 4096;  // grid-stride loops cover the rest

unsigned blocks_for(std::size_t count) {
  const std::size_t wanted = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
}

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
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < count;
       i += std::size_t{gridDim.x} * blockDim.x) {
    destination[i] = narrow<Destination>(widen(source[i]) * scale);
  }
}

// The host's fast path for f32 gradients: one float multiplication.
__global__ void scale_f32_kernel(const float* source, float* destination, std::size_t count,
                                 float scale) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < count;
       i += std::size_t{gridDim.x} * blockDim.x) {
    destination[i] = source[i] * scale;
  }
}

template <class T, class Compute>
__global__ void divide_kernel(T* data, std::size_t count, Compute divisor) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < count;
       i += std::size_t{gridDim.x} * blockDim.x) {
    data[i] = narrow<T>(static_cast<double>(static_cast<Compute>(widen(data[i])) / divisor));
  }
}

template <class Source>
void launch_convert(const void* source, void* destination, CudaFloat destination_type,
                    std::size_t count, double scale) {
  const auto* in = static_cast<const Source*>(source);
  const unsigned blocks = blocks_for(count);
  switch (destination_type) {
    case CudaFloat::kF32:
      convert_scaled_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(
          in, static_cast<float*>(destination), count, scale);
      return;
    case CudaFloat::kF64:
      convert_scaled_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(
          in, static_cast<double*>(destination), count, scale);
      return;
    case CudaFloat::kF16:
      convert_scaled_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(
          in, static_cast<__half*>(destination), count, scale);
      return;
    case CudaFloat::kBF16:
      convert_scaled_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(
          in, static_cast<__nv_bfloat16*>(destination), count, scale);
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
  switch (source_type) {
    case CudaFloat::kF32:
      launch_convert<float>(source, destination, destination_type, count, scale);
      break;
    case CudaFloat::kF64:
      launch_convert<double>(source, destination, destination_type, count, scale);
      break;
    case CudaFloat::kF16:
      launch_convert<__half>(source, destination, destination_type, count, scale);
      break;
    case CudaFloat::kBF16:
      launch_convert<__nv_bfloat16>(source, destination, destination_type, count, scale);
      break;
  }
  return cudaGetLastError();
}

cudaError_t cuda_divide_in_place(void* data, CudaFloat type, std::size_t count, int divisor) {
  if (count == 0) return cudaSuccess;
  const unsigned blocks = blocks_for(count);
  switch (type) {
    case CudaFloat::kF32:
      divide_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(static_cast<float*>(data), count,
                                                               static_cast<float>(divisor));
      break;
    case CudaFloat::kF64:
      divide_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(static_cast<double*>(data), count,
                                                               static_cast<double>(divisor));
      break;
    case CudaFloat::kF16:
      divide_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(static_cast<__half*>(data), count,
                                                               static_cast<float>(divisor));
      break;
    case CudaFloat::kBF16:
      divide_kernel<<<blocks, kThreads, 0, cudaStreamLegacy>>>(static_cast<__nv_bfloat16*>(data),
                                                               count, static_cast<float>(divisor));
      break;
  }
  return cudaGetLastError();
}

}  // namespace lockstep::detail
