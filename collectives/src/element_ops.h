// Element-wise helpers on host buffers of any floating or integer dtype, used
// where a backend or GradSync must touch the data itself: averaging after a
// sum, and casting gradients to and from their wire dtype.
#pragma once

#include <cstddef>

#include "lockstep/tensor.h"

namespace lockstep::detail {

// data[i] /= divisor; integer dtypes truncate toward zero, f16 and bf16
// compute in float.
void divide_in_place(void* data, DType dtype, std::size_t count, int divisor);

// destination[i] = source[i] * scale, converting between floating dtypes
// (f32, f64, f16, bf16) through double. Throws UsageError for other dtypes.
void convert_scaled(const void* source, DType source_dtype, void* destination,
                    DType destination_dtype, std::size_t count, double scale);

}  // namespace lockstep::detail
