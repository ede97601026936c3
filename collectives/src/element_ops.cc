#include "element_ops.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "half.h"

namespace lockstep::detail {

namespace {

double load(const void* data, DType dtype, std::size_t index) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<double>(static_cast<const float*>(data)[index]);
    case DType::kF64:
      return static_cast<const double*>(data)[index];
    case DType::kF16:
      return static_cast<double>(f16_to_float(static_cast<const std::uint16_t*>(data)[index]));
    case DType::kBF16:
      return static_cast<double>(bf16_to_float(static_cast<const std::uint16_t*>(data)[index]));
    default:
      throw UsageError("cannot convert " + std::string(dtype_name(dtype)) +
                       " elements; only f32, f64, f16 and bf16 are supported");
  }
}

void store(void* data, DType dtype, std::size_t index, double value) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(data)[index] = static_cast<float>(value);
      return;
    case DType::kF64:
      static_cast<double*>(data)[index] = value;
      return;
    case DType::kF16:
      static_cast<std::uint16_t*>(data)[index] = float_to_f16(static_cast<float>(value));
      return;
    case DType::kBF16:
      static_cast<std::uint16_t*>(data)[index] = float_to_bf16(static_cast<float>(value));
      return;
    default:
      throw UsageError("cannot convert to " + std::string(dtype_name(dtype)) +
                       " elements; only f32, f64, f16 and bf16 are supported");
  }
}

template <class T>
void divide_typed(void* data, std::size_t count, T divisor) {
  T* values = static_cast<T*>(data);
  for (std::size_t i = 0; i < count; ++i) values[i] = static_cast<T>(values[i] / divisor);
}

template <float (*ToFloat)(std::uint16_t), std::uint16_t (*FromFloat)(float)>
void divide_half(void* data, std::size_t count, float divisor) {
  auto* values = static_cast<std::uint16_t*>(data);
  for (std::size_t i = 0; i < count; ++i) values[i] = FromFloat(ToFloat(values[i]) / divisor);
}

}  // namespace

void divide_in_place(void* data, DType dtype, std::size_t count, int divisor) {
  switch (dtype) {
    case DType::kF32:
      return divide_typed<float>(data, count, static_cast<float>(divisor));
    case DType::kF64:
      return divide_typed<double>(data, count, divisor);
    case DType::kI32:
      return divide_typed<std::int32_t>(data, count, divisor);
    case DType::kI64:
      return divide_typed<std::int64_t>(data, count, divisor);
    case DType::kU8:
      return divide_typed<std::uint8_t>(data, count, static_cast<std::uint8_t>(divisor));
    case DType::kF16:
      return divide_half<f16_to_float, float_to_f16>(data, count, static_cast<float>(divisor));
    case DType::kBF16:
      return divide_half<bf16_to_float, float_to_bf16>(data, count, static_cast<float>(divisor));
  }
}

void convert_scaled(const void* source, DType source_dtype, void* destination,
                    DType destination_dtype, std::size_t count, double scale) {
  if (source_dtype == destination_dtype && scale == 1.0) {
    std::memcpy(destination, source, count * dtype_size(source_dtype));
    return;
  }
  if (source_dtype == DType::kF32 && destination_dtype == DType::kF32) {
    // The common case (f32 gradients averaged in place) without the double
    // round trip per element.
    const auto* in = static_cast<const float*>(source);
    auto* out = static_cast<float*>(destination);
    const auto factor = static_cast<float>(scale);
    for (std::size_t i = 0; i < count; ++i) out[i] = in[i] * factor;
    return;
  }
  for (std::size_t i = 0; i < count; ++i) {
    store(destination, destination_dtype, i, load(source, source_dtype, i) * scale);
  }
}

}  // namespace lockstep::detail
