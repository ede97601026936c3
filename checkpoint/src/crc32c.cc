#include "crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace lockstep::checkpoint {

namespace {

constexpr std::uint32_t kPolynomial = 0x82F63B78;  // reflected Castagnoli

// Slicing-by-8 tables: eight bytes per step without the SSE4.2 instruction.
using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables tables{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1U) != 0 ? kPolynomial : 0U);
    tables[0][i] = crc;
  }
  for (std::size_t i = 0; i < 256; ++i) {
    for (std::size_t t = 1; t < 8; ++t) {
      const std::uint32_t previous = tables[t - 1][i];
      tables[t][i] = (previous >> 8) ^ tables[0][previous & 0xFFU];
    }
  }
  return tables;
}

constexpr Tables kTables = make_tables();

std::uint32_t crc32c_portable(const unsigned char* data, std::size_t size, std::uint32_t crc) {
  while (size >= 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, data, 8);
    word ^= crc;
    crc = kTables[7][word & 0xFFU] ^ kTables[6][(word >> 8) & 0xFFU] ^
          kTables[5][(word >> 16) & 0xFFU] ^ kTables[4][(word >> 24) & 0xFFU] ^
          kTables[3][(word >> 32) & 0xFFU] ^ kTables[2][(word >> 40) & 0xFFU] ^
          kTables[1][(word >> 48) & 0xFFU] ^ kTables[0][word >> 56];
    data += 8;
    size -= 8;
  }
  while (size-- > 0) crc = (crc >> 8) ^ kTables[0][(crc ^ *data++) & 0xFFU];
  return crc;
}

// Multiplies a and b modulo the polynomial, in the reflected bit order of
// the CRC (bit 31 is x^0).
std::uint32_t multiply_modulo(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (std::uint32_t bit = 1U << 31; bit != 0; bit >>= 1) {
    if ((a & bit) != 0) {
      product ^= b;
      if ((a & (bit - 1)) == 0) break;
    }
    b = (b & 1U) != 0 ? (b >> 1) ^ kPolynomial : b >> 1;
  }
  return product;
}

// x^(8·bytes) modulo the polynomial: multiplying a CRC register by it is
// what appending `bytes` zero bytes does to the register.
std::uint32_t shift_factor(std::uint64_t bytes) {
  std::uint32_t factor = 1U << 31;  // x^0
  std::uint32_t square = 1U << 23;  // x^8, then x^16, x^32, ...
  for (; bytes != 0; bytes >>= 1) {
    if ((bytes & 1U) != 0) factor = multiply_modulo(square, factor);
    square = multiply_modulo(square, square);
  }
  return factor;
}

#if defined(__x86_64__)
// The crc32 instruction takes three cycles but can start one per cycle, so
// three independent streams over consecutive blocks run about three times
// as fast as one; their registers are then joined by shifting (the CRC is
// linear over GF(2)).
constexpr std::size_t kStreamBlock = 8U << 10;

__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const unsigned char* data,
                                                             std::size_t size, std::uint32_t crc) {
  static const std::uint32_t block_shift = shift_factor(kStreamBlock);
  std::uint64_t wide = crc;
  while (size >= 3 * kStreamBlock) {
    std::uint64_t second = 0;
    std::uint64_t third = 0;
    for (std::size_t i = 0; i < kStreamBlock; i += 8) {
      std::uint64_t word0 = 0;
      std::uint64_t word1 = 0;
      std::uint64_t word2 = 0;
      std::memcpy(&word0, data + i, 8);
      std::memcpy(&word1, data + kStreamBlock + i, 8);
      std::memcpy(&word2, data + 2 * kStreamBlock + i, 8);
      wide = _mm_crc32_u64(wide, word0);
      second = _mm_crc32_u64(second, word1);
      third = _mm_crc32_u64(third, word2);
    }
    auto joined = multiply_modulo(block_shift, static_cast<std::uint32_t>(wide)) ^
                  static_cast<std::uint32_t>(second);
    joined = multiply_modulo(block_shift, joined) ^ static_cast<std::uint32_t>(third);
    wide = joined;
    data += 3 * kStreamBlock;
    size -= 3 * kStreamBlock;
  }
  while (size >= 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, data, 8);
    wide = _mm_crc32_u64(wide, word);
    data += 8;
    size -= 8;
  }
  auto narrow = static_cast<std::uint32_t>(wide);
  while (size-- > 0) narrow = _mm_crc32_u8(narrow, *data++);
  return narrow;
}

bool have_sse42() {
  static const bool supported = __builtin_cpu_supports("sse4.2") != 0;
  return supported;
}
#endif

}  // namespace

std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t crc) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  crc = ~crc;
#if defined(__x86_64__)
  if (have_sse42()) return ~crc32c_sse42(data, bytes.size(), crc);
#endif
  return ~crc32c_portable(data, bytes.size(), crc);
}

std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t length_b) {
  return multiply_modulo(shift_factor(length_b), crc_a) ^ crc_b;
}

}  // namespace lockstep::checkpoint
