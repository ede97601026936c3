// The f16/bf16 conversions that the MPI reduction operators rely on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "half.h"

namespace lockstep::detail {
namespace {

TEST(Half, EveryFiniteF16RoundTripsThroughFloat) {
  for (std::uint32_t bits = 0; bits <= 0xffffU; ++bits) {
    const auto half = static_cast<std::uint16_t>(bits);
    if ((half & 0x7c00U) == 0x7c00U && (half & 0x3ffU) != 0) continue;  // NaN
    ASSERT_EQ(float_to_f16(f16_to_float(half)), half) << std::hex << bits;
  }
}

TEST(Half, F16RoundsToNearestEven) {
  // For neighbours a < b, values just below the midpoint go to a, just above
  // to b, and the midpoint itself to the one with an even mantissa.
  for (std::uint16_t a = 0; a < 0x7bffU; ++a) {
    const auto b = static_cast<std::uint16_t>(a + 1);
    const double low = static_cast<double>(f16_to_float(a));
    const double high = static_cast<double>(f16_to_float(b));
    const double middle = (low + high) / 2;
    const double nudge = (high - low) / 8;
    ASSERT_EQ(float_to_f16(static_cast<float>(middle - nudge)), a) << a;
    ASSERT_EQ(float_to_f16(static_cast<float>(middle + nudge)), b) << a;
    ASSERT_EQ(float_to_f16(static_cast<float>(middle)), (a & 1U) == 0 ? a : b) << a;
  }
}

TEST(Half, F16SpecialValues) {
  EXPECT_EQ(float_to_f16(65504.0F), 0x7bffU);
  EXPECT_EQ(float_to_f16(65520.0F), 0x7c00U);  // rounds up to infinity
  EXPECT_EQ(float_to_f16(-INFINITY), 0xfc00U);
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(NAN))));
  EXPECT_EQ(float_to_f16(-0.0F), 0x8000U);
  EXPECT_EQ(f16_to_float(0x0001U), 0x1p-24F);
  EXPECT_EQ(float_to_f16(0x1p-26F), 0x0000U);  // below half of the smallest subnormal
}

TEST(Half, Bf16RoundsToNearestEvenAndKeepsNaN) {
  for (std::uint32_t bits = 0; bits < 0x7f7fU; bits += 7) {
    const auto a = static_cast<std::uint16_t>(bits);
    const auto b = static_cast<std::uint16_t>(bits + 1);
    const double middle =
        (static_cast<double>(bf16_to_float(a)) + static_cast<double>(bf16_to_float(b))) / 2;
    ASSERT_EQ(float_to_bf16(static_cast<float>(middle)), (a & 1U) == 0 ? a : b) << bits;
    ASSERT_EQ(float_to_bf16(bf16_to_float(a)), a);
  }
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(float_to_bf16(1.0F), 0x3f80U);
}

}  // namespace
}  // namespace lockstep::detail
