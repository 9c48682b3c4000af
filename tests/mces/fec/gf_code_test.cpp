// GF(2^8) arithmetic, the region multiply-add (SIMD against the portable
// loop) and the Cauchy code's matrices.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "core/mces/fec/gf256.h"
#include "core/mces/fec/rs_code.h"

using namespace gs::mces::fec;

namespace {

// Carry-less multiplication modulo 0x11d, bit by bit: the reference.
std::uint8_t slow_mul(std::uint8_t a, std::uint8_t b) {
    unsigned x = a, y = b, p = 0;
    while (y) {
        if (y & 1) p ^= x;
        y >>= 1;
        x <<= 1;
        if (x & 0x100) x ^= 0x11d;
    }
    return static_cast<std::uint8_t>(p);
}

}  // namespace

TEST_CASE("gf: the tables are GF(2^8) with polynomial 0x11d") {
    for (unsigned a = 0; a < 256; ++a)
        for (unsigned b = 0; b < 256; ++b)
            REQUIRE(gf::mul(static_cast<std::uint8_t>(a), static_cast<std::uint8_t>(b)) ==
                    slow_mul(static_cast<std::uint8_t>(a), static_cast<std::uint8_t>(b)));
    CHECK(gf::inv(0) == 0);
    for (unsigned a = 1; a < 256; ++a) REQUIRE(gf::mul(static_cast<std::uint8_t>(a), gf::inv(static_cast<std::uint8_t>(a))) == 1);
    // 2 generates the multiplicative group: its powers take all 255 values
    std::vector<bool> seen(256, false);
    std::uint8_t x = 1;
    for (int i = 0; i < 255; ++i) {
        CHECK_FALSE(seen[x]);
        seen[x] = true;
        x = gf::mul(x, 2);
    }
    CHECK(x == 1);
}

TEST_CASE("gf: mul_add gives the same bytes on the SIMD and the portable path") {
    std::mt19937_64 rng(7);
    MESSAGE("AVX2 path on this CPU: " << gf::simd_available());
    for (int trial = 0; trial < 400; ++trial) {
        const std::size_t n = rng() % 300;
        const std::size_t off = rng() % 7;   // unaligned starts
        const auto c = static_cast<std::uint8_t>(trial < 256 ? trial : rng());
        std::vector<std::uint8_t> src(n + off), a(n + off), b;
        for (auto& v : src) v = static_cast<std::uint8_t>(rng());
        for (auto& v : a) v = static_cast<std::uint8_t>(rng());
        b = a;
        gf::mul_add(a.data() + off, src.data() + off, n, c);
        gf::mul_add_portable(b.data() + off, src.data() + off, n, c);
        REQUIRE(a == b);
        // and both are dst ^= c * src: spot-check bytes against the reference
        for (std::size_t i = 0; i < n; i += 37) {
            std::uint8_t one = 0;
            gf::mul_add(&one, src.data() + off + i, 1, c);
            REQUIRE(one == slow_mul(c, src[off + i]));
        }
    }
}

TEST_CASE("rs: coefficients are non-zero, row 0 is the XOR parity, out of range is 0") {
    for (unsigned j = 0; j < kMaxK; ++j) CHECK(coefficient(0, j) == 1);
    for (unsigned i = 0; i < kMaxR; ++i)
        for (unsigned j = 0; j < kMaxK; ++j) REQUIRE(coefficient(i, j) != 0);
    CHECK(coefficient(kMaxR, 0) == 0);
    CHECK(coefficient(0, kMaxK) == 0);
}

TEST_CASE("rs: invert gives the inverse and refuses a singular matrix") {
    std::mt19937_64 rng(11);
    for (unsigned m = 1; m <= 12; ++m) {
        std::vector<std::uint8_t> a(m * m), keep, inv(m * m);
        // a random Cauchy submatrix: distinct rows and columns
        std::vector<unsigned> rows(kMaxR), cols(kMaxK);
        for (unsigned i = 0; i < kMaxR; ++i) rows[i] = i;
        for (unsigned j = 0; j < kMaxK; ++j) cols[j] = j;
        std::shuffle(rows.begin(), rows.end(), rng);
        std::shuffle(cols.begin(), cols.end(), rng);
        for (unsigned x = 0; x < m; ++x)
            for (unsigned y = 0; y < m; ++y) a[x * m + y] = coefficient(rows[x], cols[y]);
        keep = a;
        REQUIRE(invert(a.data(), m, inv.data()) == 0);
        for (unsigned x = 0; x < m; ++x)
            for (unsigned y = 0; y < m; ++y) {
                std::uint8_t s = 0;
                for (unsigned z = 0; z < m; ++z) s ^= gf::mul(keep[x * m + z], inv[z * m + y]);
                REQUIRE(s == (x == y ? 1 : 0));
            }
    }
    std::uint8_t sing[4] = {1, 2, 1, 2}, out[4];
    CHECK(invert(sing, 2, out) == -EINVAL);
    CHECK(invert(sing, 0, out) == -EINVAL);
    std::vector<std::uint8_t> big((kMaxR + 1) * (kMaxR + 1)), bigo(big.size());
    CHECK(invert(big.data(), kMaxR + 1, bigo.data()) == -EINVAL);
}

TEST_CASE("rs: every square submatrix of rows 0-7 x columns 8-15 is invertible (MDS)") {
    // Every row subset of 8 rows against every column subset of the same size
    // of 8 columns: sum over m of C(8, m)^2 = C(16, 8) - 1 = 12869 matrices.
    const unsigned R = 8, K = 8;
    std::size_t checked = 0;
    for (unsigned rm = 1; rm < (1u << R); ++rm) {
        const unsigned m = static_cast<unsigned>(__builtin_popcount(rm));
        for (unsigned cm = 1; cm < (1u << K); ++cm) {
            if (static_cast<unsigned>(__builtin_popcount(cm)) != m) continue;
            std::uint8_t a[64], inv[64];
            unsigned x = 0;
            for (unsigned i = 0; i < R; ++i) {
                if (!(rm >> i & 1)) continue;
                unsigned y = 0;
                for (unsigned j = 0; j < K; ++j)
                    if (cm >> j & 1) a[x * m + y++] = coefficient(i, j + 8);
                ++x;
            }
            REQUIRE(invert(a, m, inv) == 0);
            ++checked;
        }
    }
    CHECK(checked == 12869);
}
