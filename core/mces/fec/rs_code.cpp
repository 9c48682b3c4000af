#include "core/mces/fec/rs_code.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/mces/fec/gf256.h"

namespace gs::mces::fec {
namespace {

struct Coefficients {
    std::uint8_t c[kMaxR][kMaxK];
};

Coefficients build() noexcept {
    Coefficients t{};
    for (unsigned j = 0; j < kMaxK; ++j) {
        const auto y = static_cast<std::uint8_t>(j);
        // 1 / C[0][j] = x_0 + y_j: the column's scale factor
        const auto scale = static_cast<std::uint8_t>(255u ^ y);
        for (unsigned i = 0; i < kMaxR; ++i) {
            const auto x = static_cast<std::uint8_t>(255u - i);
            t.c[i][j] = gf::mul(gf::inv(static_cast<std::uint8_t>(x ^ y)), scale);
        }
    }
    return t;
}

const Coefficients& table() noexcept {
    static const Coefficients t = build();   // once, thread-safe
    return t;
}

}  // namespace

std::uint8_t coefficient(unsigned i, unsigned j) noexcept {
    if (i >= kMaxR || j >= kMaxK) return 0;
    return table().c[i][j];
}

int invert(std::uint8_t* a, unsigned m, std::uint8_t* out) noexcept {
    if (m == 0 || m > kMaxR) return -EINVAL;
    std::memset(out, 0, std::size_t{m} * m);
    for (unsigned i = 0; i < m; ++i) out[i * m + i] = 1;
    // Gauss-Jordan with row pivoting; the same row operations on `out`.
    for (unsigned col = 0; col < m; ++col) {
        unsigned piv = col;
        while (piv < m && a[piv * m + col] == 0) ++piv;
        if (piv == m) return -EINVAL;
        if (piv != col) {
            for (unsigned x = 0; x < m; ++x) {
                std::swap(a[piv * m + x], a[col * m + x]);
                std::swap(out[piv * m + x], out[col * m + x]);
            }
        }
        const std::uint8_t f = gf::inv(a[col * m + col]);
        for (unsigned x = 0; x < m; ++x) {
            a[col * m + x] = gf::mul(a[col * m + x], f);
            out[col * m + x] = gf::mul(out[col * m + x], f);
        }
        for (unsigned row = 0; row < m; ++row) {
            const std::uint8_t g = a[row * m + col];
            if (row == col || g == 0) continue;
            for (unsigned x = 0; x < m; ++x) {
                a[row * m + x] ^= gf::mul(g, a[col * m + x]);
                out[row * m + x] ^= gf::mul(g, out[col * m + x]);
            }
        }
    }
    return 0;
}

}  // namespace gs::mces::fec
