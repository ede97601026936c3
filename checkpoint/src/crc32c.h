// CRC-32C (Castagnoli), the checksum of every slice a checkpoint writes. It
// is what iSCSI, ext4 and RocksDB use: modern x86 computes it in hardware,
// and it catches every burst error up to 32 bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace lockstep::checkpoint {

// Continues a CRC-32C over `bytes`; start with crc = 0.
std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t crc = 0);

// The CRC-32C of A followed by B, from crc32c(A), crc32c(B) and B's length:
// a file's checksum from the checksums of its parts, without reading them
// again.
std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t length_b);

}  // namespace lockstep::checkpoint
