// Exact plane geometry for the DT overlay: integer points, the orientation
// and in-circle predicates, and Delaunay stars/triangulations of small and
// medium point sets.
//
// Every decision is exact: coordinates are int32, predicates are evaluated
// with 64/128-bit integers and, where 128 bits are not enough (coordinate
// differences above 2^30), with a 256-bit accumulator. No floating point.
//
// Degenerate inputs are resolved by one deterministic rule that depends on
// the points only, never on the order they are given in, so that every node
// that looks at the same points draws the same triangulation:
//   - Co-circular points: symbolic perturbation of the lifting. Each point p
//     is lifted to z = x^2 + y^2 + eps_p, where eps_p >> eps_q whenever p is
//     lexicographically smaller than q ((x, y) order). The Delaunay
//     triangulation is that of the perturbed points, which is unique: no four
//     of them are co-circular. Practically: when four points are co-circular,
//     the lexicographically smallest of them counts as lying just outside the
//     circle through the other three.
//   - Collinear points: no perturbation is needed. A point lying on a segment
//     is strictly inside every circle through the segment's ends, so the
//     segment is never an edge; points on the convex hull are all vertices and
//     consecutive hull points are joined. A set of collinear points is a path.
//   - Duplicate points are not allowed (callers keep one per coordinate).
#pragma once

#include <compare>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "core/overlay/node.h"

namespace gs::overlay::dt {

struct Point {
    std::int32_t x = 0;
    std::int32_t y = 0;
    friend bool operator==(const Point&, const Point&) = default;
    friend auto operator<=>(const Point&, const Point&) = default;   // lexicographic (x, y)
};

// The logical address of a DT node (node.h): x in the high 32 bits, y low.
constexpr LogicalAddress pack(Point p) noexcept {
    return (std::uint64_t{static_cast<std::uint32_t>(p.x)} << 32) | static_cast<std::uint32_t>(p.y);
}
constexpr Point unpack(LogicalAddress a) noexcept {
    return Point{static_cast<std::int32_t>(static_cast<std::uint32_t>(a >> 32)),
                 static_cast<std::int32_t>(static_cast<std::uint32_t>(a))};
}

// +1 when a, b, c turn counter-clockwise (c left of a->b), -1 clockwise,
// 0 collinear (or points equal).
int orient(Point a, Point b, Point c) noexcept;

// The perturbed in-circle test. For a counter-clockwise triangle a, b, c:
// +1 when d is inside its circumcircle, -1 outside (for a clockwise triangle
// the sign flips). Exact, with co-circular ties broken by the perturbation
// above, so it is 0 only when all four points are collinear or two coincide.
int incircle(Point a, Point b, Point c, Point d) noexcept;

// Sign of |a - r|^2 - |b - r|^2 (exact).
int compare_distance(Point r, Point a, Point b) noexcept;

// The squared distance (exact; fits: at most 2^65).
unsigned __int128 distance2(Point a, Point b) noexcept;

// "a is closer to r than b": by distance, ties by lexicographic order, so it
// is a strict total order on distinct points (what greedy routing and the
// trees use).
bool closer(Point r, Point a, Point b) noexcept;

// The Delaunay neighbours of pts[u] in the triangulation of `pts` (indices
// into pts, counter-clockwise around pts[u], starting anywhere). The points
// must be distinct. Cost: O(n * degree) predicate evaluations (gift wrapping
// around pts[u], starting from its nearest point, which is always a Delaunay
// neighbour).
std::vector<std::size_t> delaunay_star(std::span<const Point> pts, std::size_t u);

// The reference triangulation: every Delaunay edge (i, j), i < j, sorted.
// Built from the stars of all points: O(n^2 * degree). Used by the tests to
// check what the overlay converges to; distinct points only.
std::vector<std::pair<std::size_t, std::size_t>> delaunay_edges(std::span<const Point> pts);

}  // namespace gs::overlay::dt
