#include "core/mces/wire/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace gs::mces::wire {

namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;

// tables[k][b]: the CRC of byte b followed by k zero bytes (slice-by-8).
using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
    Tables t{};
    for (std::uint32_t b = 0; b < 256; ++b) {
        std::uint32_t c = b;
        for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
        t[0][b] = c;
    }
    for (std::size_t k = 1; k < 8; ++k)
        for (std::size_t b = 0; b < 256; ++b)
            t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
    return t;
}

constexpr Tables kTables = make_tables();

#if defined(__x86_64__)
// The crc32 instruction has a latency of 3 cycles and a throughput of 1 per
// cycle: one dependency chain uses a third of it. Three chains over three
// adjacent blocks, joined with a "shift" (the CRC register after `block`
// zero bytes, linear in the register, so four 256-entry tables hold it), run
// close to 3x faster (Intel's crc_pcl and Mark Adler's crc32c.c do the same).
// Every MCES packet is checked twice, so on loopback this was the largest
// single cost of a bulk transfer (docs/mces.md, "Performance").
struct Shift {
    std::size_t block;
    std::array<std::array<std::uint32_t, 256>, 4> t;
    std::uint32_t apply(std::uint32_t c) const noexcept {
        return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
    }
};

__attribute__((target("sse4.2")))
std::uint32_t zeros_sse42(std::uint32_t c, std::size_t n) noexcept {
    std::uint64_t x = c;
    for (std::size_t i = 0; i < n / 8; ++i) x = _mm_crc32_u64(x, 0);
    return static_cast<std::uint32_t>(x);
}

__attribute__((target("sse4.2")))
Shift make_shift(std::size_t block) noexcept {
    Shift s{block, {}};
    for (std::uint32_t k = 0; k < 4; ++k)
        for (std::uint32_t b = 0; b < 256; ++b) s.t[k][b] = zeros_sse42(b << (8 * k), block);
    return s;
}

constexpr std::size_t kLongBlock = 2048;   // 3 x 2 KiB per step for large packets
constexpr std::size_t kShortBlock = 128;   // 3 x 128 B: most of a 1200-byte packet

const Shift& long_shift() noexcept {
    static const Shift s = make_shift(kLongBlock);
    return s;
}
const Shift& short_shift() noexcept {
    static const Shift s = make_shift(kShortBlock);
    return s;
}

// Three lanes of sh.block bytes each, while n allows; c is the raw register.
__attribute__((target("sse4.2")))
std::uint64_t crc_3way(const std::uint8_t*& p, std::size_t& n, std::uint64_t c, const Shift& sh) noexcept {
    const std::size_t words = sh.block / 8;
    while (n >= 3 * sh.block) {
        std::uint64_t c1 = 0, c2 = 0;
        const std::uint8_t* p1 = p + sh.block;
        const std::uint8_t* p2 = p1 + sh.block;
        for (std::size_t i = 0; i < words; ++i) {
            std::uint64_t w0, w1, w2;
            std::memcpy(&w0, p + 8 * i, 8);
            std::memcpy(&w1, p1 + 8 * i, 8);
            std::memcpy(&w2, p2 + 8 * i, 8);
            c = _mm_crc32_u64(c, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
        }
        c = sh.apply(static_cast<std::uint32_t>(c)) ^ c1;
        c = sh.apply(static_cast<std::uint32_t>(c)) ^ c2;
        p += 3 * sh.block;
        n -= 3 * sh.block;
    }
    return c;
}

// The last bytes, 8 then 1 at a time; `c` is the running (inverted) CRC.
__attribute__((target("sse4.2")))
std::uint32_t crc_tail(std::uint64_t c, const std::uint8_t* p, std::size_t n) noexcept {
    while (n >= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    auto c32 = static_cast<std::uint32_t>(c);
    while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

__attribute__((target("sse4.2")))
std::uint32_t crc32c_sse42(const std::uint8_t* p, std::size_t n, std::uint32_t crc) noexcept {
    std::uint64_t c = ~crc;
    if (n >= 3 * kLongBlock) c = crc_3way(p, n, c, long_shift());
    if (n >= 3 * kShortBlock) c = crc_3way(p, n, c, short_shift());
    return crc_tail(c, p, n);
}


// Folding with carry-less multiplication (Intel's "Fast CRC Computation for
// Generic Polynomials Using PCLMULQDQ"), 4 x 512 bits per step with the
// AVX-512 form (VPCLMULQDQ): several times the crc32 instruction's rate on
// packets of a few KiB and more. A 128-bit block A (bytes 0-7: the 64
// higher-degree coefficients A_H, in the CRC's reflected bit order; bytes
// 8-15: A_L) moved D bits later is A_H * x^(64+D) + A_L * x^D, congruent mod
// P to A_H * k_H + A_L * k_L with 32-bit constants; the CRC depends on the
// message mod P only, so the folded value stands in for everything before.
// The last 128 bits go through the crc32 instruction (from a zero register),
// which does the final reduction.

// x^e mod P in normal bit order (bit i: x^i), P = 0x1EDC6F41 with x^32.
constexpr std::uint64_t xpow_mod(unsigned e) {
    std::uint64_t v = 1;
    for (unsigned i = 0; i < e; ++i) {
        v <<= 1;
        if (v >> 32) v ^= 0x11EDC6F41ull;
    }
    return v;
}
// The constant for "times x^e" as a reflected 64-bit clmul operand. A
// carry-less product of two reflected operands comes out multiplied by x
// once more, hence x^(e-1).
constexpr std::uint64_t fold_k(unsigned e) {
    const std::uint64_t r = xpow_mod(e - 1);
    std::uint64_t k = 0;
    for (unsigned i = 0; i < 32; ++i)
        if ((r >> i) & 1) k |= std::uint64_t{1} << (63 - i);
    return k;
}
// (low lane: k_H = x^(D+64), high lane: k_L = x^D) for a fold by D bits.
struct FoldK {
    std::uint64_t h, l;
};
constexpr FoldK fold_by(unsigned d) { return {fold_k(d + 64), fold_k(d)}; }
constexpr FoldK kFold128 = fold_by(128), kFold256 = fold_by(256), kFold384 = fold_by(384),
                kFold512 = fold_by(512), kFold2048 = fold_by(2048);

#define GS_CLMUL_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,vpclmulqdq,pclmul,sse4.2")))

GS_CLMUL_TARGET inline __m128i fold128(__m128i a, FoldK k) noexcept {
    const __m128i kk = _mm_set_epi64x(static_cast<long long>(k.l), static_cast<long long>(k.h));
    return _mm_xor_si128(_mm_clmulepi64_si128(a, kk, 0x00), _mm_clmulepi64_si128(a, kk, 0x11));
}

GS_CLMUL_TARGET inline __m512i fold512(__m512i a, __m512i kk, __m512i next) noexcept {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, kk, 0x00), _mm512_clmulepi64_epi128(a, kk, 0x11),
                                     next, 0x96);   // a ^ b ^ c
}

GS_CLMUL_TARGET inline __m512i broadcast_k(FoldK k) noexcept {
    const auto h = static_cast<long long>(k.h), l = static_cast<long long>(k.l);
    return _mm512_set_epi64(l, h, l, h, l, h, l, h);
}

// n >= 256.
GS_CLMUL_TARGET std::uint32_t crc32c_vpclmul(const std::uint8_t* p, std::size_t n, std::uint32_t crc) noexcept {
    __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64), x2 = _mm512_loadu_si512(p + 128),
            x3 = _mm512_loadu_si512(p + 192);
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(~crc))));
    p += 256;
    n -= 256;
    const __m512i k2048 = broadcast_k(kFold2048);
    while (n >= 256) {
        x0 = fold512(x0, k2048, _mm512_loadu_si512(p));
        x1 = fold512(x1, k2048, _mm512_loadu_si512(p + 64));
        x2 = fold512(x2, k2048, _mm512_loadu_si512(p + 128));
        x3 = fold512(x3, k2048, _mm512_loadu_si512(p + 192));
        p += 256;
        n -= 256;
    }
    const __m512i k512 = broadcast_k(kFold512);
    x1 = fold512(x0, k512, x1);
    x2 = fold512(x1, k512, x2);
    x3 = fold512(x2, k512, x3);
    while (n >= 64) {
        x3 = fold512(x3, k512, _mm512_loadu_si512(p));
        p += 64;
        n -= 64;
    }
    // The four 128-bit lanes of x3 sit 0, 16, 32 and 48 bytes apart.
    alignas(64) std::uint8_t lanes[64];
    _mm512_store_si512(lanes, x3);
    auto lane = [&](int i) { return _mm_load_si128(reinterpret_cast<const __m128i*>(lanes + 16 * i)); };
    __m128i a = lane(3);
    a = _mm_xor_si128(a, fold128(lane(0), kFold384));
    a = _mm_xor_si128(a, fold128(lane(1), kFold256));
    a = _mm_xor_si128(a, fold128(lane(2), kFold128));
    while (n >= 16) {
        a = _mm_xor_si128(fold128(a, kFold128), _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        p += 16;
        n -= 16;
    }
    std::uint64_t c = _mm_crc32_u64(0, static_cast<std::uint64_t>(_mm_cvtsi128_si64(a)));
    c = _mm_crc32_u64(c, static_cast<std::uint64_t>(_mm_extract_epi64(a, 1)));
    return crc_tail(c, p, n);
}
#undef GS_CLMUL_TARGET
#endif

}  // namespace

std::uint32_t crc32c_table(std::span<const std::uint8_t> bytes, std::uint32_t crc) noexcept {
    const std::uint8_t* p = bytes.data();
    std::size_t n = bytes.size();
    std::uint32_t c = ~crc;
    while (n >= 8) {
        // little-endian load of the low word, as the reflected CRC consumes bytes
        const std::uint32_t lo = c ^ (std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 |
                                      std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24);
        c = kTables[7][lo & 0xff] ^ kTables[6][(lo >> 8) & 0xff] ^
            kTables[5][(lo >> 16) & 0xff] ^ kTables[4][lo >> 24] ^ kTables[3][p[4]] ^
            kTables[2][p[5]] ^ kTables[1][p[6]] ^ kTables[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xff];
    return ~c;
}

bool crc32c_hw_available() noexcept {
#if defined(__x86_64__)
    static const bool has = __builtin_cpu_supports("sse4.2");
    return has;
#else
    return false;
#endif
}

std::uint32_t crc32c_hw(std::span<const std::uint8_t> bytes, std::uint32_t crc) noexcept {
#if defined(__x86_64__)
    return crc32c_sse42(bytes.data(), bytes.size(), crc);
#else
    return crc32c_table(bytes, crc);
#endif
}

bool crc32c_clmul_available() noexcept {
#if defined(__x86_64__)
    static const bool has = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("avx512f") &&
                            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul");
    return has;
#else
    return false;
#endif
}

std::uint32_t crc32c_clmul(std::span<const std::uint8_t> bytes, std::uint32_t crc) noexcept {
#if defined(__x86_64__)
    if (bytes.size() >= kClmulMin) return crc32c_vpclmul(bytes.data(), bytes.size(), crc);
#endif
    return crc32c_hw(bytes, crc);
}

std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t crc) noexcept {
    if (bytes.size() >= kClmulMin && crc32c_clmul_available()) return crc32c_clmul(bytes, crc);
    if (crc32c_hw_available()) return crc32c_hw(bytes, crc);
    return crc32c_table(bytes, crc);
}

}  // namespace gs::mces::wire
