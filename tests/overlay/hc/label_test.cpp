// Label arithmetic alone: Gray codes, compactness, trees for every root.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/overlay/hc/label.h"

using namespace gs::overlay::hc;

TEST_CASE("gray and rank are inverse; consecutive labels are adjacent") {
    for (std::uint32_t i = 0; i < 5000; ++i) {
        CHECK(rank_of(gray(i)) == i);
        CHECK(adjacent(gray(i), gray(i + 1)));
    }
    CHECK(rank_of(gray(kMaxMembers - 1)) == kMaxMembers - 1);
    CHECK(dim_of(1) == 0);
    CHECK(dim_of(2) == 1);
    CHECK(dim_of(64) == 6);
    CHECK(dim_of(65) == 7);
}

TEST_CASE("a compact cube of n holds gray(0..n-1) and nothing else") {
    for (std::uint32_t n : {1u, 2u, 3u, 5u, 64u, 100u, 1000u}) {
        std::uint32_t count = 0;
        for (Label l = 0; l < 2048; ++l) count += in_cube(l, n) ? 1 : 0;
        CHECK(count == std::min<std::uint32_t>(n, 2048));
        for (std::uint32_t i = 0; i < n; ++i) CHECK(in_cube(gray(i), n));
    }
    CHECK_FALSE(in_cube(kMaxMembers, kMaxMembers));
}

TEST_CASE("neighbour relation is symmetric and the cube is connected") {
    for (std::uint32_t n = 1; n <= 200; ++n) {
        std::set<Label> seen{0};
        std::vector<Label> todo{0};
        while (!todo.empty()) {
            Label l = todo.back();
            todo.pop_back();
            for (Label nb : neighbors_of(l, n)) {
                auto back = neighbors_of(nb, n);
                CHECK(std::find(back.begin(), back.end(), l) != back.end());
                if (seen.insert(nb).second) todo.push_back(nb);
            }
        }
        CHECK(seen.size() == n);
    }
}

// For every root: each non-root has exactly one parent, which is a neighbour
// one bit closer to the root; parent and children agree; the tree spans the
// cube; depth <= ceil(log2 n).
static void check_trees(std::uint32_t n) {
    const unsigned maxdepth = dim_of(n);
    for (std::uint32_t rr = 0; rr < n; ++rr) {
        const Label root = gray(rr);
        CHECK_FALSE(tree_parent(root, root, n).has_value());
        std::size_t edges = 0;
        for (std::uint32_t i = 0; i < n; ++i) {
            const Label l = gray(i);
            for (Label c : tree_children(l, root, n)) {
                auto p = tree_parent(c, root, n);
                REQUIRE(p.has_value());
                CHECK(*p == l);
                ++edges;
            }
            if (l == root) continue;
            auto p = tree_parent(l, root, n);
            REQUIRE(p.has_value());
            CHECK(in_cube(*p, n));
            CHECK(adjacent(*p, l));
            CHECK(std::popcount(*p ^ root) + 1 == std::popcount(l ^ root));
            auto kids = tree_children(*p, root, n);
            CHECK(std::count(kids.begin(), kids.end(), l) == 1);
            // walk to the root: reaches it within maxdepth steps
            Label cur = l;
            unsigned depth = 0;
            while (cur != root && depth <= maxdepth) {
                cur = *tree_parent(cur, root, n);
                ++depth;
            }
            CHECK(cur == root);
            CHECK(depth <= maxdepth);
        }
        CHECK(edges == n - 1);   // n-1 parent edges and connected: a spanning tree
    }
}

TEST_CASE("trees for every root of a 64-node cube") { check_trees(64); }

TEST_CASE("trees for every root of every cube size up to 72") {
    for (std::uint32_t n = 1; n <= 72; ++n) check_trees(n);
}

TEST_CASE("a tree parent exists for every pair in cubes up to 1100 (sampled roots)") {
    for (std::uint32_t n : {255u, 256u, 257u, 700u, 1000u, 1024u, 1100u}) {
        for (std::uint32_t rr = 0; rr < n; rr += 37) {
            for (std::uint32_t i = 0; i < n; ++i) {
                if (i == rr) continue;
                auto p = tree_parent(gray(i), gray(rr), n);
                REQUIRE(p.has_value());
            }
        }
    }
}

TEST_CASE("arguments outside the cube give no parent and no children") {
    CHECK_FALSE(tree_parent(gray(10), 0, 5).has_value());
    CHECK_FALSE(tree_parent(0, gray(10), 5).has_value());
    CHECK(tree_children(0, gray(10), 5).empty());
    CHECK(neighbors_of(gray(10), 5).empty());
}
