// Reading and writing tensor elements as double, for tests that compare
// collective results with a reference computed in double precision.
#pragma once

#include <cstdint>
#include <cstring>

#include <lockstep/tensor.h>

#include "half.h"

namespace lockstep::testing {

inline double element(const Tensor& tensor, std::size_t index) {
  const void* data = tensor.data();
  switch (tensor.dtype()) {
    case DType::kF32:
      return static_cast<double>(static_cast<const float*>(data)[index]);
    case DType::kF64:
      return static_cast<const double*>(data)[index];
    case DType::kF16:
      return static_cast<double>(
          detail::f16_to_float(static_cast<const std::uint16_t*>(data)[index]));
    case DType::kBF16:
      return static_cast<double>(
          detail::bf16_to_float(static_cast<const std::uint16_t*>(data)[index]));
    case DType::kI32:
      return static_cast<const std::int32_t*>(data)[index];
    case DType::kI64:
      return static_cast<double>(static_cast<const std::int64_t*>(data)[index]);
    case DType::kU8:
      return static_cast<const std::uint8_t*>(data)[index];
  }
  return 0;
}

inline void set_element(Tensor& tensor, std::size_t index, double value) {
  void* data = tensor.data();
  switch (tensor.dtype()) {
    case DType::kF32:
      static_cast<float*>(data)[index] = static_cast<float>(value);
      return;
    case DType::kF64:
      static_cast<double*>(data)[index] = value;
      return;
    case DType::kF16:
      static_cast<std::uint16_t*>(data)[index] = detail::float_to_f16(static_cast<float>(value));
      return;
    case DType::kBF16:
      static_cast<std::uint16_t*>(data)[index] = detail::float_to_bf16(static_cast<float>(value));
      return;
    case DType::kI32:
      static_cast<std::int32_t*>(data)[index] = static_cast<std::int32_t>(value);
      return;
    case DType::kI64:
      static_cast<std::int64_t*>(data)[index] = static_cast<std::int64_t>(value);
      return;
    case DType::kU8:
      static_cast<std::uint8_t*>(data)[index] = static_cast<std::uint8_t>(value);
      return;
  }
}

inline bool is_integer(DType dtype) {
  return dtype == DType::kI32 || dtype == DType::kI64 || dtype == DType::kU8;
}

// Relative precision of a dtype: the tolerance for results that had to be
// rounded (averages).
inline double precision(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return 1.0 / 1024;
    case DType::kBF16:
      return 1.0 / 128;
    case DType::kF32:
      return 1e-6;
    default:
      return 1e-12;
  }
}

// A value every dtype holds exactly, different per rank and element, so
// that sums over up to 8 ranks stay exact (multiples of 1/4, |x| <= 22).
inline double input_value(int rank, std::size_t index, DType dtype) {
  const auto base = static_cast<double>(
      static_cast<long>((index * 7 + static_cast<std::size_t>(rank) * 13 + 5) % 23) - 11);
  return is_integer(dtype) ? base : base * 0.25;
}

}  // namespace lockstep::testing
