#include "core/overlay/dt/geometry.h"

#include <algorithm>
#include <array>

namespace gs::overlay::dt {

namespace {

using i128 = __int128;
using u128 = unsigned __int128;
using u64 = std::uint64_t;

// A 256-bit two's complement accumulator: enough for the in-circle
// determinant of int32 points (terms below 2^131).
struct Wide {
    std::array<u64, 4> w{};

    static Wide from_product(i128 a, i128 b) noexcept {
        bool neg = (a < 0) != (b < 0);
        u128 ma = a < 0 ? -static_cast<u128>(a) : static_cast<u128>(a);
        u128 mb = b < 0 ? -static_cast<u128>(b) : static_cast<u128>(b);
        u64 a0 = static_cast<u64>(ma), a1 = static_cast<u64>(ma >> 64);
        u64 b0 = static_cast<u64>(mb), b1 = static_cast<u64>(mb >> 64);
        Wide r;
        u128 p00 = static_cast<u128>(a0) * b0;
        u128 p01 = static_cast<u128>(a0) * b1;
        u128 p10 = static_cast<u128>(a1) * b0;
        u128 p11 = static_cast<u128>(a1) * b1;
        r.w[0] = static_cast<u64>(p00);
        u128 mid = (p00 >> 64) + static_cast<u64>(p01) + static_cast<u64>(p10);
        r.w[1] = static_cast<u64>(mid);
        u128 hi = (mid >> 64) + (p01 >> 64) + (p10 >> 64) + static_cast<u64>(p11);
        r.w[2] = static_cast<u64>(hi);
        r.w[3] = static_cast<u64>((hi >> 64) + (p11 >> 64));
        if (neg) r.negate();
        return r;
    }
    void negate() noexcept {
        u64 carry = 1;
        for (auto& x : w) {
            x = ~x + carry;
            carry = (carry && x == 0) ? 1 : 0;
        }
    }
    void add(const Wide& o) noexcept {
        u64 carry = 0;
        for (std::size_t i = 0; i < 4; ++i) {
            u128 s = static_cast<u128>(w[i]) + o.w[i] + carry;
            w[i] = static_cast<u64>(s);
            carry = static_cast<u64>(s >> 64);
        }
    }
    int sign() const noexcept {
        if (w[3] >> 63) return -1;
        return (w[0] | w[1] | w[2] | w[3]) ? 1 : 0;
    }
};

int sign128(i128 v) noexcept { return v > 0 ? 1 : (v < 0 ? -1 : 0); }

// The unperturbed in-circle determinant's sign.
int incircle_exact(Point a, Point b, Point c, Point d) noexcept {
    const i128 adx = i128{a.x} - d.x, ady = i128{a.y} - d.y;
    const i128 bdx = i128{b.x} - d.x, bdy = i128{b.y} - d.y;
    const i128 cdx = i128{c.x} - d.x, cdy = i128{c.y} - d.y;
    const i128 al = adx * adx + ady * ady;
    const i128 bl = bdx * bdx + bdy * bdy;
    const i128 cl = cdx * cdx + cdy * cdy;
    // Differences below 2^30 keep every term below 2^122: plain 128 bits.
    constexpr i128 kSmall = i128{1} << 30;
    auto small = [&](i128 v) { return v < kSmall && v > -kSmall; };
    const i128 m1 = bdy * cl - bl * cdy;   // < 2^98 whatever the inputs
    const i128 m2 = bdx * cl - bl * cdx;
    const i128 m3 = bdx * cdy - bdy * cdx;
    if (small(adx) && small(ady) && small(bdx) && small(bdy) && small(cdx) && small(cdy))
        return sign128(adx * m1 - ady * m2 + al * m3);
    Wide acc = Wide::from_product(adx, m1);
    Wide t2 = Wide::from_product(ady, m2);
    t2.negate();
    acc.add(t2);
    acc.add(Wide::from_product(al, m3));
    return acc.sign();
}

}  // namespace

int orient(Point a, Point b, Point c) noexcept {
    const i128 v = (i128{b.x} - a.x) * (i128{c.y} - a.y) - (i128{b.y} - a.y) * (i128{c.x} - a.x);
    return sign128(v);
}

int incircle(Point a, Point b, Point c, Point d) noexcept {
    const int s = incircle_exact(a, b, c, d);
    if (s != 0) return s;
    // Tie: the determinant of the perturbed lifting is
    //   D + eps_a*orient(b,c,d) - eps_b*orient(a,c,d) + eps_c*orient(a,b,d) - eps_d*orient(a,b,c)
    // and the eps of the lexicographically smallest point dominates; take the
    // first non-zero cofactor in that order.
    struct Term {
        Point p;
        int cof;
    };
    std::array<Term, 4> t = {{{a, orient(b, c, d)},
                              {b, -orient(a, c, d)},
                              {c, orient(a, b, d)},
                              {d, -orient(a, b, c)}}};
    std::sort(t.begin(), t.end(), [](const Term& l, const Term& r) { return l.p < r.p; });
    for (const auto& x : t)
        if (x.cof != 0) return x.cof;
    return 0;
}

unsigned __int128 distance2(Point a, Point b) noexcept {
    const i128 dx = i128{a.x} - b.x, dy = i128{a.y} - b.y;
    return static_cast<u128>(dx * dx) + static_cast<u128>(dy * dy);
}

int compare_distance(Point r, Point a, Point b) noexcept {
    const u128 da = distance2(r, a), db = distance2(r, b);
    return da < db ? -1 : (da > db ? 1 : 0);
}

bool closer(Point r, Point a, Point b) noexcept {
    const int c = compare_distance(r, a, b);
    return c != 0 ? c < 0 : a < b;
}

std::vector<std::size_t> delaunay_star(std::span<const Point> pts, std::size_t u) {
    std::vector<std::size_t> out;
    const std::size_t n = pts.size();
    if (n < 2 || u >= n) return out;
    const Point pu = pts[u];
    // The nearest point is a Delaunay neighbour: the circle on the segment as
    // diameter holds no other point, not even on its boundary.
    std::size_t v0 = n;
    for (std::size_t i = 0; i < n; ++i) {
        if (i == u) continue;
        if (v0 == n || closer(pu, pts[i], pts[v0])) v0 = i;
    }
    // Counter-clockwise: the triangle left of u->cur is (u, cur, w) with w
    // the left point whose circle through u and cur holds no other left point.
    std::vector<std::size_t> ccw{v0};
    bool closed = false;
    std::size_t cur = v0;
    for (std::size_t steps = 0; steps < n; ++steps) {
        std::size_t best = n;
        for (std::size_t i = 0; i < n; ++i) {
            if (i == u || i == cur || orient(pu, pts[cur], pts[i]) <= 0) continue;
            if (best == n || incircle(pu, pts[cur], pts[best], pts[i]) > 0) best = i;
        }
        if (best == n) break;               // u->cur is a hull edge
        if (best == v0) {
            closed = true;                  // around: u is interior
            break;
        }
        ccw.push_back(best);
        cur = best;
    }
    if (closed) return ccw;
    // Clockwise from v0: the triangle right of u->cur is (u, w, cur).
    std::vector<std::size_t> cw;
    cur = v0;
    for (std::size_t steps = 0; steps < n; ++steps) {
        std::size_t best = n;
        for (std::size_t i = 0; i < n; ++i) {
            if (i == u || i == cur || orient(pu, pts[cur], pts[i]) >= 0) continue;
            if (best == n || incircle(pu, pts[best], pts[cur], pts[i]) > 0) best = i;
        }
        if (best == n) break;
        cw.push_back(best);
        cur = best;
    }
    if (ccw.size() == 1 && cw.empty()) {
        // Everything is on the line through u and v0: u's other neighbour is
        // the nearest point on the far side, if any.
        std::size_t opp = n;
        for (std::size_t i = 0; i < n; ++i) {
            if (i == u || orient(pu, pts[v0], pts[i]) != 0) continue;
            const i128 dot = (i128{pts[i].x} - pu.x) * (i128{pts[v0].x} - pu.x) +
                             (i128{pts[i].y} - pu.y) * (i128{pts[v0].y} - pu.y);
            if (dot >= 0) continue;
            if (opp == n || closer(pu, pts[i], pts[opp])) opp = i;
        }
        if (opp != n) ccw.push_back(opp);
        return ccw;
    }
    out.assign(cw.rbegin(), cw.rend());
    out.insert(out.end(), ccw.begin(), ccw.end());
    return out;
}

std::vector<std::pair<std::size_t, std::size_t>> delaunay_edges(std::span<const Point> pts) {
    std::vector<std::pair<std::size_t, std::size_t>> edges;
    for (std::size_t u = 0; u < pts.size(); ++u)
        for (std::size_t v : delaunay_star(pts, u))
            if (u < v) edges.emplace_back(u, v);
    std::sort(edges.begin(), edges.end());
    return edges;
}

}  // namespace gs::overlay::dt
