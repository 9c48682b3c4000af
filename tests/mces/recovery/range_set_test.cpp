#include <doctest/doctest.h>

#include <cerrno>
#include <vector>

#include "core/mces/recovery/range_set.h"

using gs::mces::PacketRange;
using gs::mces::RangeSet;

static std::vector<PacketRange> v(const RangeSet& s) { return {s.ranges().begin(), s.ranges().end()}; }

TEST_CASE("in-order packets make one range") {
    RangeSet s;
    for (std::uint64_t pn = 0; pn < 100; ++pn) CHECK(s.add(pn) == 1);
    CHECK(v(s) == std::vector<PacketRange>{{0, 99}});
    CHECK(s.largest() == 99);
}

TEST_CASE("gaps make ranges, largest first; filling a gap merges") {
    RangeSet s;
    for (std::uint64_t pn : {1, 2, 3, 5, 6, 9}) CHECK(s.add(pn) == 1);
    CHECK(v(s) == std::vector<PacketRange>{{9, 9}, {5, 6}, {1, 3}});
    CHECK(s.add(4) == 1);       // joins both neighbours
    CHECK(v(s) == std::vector<PacketRange>{{9, 9}, {1, 6}});
    CHECK(s.add(8) == 1);       // joins the range above
    CHECK(v(s) == std::vector<PacketRange>{{8, 9}, {1, 6}});
    CHECK(s.add(0) == 1);       // extends the lowest downward
    CHECK(v(s) == std::vector<PacketRange>{{8, 9}, {0, 6}});
    CHECK(s.add(7) == 1);
    CHECK(v(s) == std::vector<PacketRange>{{0, 9}});
}

TEST_CASE("duplicates are detected and change nothing") {
    RangeSet s;
    for (std::uint64_t pn : {10, 12, 14}) s.add(pn);
    const auto before = v(s);
    for (std::uint64_t pn : {10, 12, 14}) {
        CHECK(s.is_duplicate(pn));
        CHECK(s.add(pn) == 0);
    }
    CHECK(v(s) == before);
    CHECK_FALSE(s.is_duplicate(11));
    CHECK_FALSE(s.is_duplicate(15));
}

TEST_CASE("bounded: the oldest range is dropped and becomes the duplicate floor") {
    RangeSet s(3);
    for (std::uint64_t pn : {0, 2, 4}) s.add(pn);
    CHECK(s.ranges().size() == 3);
    CHECK(s.add(6) == 1);
    CHECK(v(s) == std::vector<PacketRange>{{6, 6}, {4, 4}, {2, 2}});
    CHECK(s.dropped_ranges() == 1);
    CHECK(s.floor() == 1);
    CHECK(s.add(0) == 0);       // forgotten: treated as seen
    CHECK(s.add(1) == 1);       // above the floor: still accepted, joins 2
    CHECK(v(s) == std::vector<PacketRange>{{6, 6}, {4, 4}, {1, 2}});
    // A long random pattern never exceeds the bound.
    RangeSet b(8);
    for (std::uint64_t pn = 0; pn < 10000; pn += 1 + pn % 3) {
        b.add(pn);
        CHECK(b.ranges().size() <= 8);
    }
}

TEST_CASE("forget_below trims and raises the floor; too-large packet numbers are refused") {
    RangeSet s;
    for (std::uint64_t pn : {1, 2, 3, 7, 8}) s.add(pn);
    s.forget_below(3);
    CHECK(v(s) == std::vector<PacketRange>{{7, 8}, {3, 3}});
    CHECK(s.add(2) == 0);
    s.forget_below(8);
    CHECK(v(s) == std::vector<PacketRange>{{8, 8}});
    CHECK(s.add(RangeSet::kMaxPacketNumber + 1) == -EINVAL);
    CHECK(s.add(RangeSet::kMaxPacketNumber) == 1);
}
