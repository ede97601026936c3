// The GPU counterparts of element_ops.h that GradSync needs for gradients in
// CUDA memory, with the same arithmetic as the host loops, so that a GPU
// averages the same sums to the same bits. Plain C++ without lockstep
// headers: the kernels behind it are compiled by nvcc as C++17.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lockstep::detail {

// The floating dtypes the kernels handle (lockstep::DType's f32, f64, f16
// and bf16).
enum class CudaFloat : std::uint8_t { kF32, kF64, kF16, kBF16 };

// Both queue a kernel on the legacy default stream of the current device and
// return the launch's error (cudaSuccess when it was queued); `count` may be
// zero. Work the caller queues on that stream afterwards sees the result.

// destination[i] = source[i] * scale: in float for f32 to f32, through
// double otherwise, rounding to nearest even into f16 and bf16.
cudaError_t cuda_convert_scaled(const void* source, CudaFloat source_type, void* destination,
                                CudaFloat destination_type, std::size_t count, double scale);

// data[i] /= divisor: in double for f64, in float for the others.
cudaError_t cuda_divide_in_place(void* data, CudaFloat type, std::size_t count, int divisor);

}  // namespace lockstep::detail
