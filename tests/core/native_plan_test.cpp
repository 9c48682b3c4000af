// The native QoS plan: which kernel knobs a decision turns into, in which order.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "core/qos/native_plan.h"

using namespace gs;
using gs::qos::Knob;

namespace {
policy::Decision decision(policy::ServiceClass c = policy::ServiceClass::reliable) {
    policy::Decision d;
    d.rule = "t";
    d.service = c;
    return d;
}
int find(const qos::NativePlan& p, Knob k) {
    for (int i = 0; i < p.count; ++i)
        if (p.settings[i].knob == k) return i;
    return -1;
}
}  // namespace

TEST_CASE("a decision without QoS sets nothing") {
    auto p = qos::plan_native(decision(), AF_INET, policy::Proto::tcp);
    CHECK(p.count == 0);
}

TEST_CASE("dscp becomes IP_TOS, and IPV6_TCLASS as well on v6 sockets") {
    auto d = decision();
    d.qos.dscp = 46;
    auto v4 = qos::plan_native(d, AF_INET, policy::Proto::tcp);
    REQUIRE(v4.count == 1);
    CHECK(v4.settings[0].level == IPPROTO_IP);
    CHECK(v4.settings[0].optname == IP_TOS);
    CHECK(v4.settings[0].value == 46);
    auto v6 = qos::plan_native(d, AF_INET6, policy::Proto::udp);
    REQUIRE(v6.count == 2);
    CHECK(find(v6, Knob::tos) >= 0);   // v4-mapped peers use IP_TOS on a v6 socket
    CHECK(v6.settings[find(v6, Knob::tclass)].optname == IPV6_TCLASS);
}

TEST_CASE("the TOS byte keeps the program's ECN bits") {
    CHECK(qos::tos_with_dscp(46, 0) == 184);
    CHECK(qos::tos_with_dscp(46, 3) == 187);
    CHECK(qos::tos_with_dscp(10, 0xff) == 43);
    CHECK(qos::tos_with_dscp(0, 0x02) == 2);
}

TEST_CASE("IP_TOS is applied before SO_PRIORITY, which Linux resets when TOS changes") {
    auto d = decision();
    d.qos.dscp = 34;
    d.qos.priority = 6;
    auto p = qos::plan_native(d, AF_INET, policy::Proto::tcp);
    REQUIRE(find(p, Knob::tos) >= 0);
    REQUIRE(find(p, Knob::priority) >= 0);
    CHECK(find(p, Knob::tos) < find(p, Knob::priority));
    CHECK(p.settings[find(p, Knob::priority)].optname == SO_PRIORITY);
}

TEST_CASE("TCP-only knobs are not planned for UDP") {
    auto d = decision(policy::ServiceClass::realtime);
    d.qos.window = 65536;
    d.qos.notsent_lowat = 4096;
    snprintf(d.qos.congestion, sizeof d.qos.congestion, "reno");
    d.qos.rate = 1'000'000;
    d.qos.rcvbuf = 1 << 20;
    auto udp = qos::plan_native(d, AF_INET, policy::Proto::udp);
    CHECK(find(udp, Knob::window_clamp) < 0);
    CHECK(find(udp, Knob::congestion) < 0);
    CHECK(find(udp, Knob::notsent_lowat) < 0);
    CHECK(find(udp, Knob::pacing) >= 0);
    CHECK(find(udp, Knob::rcvbuf) >= 0);
    auto tcp = qos::plan_native(d, AF_INET, policy::Proto::tcp);
    CHECK(tcp.settings[find(tcp, Knob::window_clamp)].value == 65536);
    CHECK(tcp.settings[find(tcp, Knob::notsent_lowat)].value == 4096);
    CHECK(std::string(tcp.settings[find(tcp, Knob::congestion)].text) == "reno");
    CHECK(tcp.settings[find(tcp, Knob::pacing)].value == 1'000'000);
    CHECK(tcp.settings[find(tcp, Knob::pacing)].optname == SO_MAX_PACING_RATE);
}

TEST_CASE("realtime TCP flows get a default TCP_NOTSENT_LOWAT, other classes do not") {
    auto rt = qos::plan_native(decision(policy::ServiceClass::realtime), AF_INET, policy::Proto::tcp);
    REQUIRE(find(rt, Knob::notsent_lowat) >= 0);
    CHECK(rt.settings[find(rt, Knob::notsent_lowat)].value == qos::kRealtimeNotsentLowat);
    auto rel = qos::plan_native(decision(policy::ServiceClass::reliable), AF_INET, policy::Proto::tcp);
    CHECK(find(rel, Knob::notsent_lowat) < 0);
}

TEST_CASE("every knob at once fits the plan") {
    auto d = decision(policy::ServiceClass::realtime);
    d.qos.dscp = 46;
    d.qos.priority = 6;
    d.qos.rate = 1;
    d.qos.rcvbuf = 1;
    d.qos.window = 1;
    d.qos.notsent_lowat = 1;
    snprintf(d.qos.congestion, sizeof d.qos.congestion, "cubic");
    auto p = qos::plan_native(d, AF_INET6, policy::Proto::tcp);
    CHECK(p.count == 8);
    CHECK(static_cast<size_t>(p.count) <= sizeof p.settings / sizeof p.settings[0]);
}
