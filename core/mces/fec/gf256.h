// Arithmetic in GF(2^8) for the FEC element: the field Reed-Solomon codes
// work in. Polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), generator 2, the
// field of most RS software (Jerasure, ISA-L), so test vectors compare.
//
// Addition is XOR. Multiplication goes through tables computed at compile
// time (gf256.cpp): no allocation, no initialisation order to get wrong.
// The region operations are the encoder's and decoder's inner loop; they use
// AVX2 (split-nibble table lookups with vpshufb, 32 bytes a step) when the
// CPU has it and a 256-entry row of the product table otherwise. Both give
// the same bytes (tested).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gs::mces::fec::gf {

// a * b in GF(2^8).
std::uint8_t mul(std::uint8_t a, std::uint8_t b) noexcept;
// The multiplicative inverse of a; inv(0) is 0 (callers never ask: the code's
// matrices have no zero where an inverse is taken).
std::uint8_t inv(std::uint8_t a) noexcept;

// dst[i] ^= c * src[i] for i < n. dst and src may not overlap unless equal.
void mul_add(std::uint8_t* dst, const std::uint8_t* src, std::size_t n, std::uint8_t c) noexcept;
// The same with the portable table loop only (tests compare the two paths).
void mul_add_portable(std::uint8_t* dst, const std::uint8_t* src, std::size_t n, std::uint8_t c) noexcept;
// True when mul_add uses the AVX2 path on this CPU.
bool simd_available() noexcept;

}  // namespace gs::mces::fec::gf
