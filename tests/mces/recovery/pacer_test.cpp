#include <doctest/doctest.h>

#include "core/mces/recovery/pacer.h"

using namespace gs::mces;
using namespace gs::sansio;
constexpr Time us = kMicrosecond;
constexpr Time ms = kMillisecond;

TEST_CASE("rate = gain * cwnd / srtt; a burst, then even spacing") {
    Pacer p;                                       // gain 1.25, burst 10 x 1200
    p.set_rate(120000, 100 * ms);
    CHECK(p.rate() == doctest::Approx(1.5e6));      // bytes per second
    Time now = 0;
    for (int i = 0; i < 10; ++i) {
        CHECK(p.next_send_time(1200, now) == now);
        p.on_sent(1200, now);
    }
    // 1200 bytes at 1.5 MB/s = 800 us apart.
    Time t = p.next_send_time(1200, now);
    CHECK(t == 800 * us);
    for (int i = 0; i < 100; ++i) {
        now = p.next_send_time(1200, now);
        p.on_sent(1200, now);
    }
    CHECK(now == 100 * 800 * us);
    // After a long idle the bucket is full again, but never more than the burst.
    now += 10 * kSecond;
    for (int i = 0; i < 10; ++i) {
        CHECK(p.next_send_time(1200, now) == now);
        p.on_sent(1200, now);
    }
    CHECK(p.next_send_time(1200, now) == now + 800 * us);
}

TEST_CASE("burst_time: the bucket holds 1 ms at the rate, between 10 and 64 packets") {
    PacerConfig cfg;
    cfg.burst_time = kMillisecond;
    Pacer p(cfg);
    CHECK(p.burst() == doctest::Approx(12000));     // no rate yet: 10 packets
    p.set_rate_bytes_per_sec(1.5e6);                // 1 ms = 1500 bytes: the floor holds
    CHECK(p.burst() == doctest::Approx(12000));
    p.set_rate_bytes_per_sec(40e6);                 // 1 ms = 40,000 bytes
    CHECK(p.burst() == doctest::Approx(40000));
    p.set_rate_bytes_per_sec(1e9);                  // 1 ms = 1 MB: 64 packets at most
    CHECK(p.burst() == doctest::Approx(64 * 1200));
    // A burst of that size goes at once after idle, then the spacing is the rate's.
    Time now = 5 * kSecond;
    for (int i = 0; i < 64; ++i) {
        CHECK(p.next_send_time(1200, now) == now);
        p.on_sent(1200, now);
    }
    CHECK(p.next_send_time(1200, now) == now + 1200);   // 1200 B at 1 GB/s: 1.2 us
    // Without burst_time the burst stays 10 packets whatever the rate.
    Pacer q;
    q.set_rate_bytes_per_sec(1e9);
    CHECK(q.burst() == doctest::Approx(12000));
}

TEST_CASE("unpaced, sends beyond the bucket, odd inputs") {
    Pacer p;
    CHECK(p.next_send_time(1200, 5) == 5);          // no rate yet: unpaced
    p.set_rate(1000, 0);                             // srtt 0 -> 1 ms: 1.25 MB/s
    CHECK(p.rate() == doctest::Approx(1.25e6));
    for (int i = 0; i < 12; ++i) p.on_sent(1200, 0);   // owner sends 2 probes over
    // 2400 bytes of debt + 1200 needed = 3600 bytes at 1.25 MB/s = 2.88 ms
    CHECK(p.next_send_time(1200, 0) == 2880 * us);
    p.set_rate_bytes_per_sec(-3);
    CHECK(p.rate() == 0);
    CHECK(p.next_send_time(1200, 7) == 7);
}
