#include <doctest/doctest.h>

#include "core/mces/recovery/rtt.h"

using gs::mces::RttEstimator;
using namespace gs::sansio;
constexpr Time ms = kMillisecond;
constexpr Time us = kMicrosecond;

TEST_CASE("before any sample: RFC 9002 initial values") {
    RttEstimator r;
    CHECK_FALSE(r.has_sample());
    CHECK(r.smoothed() == 333 * ms);
    CHECK(r.rttvar() == 166500 * us);
    // 333 + 4 * 166.5 + 25
    CHECK(r.pto_base() == 1024 * ms);
}

TEST_CASE("RFC 9002 5.3 update sequence") {
    RttEstimator r;
    // First sample: ack delay ignored, rttvar = latest / 2.
    CHECK(r.on_sample(100 * ms, 10 * ms));
    CHECK(r.smoothed() == 100 * ms);
    CHECK(r.rttvar() == 50 * ms);
    CHECK(r.min_rtt() == 100 * ms);
    // 130 ms with 20 ms ack delay: 130 >= 100 + 20, so adjusted = 110.
    // rttvar = 3/4 * 50 + 1/4 * |100 - 110| = 40; smoothed = 7/8 * 100 + 1/8 * 110 = 101.25
    r.on_sample(130 * ms, 20 * ms);
    CHECK(r.rttvar() == 40 * ms);
    CHECK(r.smoothed() == 101250 * us);
    CHECK(r.latest() == 130 * ms);
    // 105 ms with 20 ms delay: 105 < 100 + 20, the delay is not subtracted.
    // rttvar = 30 + |101.25 - 105| / 4 = 30.9375; smoothed = 88.59375 + 13.125 = 101.71875
    r.on_sample(105 * ms, 20 * ms);
    CHECK(r.rttvar() == 30937500);
    CHECK(r.smoothed() == 101718750);
    // pto_base = 101.71875 + 4 * 30.9375 + 25 = 250.46875 ms
    CHECK(r.pto_base() == 250468750);
}

TEST_CASE("ack delay is capped at max_ack_delay; negative is clamped; min_rtt follows") {
    RttEstimator r;
    r.on_sample(100 * ms, 0);
    // 200 ms with a claimed 100 ms delay: only 25 counts -> adjusted 175.
    // smoothed = 87.5 + 21.875 = 109.375
    r.on_sample(200 * ms, 100 * ms);
    CHECK(r.smoothed() == 109375 * us);
    RttEstimator n;
    n.on_sample(100 * ms, 0);
    n.on_sample(120 * ms, -50 * ms);         // treated as 0
    CHECK(n.smoothed() == 102500 * us);
    n.on_sample(80 * ms, 0);
    CHECK(n.min_rtt() == 80 * ms);
    CHECK_FALSE(n.on_sample(-1, 0));          // nonsense is ignored
    CHECK(n.latest() == 80 * ms);
}

TEST_CASE("PTO doubles with back-off and saturates") {
    RttEstimator r;
    r.on_sample(100 * ms, 0);      // base = 100 + 200 + 25 = 325 ms
    CHECK(r.pto(0) == 325 * ms);
    CHECK(r.pto(1) == 650 * ms);
    CHECK(r.pto(3) == 2600 * ms);
    CHECK(r.pto(1000) > r.pto(20));
    CHECK(r.pto(1000) > 0);
}
