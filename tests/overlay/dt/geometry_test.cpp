// Exact predicates, the Delaunay star/triangulation against brute force, and
// greedy trees on a reference triangulation.
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "core/overlay/dt/geometry.h"

using namespace gs::overlay::dt;
using Edge = std::pair<std::size_t, std::size_t>;

namespace {

// O(n^4): every triangle whose (perturbed) circumcircle holds no other point.
std::vector<Edge> brute_force_edges(const std::vector<Point>& p) {
    const std::size_t n = p.size();
    std::set<Edge> edges;
    bool any = false;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j)
            for (std::size_t k = j + 1; k < n; ++k) {
                int o = orient(p[i], p[j], p[k]);
                if (o == 0) continue;
                std::size_t a = i, b = o > 0 ? j : k, c = o > 0 ? k : j;   // counter-clockwise
                bool empty = true;
                for (std::size_t l = 0; l < n && empty; ++l)
                    if (l != i && l != j && l != k && incircle(p[a], p[b], p[c], p[l]) >= 0) empty = false;
                if (!empty) continue;
                any = true;
                edges.insert({i, j});
                edges.insert({i, k});
                edges.insert({j, k});
            }
    if (!any && n >= 2) {
        // All collinear: the path in lexicographic order.
        std::vector<std::size_t> idx(n);
        for (std::size_t i = 0; i < n; ++i) idx[i] = i;
        std::sort(idx.begin(), idx.end(), [&](auto l, auto r) { return p[l] < p[r]; });
        for (std::size_t i = 0; i + 1 < n; ++i)
            edges.insert({std::min(idx[i], idx[i + 1]), std::max(idx[i], idx[i + 1])});
    }
    return {edges.begin(), edges.end()};
}

std::vector<Point> random_distinct(std::mt19937_64& rng, std::size_t n, int lo, int hi) {
    std::uniform_int_distribution<int> d(lo, hi);
    std::set<Point> s;
    while (s.size() < n) s.insert(Point{d(rng), d(rng)});
    std::vector<Point> v(s.begin(), s.end());
    std::shuffle(v.begin(), v.end(), rng);
    return v;
}

std::vector<std::vector<std::size_t>> adjacency(std::size_t n, const std::vector<Edge>& edges) {
    std::vector<std::vector<std::size_t>> adj(n);
    for (auto [a, b] : edges) {
        adj[a].push_back(b);
        adj[b].push_back(a);
    }
    return adj;
}

}  // namespace

TEST_CASE("pack and unpack are inverse, kNoAddress is (-1, -1)") {
    for (Point p : {Point{0, 0}, Point{-5, 7}, Point{INT32_MIN, INT32_MAX}, Point{INT32_MAX, -1}}) {
        CHECK(unpack(pack(p)) == p);
    }
    CHECK(pack(Point{-1, -1}) == gs::overlay::kNoAddress);
    CHECK(pack(Point{1, 2}) == 0x0000000100000002ull);
}

TEST_CASE("orient: turns, collinear, extreme coordinates") {
    CHECK(orient({0, 0}, {1, 0}, {0, 1}) == 1);
    CHECK(orient({0, 0}, {0, 1}, {1, 0}) == -1);
    CHECK(orient({0, 0}, {1, 1}, {2, 2}) == 0);
    CHECK(orient({0, 0}, {1, 1}, {1, 1}) == 0);
    const Point lo{INT32_MIN, INT32_MIN}, hi{INT32_MAX, INT32_MAX};
    CHECK(orient(lo, hi, {0, 0}) == 0);    // on the diagonal
    CHECK(orient(lo, hi, {-1, 0}) == 1);   // one unit off it, either side
    CHECK(orient(lo, hi, {0, -1}) == -1);
    // A difference of one unit at full scale is seen.
    CHECK(orient({INT32_MIN, 0}, {INT32_MAX, 0}, {0, 1}) == 1);
    CHECK(orient({INT32_MIN, 0}, {INT32_MAX, 1}, {INT32_MAX - 1, 1}) == 1);
}

TEST_CASE("incircle: inside, outside, and co-circular ties broken by the perturbation") {
    const Point a{25, 0}, b{0, 25}, c{-25, 0};   // counter-clockwise on the circle of radius 25
    CHECK(incircle(a, b, c, {0, 0}) == 1);
    CHECK(incircle(a, b, c, {0, -24}) == 1);
    CHECK(incircle(a, b, c, {0, -26}) == -1);
    CHECK(incircle(a, c, b, {0, 0}) == -1);   // clockwise triangle: the sign flips
    // On the circle: the lexicographically smallest of the four decides; it
    // counts as outside. (-25,0) = c is the smallest here: D' sign is that of
    // c's cofactor orient(a, b, d) for d = (0,-25): a,b,d turn ccw -> +1.
    CHECK(incircle(a, b, c, {0, -25}) == 1);
    // The tie-break is a property of the four points, whatever their order:
    // for co-circular points exactly one of the two diagonals of the
    // quadrilateral is Delaunay.
    const Point q[4] = {{25, 0}, {7, 24}, {-20, 15}, {0, -25}};   // ccw on the circle
    const bool diag02 = incircle(q[0], q[1], q[2], q[3]) < 0 && incircle(q[0], q[2], q[3], q[1]) < 0;
    const bool diag13 = incircle(q[1], q[2], q[3], q[0]) < 0 && incircle(q[1], q[3], q[0], q[2]) < 0;
    CHECK(diag02 != diag13);
    // Cyclic rotations of a ccw triangle give the same answer.
    for (Point d : {Point{0, -25}, Point{-15, -20}, Point{24, -7}, Point{3, 4}, Point{30, 30}}) {
        CHECK(incircle(a, b, c, d) == incircle(b, c, a, d));
        CHECK(incircle(a, b, c, d) == incircle(c, a, b, d));
        CHECK(incircle(a, b, c, d) != 0);
    }
    // Four collinear points: the only zero.
    CHECK(incircle({0, 0}, {1, 1}, {2, 2}, {3, 3}) == 0);
}

TEST_CASE("incircle: the 256-bit path agrees with the 128-bit path (scaling keeps the sign)") {
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<int> d(-1000, 1000);
    int checked = 0;
    for (int it = 0; it < 20000; ++it) {
        Point p[4];
        for (auto& x : p) x = Point{d(rng), d(rng)};
        if (orient(p[0], p[1], p[2]) == 0) continue;
        // Scale by k: every difference grows above 2^30, the determinant
        // scales by k^4 > 0, orientations and lexicographic order are kept.
        const int k = (1 << 21) - 3;
        Point s[4];
        for (int i = 0; i < 4; ++i) s[i] = Point{p[i].x * k, p[i].y * k};
        const int small = incircle(p[0], p[1], p[2], p[3]);
        const int big = incircle(s[0], s[1], s[2], s[3]);
        CHECK(small == big);
        if (incircle(p[0], p[1], p[2], p[3]) != 0 && small != 0) ++checked;
    }
    CHECK(checked > 10000);
    // Exactly co-circular at full scale: (7,24) family of radius 25, times 2^26.
    const int k = 1 << 26;
    const Point a{25 * k, 0}, b{0, 25 * k}, c{-25 * k, 0};
    CHECK(incircle(a, b, c, {7 * k, -24 * k}) == incircle(Point{25, 0}, {0, 25}, {-25, 0}, {7, -24}));
    CHECK(incircle(a, b, c, {7 * k, -24 * k + 1}) == 1);   // one unit inside
    CHECK(incircle(a, b, c, {7 * k, -24 * k - 1}) == -1);  // one unit outside
}

TEST_CASE("distance order: exact and total") {
    CHECK(compare_distance({0, 0}, {3, 4}, {5, 0}) == 0);
    CHECK(closer({0, 0}, {3, 4}, {5, 0}));    // tie: lexicographically smaller wins
    CHECK_FALSE(closer({0, 0}, {5, 0}, {3, 4}));
    CHECK(closer({INT32_MIN, INT32_MIN}, {INT32_MIN, INT32_MIN + 1}, {INT32_MAX, INT32_MAX}));
    CHECK(distance2({INT32_MIN, INT32_MIN}, {INT32_MAX, INT32_MAX}) ==
          2 * static_cast<unsigned __int128>(0xffffffffull) * 0xffffffffull);
}

TEST_CASE("Delaunay stars equal brute force on random sets with many degeneracies") {
    std::mt19937_64 rng(42);
    int sets = 0;
    for (int it = 0; it < 300; ++it) {
        const std::size_t n = 3 + it % 22;
        // A small box: collinear triples and co-circular quadruples abound.
        const int box = it % 3 == 0 ? 6 : (it % 3 == 1 ? 20 : 1000000);
        auto pts = random_distinct(rng, n, -box, box);
        auto ref = delaunay_edges(pts);
        auto bf = brute_force_edges(pts);
        CHECK(ref == bf);
        // Symmetric stars.
        for (std::size_t u = 0; u < n; ++u)
            for (std::size_t v : delaunay_star(pts, u)) {
                auto sv = delaunay_star(pts, v);
                CHECK(std::find(sv.begin(), sv.end(), u) != sv.end());
            }
        ++sets;
    }
    CHECK(sets == 300);
}

TEST_CASE("Delaunay: hand-made degenerate sets") {
    struct Case {
        const char* name;
        std::vector<Point> pts;
        std::size_t edges;   // expected count
    };
    std::vector<Point> grid;
    for (int x = 0; x < 5; ++x)
        for (int y = 0; y < 5; ++y) grid.push_back({x, y});
    std::vector<Point> circle = {{25, 0}, {24, 7}, {20, 15}, {15, 20}, {7, 24}, {0, 25}, {-7, 24}, {-15, 20},
                                 {-20, 15}, {-24, 7}, {-25, 0}, {-24, -7}, {-20, -15}, {-15, -20}, {-7, -24},
                                 {0, -25}, {7, -24}, {15, -20}, {20, -15}, {24, -7}};
    std::vector<Point> wheel = circle;
    wheel.push_back({0, 0});
    const std::vector<Case> cases = {
        {"two points", {{0, 0}, {5, 5}}, 1},
        {"collinear", {{0, 0}, {3, 3}, {1, 1}, {-4, -4}, {10, 10}}, 4},
        {"square", {{0, 0}, {1, 0}, {1, 1}, {0, 1}}, 5},
        // 5x5 grid: 40 sides + 16 diagonals (one per cell).
        {"grid", grid, 56},
        // n points on a circle: n sides + n-3 diagonals.
        {"circle", circle, 20 + 17},
        // A wheel: the centre sees every rim point, rim sides.
        {"wheel", wheel, 40},
        {"collinear hull edge", {{0, 0}, {1, 0}, {2, 0}, {3, 0}, {1, 5}}, 7},
    };
    for (const auto& c : cases) {
        CAPTURE(c.name);
        auto ref = delaunay_edges(c.pts);
        CHECK(ref == brute_force_edges(c.pts));
        CHECK(ref.size() == c.edges);
    }
    // The order of the input never changes the triangulation (as point pairs).
    std::mt19937_64 rng(3);
    auto as_points = [](const std::vector<Point>& p, const std::vector<Edge>& e) {
        std::set<std::pair<Point, Point>> s;
        for (auto [a, b] : e) s.insert({std::min(p[a], p[b]), std::max(p[a], p[b])});
        return s;
    };
    auto g2 = grid;
    for (int i = 0; i < 5; ++i) {
        std::shuffle(g2.begin(), g2.end(), rng);
        CHECK(as_points(g2, delaunay_edges(g2)) == as_points(grid, delaunay_edges(grid)));
    }
}

TEST_CASE("greedy trees on a reference triangulation: every root gives a spanning tree") {
    std::mt19937_64 rng(11);
    for (int box : {30, 1 << 20}) {
        auto pts = random_distinct(rng, 300, -box, box);
        auto adj = adjacency(pts.size(), delaunay_edges(pts));
        for (std::size_t r = 0; r < pts.size(); ++r) {
            const Point root = pts[r];
            std::vector<std::size_t> parent(pts.size(), pts.size());
            for (std::size_t u = 0; u < pts.size(); ++u) {
                if (u == r) continue;
                std::size_t best = pts.size();
                for (std::size_t v : adj[u])
                    if (best == pts.size() || closer(root, pts[v], pts[best])) best = v;
                REQUIRE(best != pts.size());
                // Delaunay: some neighbour is strictly closer to the root.
                CHECK(closer(root, pts[best], pts[u]));
                parent[u] = best;
            }
            // Following parents reaches the root from everywhere (no cycle).
            for (std::size_t u = 0; u < pts.size(); ++u) {
                std::size_t x = u, steps = 0;
                while (x != r && steps <= pts.size()) {
                    x = parent[x];
                    ++steps;
                }
                CHECK(x == r);
            }
        }
    }
}
