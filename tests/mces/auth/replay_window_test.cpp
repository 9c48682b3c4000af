// The replay window against a plain model (a set of every number seen and
// the largest), on sequences with small steps, reordering and long jumps.
#include <doctest/doctest.h>

#include <cstdint>
#include <set>

#include "core/mces/auth/replay_window.h"

using namespace gs::mces::auth;

namespace {

struct Model {
    std::set<std::uint64_t> seen;
    std::uint64_t largest = 0;
    bool any = false;
    ReplayCheck check(std::uint64_t pn) const {
        if (!any || pn > largest) return ReplayCheck::fresh;
        if (largest - pn >= kReplayWindow) return ReplayCheck::too_old;
        return seen.count(pn) != 0 ? ReplayCheck::duplicate : ReplayCheck::fresh;
    }
    void mark(std::uint64_t pn) {
        seen.insert(pn);
        if (!any || pn > largest) largest = pn;
        any = true;
    }
};

// xorshift64*: deterministic, seeded
struct Rng {
    std::uint64_t s;
    std::uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 2685821657736338717ull;
    }
};

}  // namespace

TEST_CASE("window edges") {
    ReplayWindow w;
    CHECK(w.largest() == -1);
    CHECK(w.check(0) == ReplayCheck::fresh);
    w.mark(0);
    CHECK(w.check(0) == ReplayCheck::duplicate);
    CHECK(w.largest() == 0);
    w.mark(kReplayWindow);             // 0 is now exactly a window behind
    CHECK(w.check(0) == ReplayCheck::too_old);
    CHECK(w.check(1) == ReplayCheck::fresh);
    w.mark(1);
    CHECK(w.check(1) == ReplayCheck::duplicate);
    w.mark(kReplayWindow + 64);        // slides a whole word: 1..64 leave
    CHECK(w.check(64) == ReplayCheck::too_old);
    CHECK(w.check(65) == ReplayCheck::fresh);
    CHECK(w.check(kReplayWindow) == ReplayCheck::duplicate);
    w.mark(std::uint64_t{1} << 61);    // a far jump clears everything
    CHECK(w.check(kReplayWindow) == ReplayCheck::too_old);
    CHECK(w.check((std::uint64_t{1} << 61) - 1) == ReplayCheck::fresh);
    CHECK(w.check(std::uint64_t{1} << 61) == ReplayCheck::duplicate);
    // A late mark of a too-old number changes nothing (its word is reused).
    w.mark(5);
    CHECK(w.largest() == static_cast<std::int64_t>(std::uint64_t{1} << 61));
    CHECK(w.check((std::uint64_t{1} << 61) - kReplayWindow + 1) == ReplayCheck::fresh);
}

TEST_CASE("the window agrees with the model on random traffic") {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        CAPTURE(seed);
        Rng rng{seed * 0x9E3779B97F4A7C15ull};
        ReplayWindow w;
        Model m;
        std::uint64_t base = 0;
        std::size_t dup = 0, old = 0, fresh = 0;
        for (int i = 0; i < 20000; ++i) {
            const std::uint64_t r = rng.next();
            std::uint64_t pn;
            switch (r % 8) {
            case 0: base += 1 + (r >> 8) % 3000; pn = base; break;          // jump ahead
            case 1: pn = base > 1500 ? base - (r >> 8) % 1500 : 0; break;  // around the edge
            default: pn = base + (r >> 8) % 64 - (base >= 64 ? 32 : 0); break;  // reordering
            }
            const ReplayCheck want = m.check(pn);
            REQUIRE(w.check(pn) == want);
            if (want == ReplayCheck::fresh) {
                w.mark(pn);
                m.mark(pn);
                ++fresh;
            } else if (want == ReplayCheck::duplicate) {
                ++dup;
            } else {
                ++old;
            }
            REQUIRE(w.largest() == static_cast<std::int64_t>(m.largest));
        }
        // every outcome happened, so the comparison covered all three
        CHECK(fresh > 1000);
        CHECK(dup > 100);
        CHECK(old > 100);
    }
}
