// Conversions between float and the 16-bit floating-point formats (IEEE
// binary16 "f16" and bfloat16 "bf16"), rounding to nearest even. MPI and the
// host have no arithmetic on these formats, so reductions convert to float,
// combine, and convert back.
#pragma once

#include <bit>
#include <cstdint>

namespace lockstep::detail {

inline float bf16_to_float(std::uint16_t value) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(value) << 16);
}

inline std::uint16_t float_to_bf16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7fffffffU) > 0x7f800000U) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040U);  // keep NaN a (quiet) NaN
  }
  const std::uint32_t round_bias = 0x7fffU + ((bits >> 16) & 1U);
  return static_cast<std::uint16_t>((bits + round_bias) >> 16);
}

inline float f16_to_float(std::uint16_t value) {
  const std::uint32_t sign = static_cast<std::uint32_t>(value & 0x8000U) << 16;
  const std::uint32_t exponent = (value >> 10) & 0x1fU;
  const std::uint32_t mantissa = value & 0x3ffU;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24F;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) {
    return std::bit_cast<float>(sign | 0x7f800000U | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112U) << 23) | (mantissa << 13));
}

inline std::uint16_t float_to_f16(float value) {
  std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = bits & 0x80000000U;
  bits ^= sign;
  std::uint32_t half = 0;
  if (bits >= 0x47800000U) {  // 2^16 and above, infinities and NaNs
    half = bits > 0x7f800000U ? 0x7e00U : 0x7c00U;
  } else if (bits < 0x38800000U) {
    // Below the smallest normal half: adding 0.5 lets the float unit do the
    // round-to-nearest-even shift into the subnormal range.
    const float shifted = std::bit_cast<float>(bits) + 0.5F;
    half = std::bit_cast<std::uint32_t>(shifted) - 0x3f000000U;
  } else {
    const std::uint32_t odd = (bits >> 13) & 1U;
    bits -= (127U - 15U) << 23;  // rebias the exponent
    bits += 0xfffU + odd;        // round to nearest even; may carry into the exponent
    half = bits >> 13;
  }
  return static_cast<std::uint16_t>(half | (sign >> 16));
}

}  // namespace lockstep::detail
