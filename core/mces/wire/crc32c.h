// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the integrity check
// every MCES packet ends with. It catches corruption, not forgery: anyone can
// recompute it (authentication comes later with an AEAD, see docs/mces.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace gs::mces::wire {

// CRC32C of bytes, continuing from crc (pass 0 to start). crc32c("123456789")
// is 0xE3069283. Uses, by what the CPU has (checked once at run time):
// carry-less multiplication folding (AVX-512 VPCLMULQDQ) from kClmulMin
// bytes on, else the SSE4.2 crc32 instruction in three interleaved lanes,
// else a slice-by-8 table.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0) noexcept;

// The two implementations, exposed so tests can compare them.
std::uint32_t crc32c_table(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0) noexcept;
// False when this build or this CPU has no SSE4.2; crc32c_hw must then not be called.
bool crc32c_hw_available() noexcept;
std::uint32_t crc32c_hw(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0) noexcept;
// Folding pays from this size on.
constexpr std::size_t kClmulMin = 256;
// False without AVX-512 VPCLMULQDQ (and SSE4.2); crc32c_clmul must then not
// be called. Below kClmulMin it is crc32c_hw.
bool crc32c_clmul_available() noexcept;
std::uint32_t crc32c_clmul(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0) noexcept;

}  // namespace gs::mces::wire
