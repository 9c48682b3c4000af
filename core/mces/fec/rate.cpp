#include "core/mces/fec/rate.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/mces/fec/rs_code.h"
#include "core/mces/fec/repair_frame.h"

namespace gs::mces::fec {
namespace {

constexpr unsigned kMaxN = kMaxK + kMaxR;
using Dist = std::array<double, kMaxN + 1>;   // P(count = s), s in [0, n]; n holds "n or more"

double clean_loss(double x) noexcept { return std::isnan(x) ? 0.0 : std::clamp(x, 0.0, 1.0); }
double clean_burst(double x) noexcept { return std::isnan(x) ? 1.0 : std::clamp(x, 1.0, 1e6); }

// out = a (+) b, the distribution of the sum, capped at n.
void convolve(const Dist& a, const Dist& b, unsigned n, Dist& out) noexcept {
    Dist t{};
    for (unsigned i = 0; i <= n; ++i) {
        if (a[i] == 0) continue;
        for (unsigned j = 0; j <= n; ++j) t[std::min(i + j, n)] += a[i] * b[j];
    }
    out = t;
}

}  // namespace

double residual_loss(unsigned k, unsigned r, unsigned depth, const LossModel& m) noexcept {
    k = std::clamp(k, 1u, kMaxK);
    r = std::min(r, kMaxR);
    depth = std::clamp(depth, 1u, kMaxStride);
    const double p = clean_loss(m.loss);
    const double burst = clean_burst(m.mean_burst);
    if (p == 0.0) return 0.0;
    if (r == 0) return p;
    if (p == 1.0) return 1.0;
    const unsigned n = k + r;
    const double q = p / burst;          // a run starts at a packet
    const double c = 1.0 - 1.0 / burst;  // P(L > m) = c^m

    // Y: erasures in one block slot from the runs starting in the D packets
    // up to it (offsets o = 0..D-1 before it).
    Dist y{};
    y[0] = 1.0;
    for (unsigned o = 0; o < depth; ++o) {
        Dist x{};
        double placed = 0;
        for (unsigned e = 1; e <= n; ++e) {
            // P(ceil((L - o) / D) = e) = P(L > o + (e-1) D) - P(L > o + e D); the last takes the tail
            const double hi = std::pow(c, o + (e - 1.0) * depth);
            const double lo = e == n ? 0.0 : std::pow(c, o + static_cast<double>(e) * depth);
            x[e] = q * (hi - lo);
            placed += x[e];
        }
        x[0] = 1.0 - placed;
        convolve(y, x, n, y);
    }
    // S: the sum over the block's n slots.
    Dist s{};
    s[0] = 1.0;
    for (unsigned i = 0; i < n; ++i) convolve(s, y, n, s);
    double residual = 0;
    for (unsigned e = r + 1; e <= n; ++e) residual += s[e] * e / n;
    return std::clamp(residual, 0.0, 1.0);
}

unsigned choose_repair(unsigned k, unsigned depth, const LossModel& m, double target, unsigned max_r) noexcept {
    max_r = std::min(max_r, kMaxR);
    for (unsigned r = 0; r < max_r; ++r)
        if (residual_loss(k, r, depth, m) <= target) return r;
    return max_r;
}

unsigned choose_depth(const LossModel& m, unsigned max_depth) noexcept {
    const double burst = clean_burst(m.mean_burst);
    max_depth = std::clamp(max_depth, 1u, kMaxStride);
    const double c = 1.0 - 1.0 / burst;
    unsigned d = 1;
    while (d < max_depth && std::pow(c, d) > 0.1) ++d;
    return d;
}

}  // namespace gs::mces::fec
