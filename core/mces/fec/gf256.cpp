#include "core/mces/fec/gf256.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace gs::mces::fec::gf {
namespace {

struct Tables {
    std::uint8_t exp[512];            // exp[i] = 2^i, doubled so log a + log b needs no modulo
    std::uint8_t log[256];            // log[0] unused
    std::uint8_t mul[256][256];       // mul[c][x] = c * x: one row per coefficient
    std::uint8_t lo[256][16];         // lo[c][x] = c * x        (x < 16): the low nibble's product
    std::uint8_t hi[256][16];         // hi[c][x] = c * (x << 4) (x < 16): the high nibble's product
};

constexpr Tables make_tables() {
    Tables t{};
    unsigned x = 1;
    for (unsigned i = 0; i < 255; ++i) {
        t.exp[i] = static_cast<std::uint8_t>(x);
        t.log[x] = static_cast<std::uint8_t>(i);
        x <<= 1;
        if (x & 0x100) x ^= 0x11d;
    }
    for (unsigned i = 255; i < 512; ++i) t.exp[i] = t.exp[i - 255];
    for (unsigned a = 0; a < 256; ++a)
        for (unsigned b = 0; b < 256; ++b)
            t.mul[a][b] = (a == 0 || b == 0) ? 0 : t.exp[t.log[a] + t.log[b]];
    for (unsigned c = 0; c < 256; ++c)
        for (unsigned n = 0; n < 16; ++n) {
            t.lo[c][n] = t.mul[c][n];
            t.hi[c][n] = t.mul[c][n << 4];
        }
    return t;
}

constexpr Tables kT = make_tables();

// Spot checks that the tables are the field they claim to be.
static_assert(kT.exp[0] == 1 && kT.exp[8] == 0x1d && kT.exp[255] == 1);
static_assert(kT.mul[2][0x80] == 0x1d);
static_assert(kT.mul[0x53][kT.exp[255 - kT.log[0x53]]] == 1);

void xor_region(std::uint8_t* dst, const std::uint8_t* src, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t a, b;
        std::memcpy(&a, dst + i, 8);
        std::memcpy(&b, src + i, 8);
        a ^= b;
        std::memcpy(dst + i, &a, 8);
    }
    for (; i < n; ++i) dst[i] ^= src[i];
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void mul_add_avx2(std::uint8_t* dst, const std::uint8_t* src,
                                                   std::size_t n, std::uint8_t c) noexcept {
    const __m256i tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kT.lo[c])));
    const __m256i thi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kT.hi[c])));
    const __m256i mask = _mm256_set1_epi8(0x0f);
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
        const __m256i l = _mm256_and_si256(s, mask);
        const __m256i h = _mm256_and_si256(_mm256_srli_epi64(s, 4), mask);
        const __m256i p = _mm256_xor_si256(_mm256_shuffle_epi8(tlo, l), _mm256_shuffle_epi8(thi, h));
        const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dst + i));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_xor_si256(d, p));
    }
    const std::uint8_t* row = kT.mul[c];
    for (; i < n; ++i) dst[i] ^= row[src[i]];
}

bool has_avx2() noexcept {
    static const bool has = __builtin_cpu_supports("avx2");
    return has;
}
#endif

}  // namespace

std::uint8_t mul(std::uint8_t a, std::uint8_t b) noexcept { return kT.mul[a][b]; }

std::uint8_t inv(std::uint8_t a) noexcept { return a == 0 ? 0 : kT.exp[255 - kT.log[a]]; }

void mul_add_portable(std::uint8_t* dst, const std::uint8_t* src, std::size_t n, std::uint8_t c) noexcept {
    if (c == 0 || n == 0) return;
    if (c == 1) return xor_region(dst, src, n);
    const std::uint8_t* row = kT.mul[c];
    for (std::size_t i = 0; i < n; ++i) dst[i] ^= row[src[i]];
}

void mul_add(std::uint8_t* dst, const std::uint8_t* src, std::size_t n, std::uint8_t c) noexcept {
    if (c == 0 || n == 0) return;
    if (c == 1) return xor_region(dst, src, n);
#if defined(__x86_64__)
    if (n >= 32 && has_avx2()) return mul_add_avx2(dst, src, n, c);
#endif
    mul_add_portable(dst, src, n, c);
}

bool simd_available() noexcept {
#if defined(__x86_64__)
    return has_avx2();
#else
    return false;
#endif
}

}  // namespace gs::mces::fec::gf
