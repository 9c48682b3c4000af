#include <doctest/doctest.h>

#include <cerrno>

#include "core/mces/recovery/flow_control.h"
#include "core/mces/recovery/idle_timer.h"

using namespace gs::mces;
using namespace gs::sansio;
constexpr Time ms = kMillisecond;

TEST_CASE("flow receiver: credit, violations, updates, auto-tuned window up to the cap") {
    FlowReceiver f({1000, 4000});
    CHECK(f.limit() == 1000);
    CHECK(f.on_data(1001) == -EDQUOT);
    CHECK(f.on_data(600) == 0);
    f.on_consumed(400);
    CHECK_FALSE(f.update_due());                     // 600 credit left > 500
    f.on_consumed(900);                              // clamped to what arrived: 600
    CHECK(f.update_due());                           // 400 left
    CHECK(f.take_update(0, 100 * ms) == 1600);
    CHECK(f.window() == 1000);
    f.on_data(1600);
    f.on_consumed(1200);
    // Another update 50 ms later (< 2 RTT): the window is the bottleneck, double it.
    CHECK(f.take_update(50 * ms, 100 * ms) == 3200);
    CHECK(f.window() == 2000);
    f.on_data(3200);
    f.on_consumed(3000);
    CHECK(f.take_update(60 * ms, 100 * ms) == 7000);
    CHECK(f.window() == 4000);
    f.on_data(7000);
    f.on_consumed(7000);
    CHECK(f.take_update(70 * ms, 100 * ms) == 11000);
    CHECK(f.window() == 4000);                       // capped
    f.on_consumed(7000);
    CHECK_FALSE(f.update_due());
    // Slow consumption: no growth.
    FlowReceiver g({1000, 4000});
    g.on_data(1000);
    g.on_consumed(1000);
    g.take_update(0, 100 * ms);
    g.on_data(2000);
    g.on_consumed(2000);
    g.take_update(1000 * ms, 100 * ms);
    CHECK(g.window() == 1000);
}

TEST_CASE("flow sender: limit only rises; blocked reported once per limit") {
    FlowSender s(1000);
    CHECK(s.credit(400) == 600);
    CHECK_FALSE(s.should_report_blocked(400));
    CHECK(s.should_report_blocked(1000));
    s.on_blocked_sent();
    CHECK_FALSE(s.should_report_blocked(1000));
    CHECK_FALSE(s.on_limit(900));                    // stale, reordered
    CHECK(s.limit() == 1000);
    CHECK(s.on_limit(2000));
    CHECK(s.credit(1000) == 1000);
    CHECK(s.should_report_blocked(2000));            // a new limit, blocked again
}

TEST_CASE("idle timer: keepalive pings, close after idle timeout, 3 * PTO floor") {
    IdleTimer t({15 * kSecond, 30 * kSecond}, 0);
    CHECK(t.next_timeout() == 15 * kSecond);
    CHECK(t.on_timeout(14 * kSecond) == IdleTimer::Action::None);
    CHECK(t.on_timeout(15 * kSecond) == IdleTimer::Action::SendPing);
    t.on_ack_eliciting_sent(15 * kSecond);           // the ping restarts the idle period once
    CHECK(t.next_timeout() == 30 * kSecond);         // next ping at 30, close at 45
    t.on_ack_eliciting_sent(20 * kSecond);           // no further restart until something arrives
    t.on_received(25 * kSecond);
    CHECK(t.next_timeout() == 40 * kSecond);         // ping at 25 + 15; idle at 55
    CHECK(t.on_timeout(40 * kSecond) == IdleTimer::Action::SendPing);
    CHECK(t.on_timeout(54 * kSecond) == IdleTimer::Action::None);
    CHECK(t.on_timeout(55 * kSecond) == IdleTimer::Action::Close);
    CHECK(t.closed());
    CHECK(t.next_timeout() == kNever);

    IdleTimer slow({0, 1 * kSecond}, 0);             // no keepalive
    slow.set_pto(2 * kSecond);
    CHECK(slow.next_timeout() == 6 * kSecond);
    IdleTimer never({0, 0}, 0);
    CHECK(never.next_timeout() == kNever);
}
