#include <doctest/doctest.h>

#include <cerrno>

#include "core/mces/recovery/ack_policy.h"

using namespace gs::mces;
using namespace gs::sansio;
constexpr Time ms = kMillisecond;

TEST_CASE("every second ack-eliciting packet, else after max_ack_delay") {
    AckPolicy a;
    CHECK(a.next_timeout() == kNever);
    a.on_packet(0, true, 5 * ms);
    CHECK_FALSE(a.ack_now());
    CHECK(a.next_timeout() == 30 * ms);
    a.on_packet(1, true, 6 * ms);
    CHECK(a.ack_now());
    CHECK(a.ack_delay(8 * ms) == 2 * ms);
    a.on_ack_sent(8 * ms);
    CHECK_FALSE(a.pending());
    CHECK(a.next_timeout() == kNever);
    a.on_packet(2, false, 9 * ms);                 // pure ACK: nothing owed
    a.on_packet(3, false, 9 * ms);
    CHECK_FALSE(a.pending());
    a.on_packet(4, true, 10 * ms);
    CHECK_FALSE(a.ack_now());
    CHECK(a.next_timeout() == 35 * ms);
}

TEST_CASE("out of order: a gap or a late packet is acknowledged at once") {
    AckPolicy a;
    a.on_packet(0, true, 0);
    a.on_ack_sent(0);
    a.on_packet(2, true, 1 * ms);                  // 1 missing
    CHECK(a.ack_now());
    a.on_ack_sent(1 * ms);
    a.on_packet(1, true, 2 * ms);                  // below the largest
    CHECK(a.ack_now());
    a.on_ack_sent(2 * ms);
    a.on_packet(3, true, 3 * ms);                  // back in order
    CHECK_FALSE(a.ack_now());
}

TEST_CASE("configurable threshold within bounds") {
    AckPolicyConfig c;
    c.threshold = 10;
    AckPolicy a(c);
    for (std::uint64_t pn = 0; pn < 9; ++pn) a.on_packet(pn, true, 0);
    CHECK_FALSE(a.ack_now());
    a.on_packet(9, true, 0);
    CHECK(a.ack_now());
    CHECK(a.set_threshold(0) == -EINVAL);
    CHECK(a.set_threshold(AckPolicy::kMaxThreshold + 1) == -EINVAL);
    CHECK(a.threshold() == 10);
    CHECK(a.set_threshold(1) == 0);
    CHECK(a.set_max_ack_delay(-1) == -EINVAL);
    a.on_ack_sent(0);
    a.on_packet(10, true, 0);
    CHECK(a.ack_now());
}
