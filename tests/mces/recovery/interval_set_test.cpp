#include <doctest/doctest.h>

#include <set>

#include "core/mces/recovery/interval_set.h"

using gs::mces::IntervalSet;

TEST_CASE("interval set: add merges, counts new bytes") {
    IntervalSet s;
    CHECK(s.add(10, 20) == 10);
    CHECK(s.add(30, 40) == 10);
    CHECK(s.add(15, 35) == 10);      // 20..30 new
    CHECK(s.size() == 1);
    CHECK(s.front() == std::pair<std::uint64_t, std::uint64_t>{10, 40});
    CHECK(s.add(40, 45) == 5);       // touching merges
    CHECK(s.size() == 1);
    CHECK(s.add(0, 100) == 100 - 35);
    CHECK(s.add(5, 5) == 0);
}

TEST_CASE("interval set: remove splits and trims; contains/joins") {
    IntervalSet s;
    s.add(0, 100);
    s.remove(20, 30);
    CHECK(s.size() == 2);
    CHECK(s.contains(0, 20));
    CHECK_FALSE(s.contains(19, 21));
    CHECK(s.contains(30, 100));
    CHECK(s.joins(20, 25));          // touches [0,20)
    CHECK_FALSE(s.joins(21, 29));
    s.remove(0, 1000);
    CHECK(s.empty());
}

TEST_CASE("interval set matches a bitmap model") {
    IntervalSet s;
    std::set<std::uint64_t> model;
    std::uint64_t x = 12345;
    for (int i = 0; i < 2000; ++i) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        const std::uint64_t a = (x >> 33) % 500, len = (x >> 20) % 20;
        if ((x >> 60) & 1) {
            std::uint64_t fresh = 0;
            for (std::uint64_t k = a; k < a + len; ++k) fresh += model.insert(k).second;
            CHECK(s.add(a, a + len) == fresh);
        } else {
            for (std::uint64_t k = a; k < a + len; ++k) model.erase(k);
            s.remove(a, a + len);
        }
    }
    std::uint64_t total = 0, prev_end = 0;
    bool first = true;
    for (const auto& [b, e] : s.ranges()) {
        CHECK(b < e);
        if (!first) CHECK(b > prev_end);     // disjoint, not touching
        first = false;
        prev_end = e;
        total += e - b;
        for (std::uint64_t k = b; k < e; ++k) CHECK(model.count(k) == 1);
    }
    CHECK(total == model.size());
}
