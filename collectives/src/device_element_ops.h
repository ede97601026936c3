// convert_scaled and divide_in_place (element_ops.h) for buffers on the host
// or on a GPU: host buffers run the loops at once; CUDA buffers get a copy or
// a kernel queued on the legacy default stream of their device, in order
// with the kernels that produced them and before the collectives that read
// them (the NCCL backend's stream waits for that stream).
#pragma once

#include <cstddef>

#include "lockstep/tensor.h"

namespace lockstep::detail {

// Both buffers are on `device`. Throws UsageError for a dtype other than
// f32, f64, f16 or bf16, or a CUDA device in a build without CUDA;
// BackendError when CUDA fails to queue the work.
void convert_scaled_on(Device device, const void* source, DType source_dtype, void* destination,
                       DType destination_dtype, std::size_t count, double scale);

// Throws like convert_scaled_on; on a GPU only floating dtypes are handled.
void divide_in_place_on(Device device, void* data, DType dtype, std::size_t count, int divisor);

}  // namespace lockstep::detail
