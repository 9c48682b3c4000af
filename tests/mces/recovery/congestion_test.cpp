#include <doctest/doctest.h>

#include <cerrno>
#include <memory>
#include <string>

#include "core/mces/recovery/congestion.h"
#include "core/mces/recovery/cubic.h"
#include "core/mces/recovery/newreno.h"

using namespace gs::mces;
using gs::sansio::Time;
constexpr Time ms = gs::sansio::kMillisecond;
constexpr Time s = gs::sansio::kSecond;

static CcConfig cfg1000() {
    CcConfig c;
    c.mss = 1000;
    return c;
}
static RttEstimator rtt_of(Time r) {
    RttEstimator e;
    e.on_sample(r, 0);
    return e;
}

TEST_CASE("factory by name, clear error for unknown names") {
    std::unique_ptr<CongestionController> cc;
    std::string err;
    REQUIRE(make_congestion_controller("cubic", {}, cc, &err) == 0);
    CHECK(cc->name() == "cubic");
    REQUIRE(make_congestion_controller("newreno", {}, cc, &err) == 0);
    CHECK(cc->name() == "newreno");
    CHECK(make_congestion_controller("bbr", {}, cc, &err) == -ENOENT);
    CHECK(err == "unknown congestion controller 'bbr' (known: cubic, newreno)");
    CHECK(make_congestion_controller("", {}, cc) == -ENOENT);
}

TEST_CASE("initial window per RFC 9002 7.2") {
    CHECK(initial_window(cfg1000()) == 10000);        // 10 * mss
    CcConfig big;
    big.mss = 1500;
    CHECK(initial_window(big) == 14720);              // max(14720, 2 * mss) wins
    CcConfig jumbo;
    jumbo.mss = 9000;
    CHECK(initial_window(jumbo) == 18000);
}

TEST_CASE("NewReno window evolution") {
    NewReno r(cfg1000());
    const auto rtt = rtt_of(100 * ms);
    CHECK(r.cwnd() == 10000);
    CHECK(r.in_slow_start());
    r.on_ack(5000, 1 * ms, rtt, 50 * ms);
    CHECK(r.cwnd() == 15000);                         // slow start: + bytes
    r.on_congestion_event(1 * ms, 10 * ms);
    CHECK(r.cwnd() == 7500);
    CHECK(r.ssthresh() == 7500);
    CHECK(r.in_recovery(9 * ms));
    r.on_congestion_event(5 * ms, 20 * ms);           // same recovery period
    CHECK(r.cwnd() == 7500);
    r.on_ack(3000, 9 * ms, rtt, 60 * ms);             // sent before recovery: no growth
    CHECK(r.cwnd() == 7500);
    r.on_ack(7500, 11 * ms, rtt, 70 * ms);            // one window: + 1 mss
    CHECK(r.cwnd() == 8500);
    r.on_ack(4000, 12 * ms, rtt, 71 * ms);
    r.on_ack(4000, 12 * ms, rtt, 72 * ms);
    CHECK(r.cwnd() == 8500);                          // 8000 < 8500 acked so far
    r.on_ack(500, 12 * ms, rtt, 73 * ms);
    CHECK(r.cwnd() == 9500);
    r.set_app_limited(true);
    r.on_ack(100000, 13 * ms, rtt, 74 * ms);
    CHECK(r.cwnd() == 9500);                          // not using the window: no growth
    r.set_app_limited(false);
    r.on_congestion_event(20 * ms, 30 * ms);
    CHECK(r.cwnd() == 4750);
    r.on_persistent_congestion(40 * ms);
    CHECK(r.cwnd() == 2000);                          // 2 * mss
    r.on_congestion_event(35 * ms, 50 * ms);
    CHECK(r.cwnd() == 2000);                          // never below the minimum
}

TEST_CASE("CUBIC: cubic region against hand-computed points (C=0.4, beta=0.7)") {
    Cubic c(cfg1000());
    const auto rtt = rtt_of(100 * ms);
    c.on_ack(90000, 0, rtt, 500 * ms);
    CHECK(c.cwnd() == 100000);
    c.on_congestion_event(900 * ms, 1 * s);
    CHECK(c.w_max() == doctest::Approx(100000));
    CHECK(c.cwnd() == 70000);
    CHECK(c.ssthresh() == 70000);
    CHECK(c.k() == doctest::Approx(4.2171633));      // cbrt(30 / 0.4)
    // First ACK of congestion avoidance at 2 s starts the epoch. W_cubic(0) =
    // 70000 < W_est = 70000 + 0.5294 * 1000: the Reno-friendly value wins.
    c.on_ack(70000, 1100 * ms, rtt, 2 * s);
    CHECK(c.has_epoch());
    CHECK(c.epoch_start() == 2 * s);
    CHECK(c.w_est() == doctest::Approx(70529.4118));
    CHECK(c.cwnd() == 70529);
    // At t = K - RTT a window of ACKs brings cwnd to W_cubic(K) = W_max.
    const Time t1 = 2 * s + Time((4.2171633 - 0.1) * 1e9);
    c.on_ack(70529, 1500 * ms, rtt, t1);
    CHECK(double(c.cwnd()) == doctest::Approx(99999.83).epsilon(1e-5));
    // At t = K + 1 - RTT: W_cubic(K + 1) = W_max + 0.4 * 1000 = 100400.
    const Time t2 = 2 * s + Time((4.2171633 + 1 - 0.1) * 1e9);
    c.on_ack(c.cwnd(), 1500 * ms, rtt, t2);
    CHECK(double(c.cwnd()) == doctest::Approx(100400).epsilon(1e-5));
    CHECK(c.w_est() == doctest::Approx(71588.23).epsilon(1e-5));
}

TEST_CASE("CUBIC: fast convergence lowers W_max") {
    Cubic c(cfg1000());
    const auto rtt = rtt_of(100 * ms);
    c.on_ack(90000, 0, rtt, 500 * ms);
    c.on_congestion_event(900 * ms, 1 * s);
    c.on_ack(70000, 1100 * ms, rtt, 2 * s);          // cwnd 70529.41 < W_max 100000
    c.on_congestion_event(2500 * ms, 3 * s);
    CHECK(c.w_max() == doctest::Approx(59950.0));    // 70529.41 * (1 + 0.7) / 2
    CHECK(c.cwnd() == 49370);                        // 70529.41 * 0.7
    CHECK(c.k() == doctest::Approx(2.9794345));
    CcConfig nofc = cfg1000();
    nofc.cubic_fast_convergence = false;
    Cubic d(nofc);
    d.on_ack(90000, 0, rtt, 500 * ms);
    d.on_congestion_event(900 * ms, 1 * s);
    d.on_ack(70000, 1100 * ms, rtt, 2 * s);
    d.on_congestion_event(2500 * ms, 3 * s);
    CHECK(d.w_max() == doctest::Approx(70529.41));
}

TEST_CASE("CUBIC: Reno-friendly region on a short path") {
    Cubic c(cfg1000());
    const auto rtt = rtt_of(10 * ms);
    c.on_congestion_event(0, 1 * ms);                // at the initial 10000
    CHECK(c.cwnd() == 7000);
    CHECK(c.k() == doctest::Approx(1.9574338));
    c.on_ack(7000, 2 * ms, rtt, 100 * ms);
    CHECK(c.cwnd() == 7529);
    // 10 ms later: W_cubic(0.01) = 7045.7 < W_est = 8058.8 -> cwnd = W_est.
    c.on_ack(7529, 2 * ms, rtt, 110 * ms);
    CHECK(c.w_est() == doctest::Approx(8058.79).epsilon(1e-5));
    CHECK(c.cwnd() == 8058);
}

TEST_CASE("CUBIC: app-limited, idle shift, persistent congestion") {
    Cubic c(cfg1000());
    const auto rtt = rtt_of(100 * ms);
    c.on_congestion_event(0, 1 * ms);
    c.on_ack(7000, 2 * ms, rtt, 1 * s);
    const auto w = c.cwnd();
    c.set_app_limited(true);
    c.on_ack(50000, 2 * ms, rtt, 3 * s);
    CHECK(c.cwnd() == w);
    c.set_app_limited(false);
    c.on_sent(1000, 5000, 4 * s);                    // busy: no shift
    CHECK(c.epoch_start() == 1 * s);
    c.on_sent(1000, 1000, 7 * s);                    // alone in flight after 3 s idle
    CHECK(c.epoch_start() == 4 * s);
    c.on_persistent_congestion(8 * s);
    CHECK(c.cwnd() == 2000);
    CHECK_FALSE(c.has_epoch());
}

TEST_CASE("undo: a reduction proved spurious is taken back, once, for both algorithms") {
    for (const char* name : {"newreno", "cubic"}) {
        CAPTURE(name);
        std::unique_ptr<CongestionController> cc;
        REQUIRE(make_congestion_controller(name, cfg1000(), cc) == 0);
        const RttEstimator r = rtt_of(10 * ms);
        CHECK_FALSE(cc->undo(0));                     // nothing reduced yet
        // Slow start to 40000, then a loss.
        for (int i = 0; i < 30; ++i) cc->on_ack(1000, 1 * ms, r, 2 * ms);
        const std::uint64_t before = cc->cwnd(), ss_before = cc->ssthresh();
        REQUIRE(before == 40000);
        cc->on_congestion_event(3 * ms, 4 * ms);
        CHECK(cc->cwnd() < before);
        CHECK(cc->in_recovery(4 * ms));
        // The lost packets were acknowledged after all.
        CHECK(cc->undo(5 * ms));
        CHECK(cc->cwnd() == before);
        CHECK(cc->ssthresh() == ss_before);
        CHECK_FALSE(cc->in_recovery(4 * ms));         // the recovery period is gone too
        CHECK_FALSE(cc->undo(6 * ms));                // once per reduction
        // Still in slow start: an ACK grows the window as before the loss.
        cc->on_ack(1000, 5 * ms, r, 7 * ms);
        CHECK(cc->cwnd() == before + 1000);
        // A real loss later reduces again, and persistent congestion
        // forgets what could be undone.
        cc->on_congestion_event(8 * ms, 9 * ms);
        const std::uint64_t reduced = cc->cwnd();
        CHECK(reduced < before);
        cc->on_persistent_congestion(10 * ms);
        CHECK_FALSE(cc->undo(11 * ms));
        CHECK(cc->cwnd() == 2000);                    // the minimum window stays
    }
}

TEST_CASE("undo: the window does not fall below what it grew to since the reduction") {
    Cubic c(cfg1000());
    const RttEstimator r = rtt_of(10 * ms);
    for (int i = 0; i < 90; ++i) c.on_ack(1000, 1 * ms, r, 2 * ms);   // 100000
    c.on_congestion_event(3 * ms, 4 * ms);                             // 70000, W_max 100000
    REQUIRE(c.cwnd() == 70000);
    const double w_max = c.w_max();
    // Congestion avoidance after the recovery period grows it a little.
    for (int i = 0; i < 50; ++i) c.on_ack(1000, 5 * ms, r, 6 * ms + i * ms);
    CHECK(c.cwnd() > 70000);
    REQUIRE(c.undo(60 * ms));
    CHECK(c.cwnd() == 100000);
    CHECK(c.w_max() == doctest::Approx(0.0));   // as before the loss: no W_max yet
    CHECK(w_max == doctest::Approx(100000.0));
    CHECK(c.ssthresh() == UINT64_MAX);           // back in slow start
}
