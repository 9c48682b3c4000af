// The shim's bookkeeping, tested without LD_PRELOAD: slots, flow records,
// address conversion, socket type classification and option overrides.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>
#include <thread>
#include <vector>

#include "shim/flows.h"
#include "shim/shim.h"

using namespace gs;
using namespace gs::shim;

TEST_CASE("socket types are compared with SOCK_NONBLOCK and SOCK_CLOEXEC masked out") {
    CHECK(socket_slot(AF_INET, SOCK_STREAM, 0) == slot::kSocket);
    CHECK(socket_slot(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) == slot::kSocket);
    CHECK(socket_slot(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP) == (slot::kSocket | slot::kV6));
    CHECK(socket_slot(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP) == (slot::kSocket | slot::kUdp));
    CHECK(socket_slot(AF_INET, SOCK_STREAM, IPPROTO_MPTCP) == slot::kSocket);
    CHECK(socket_slot(AF_UNIX, SOCK_STREAM, 0) == 0);
    CHECK(socket_slot(AF_INET, SOCK_RAW, IPPROTO_ICMP) == 0);
    CHECK(socket_slot(AF_INET, SOCK_SEQPACKET, 0) == 0);
    CHECK(socket_slot(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE) == 0);
}

TEST_CASE("probe_slot asks the kernel about fds the shim never saw created") {
    int t = ::socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    int x = ::socket(AF_UNIX, SOCK_STREAM, 0);
    int p[2];
    REQUIRE(pipe(p) == 0);
    CHECK(probe_slot(t) == (slot::kSocket | slot::kV6));
    CHECK(probe_slot(u) == (slot::kSocket | slot::kUdp));
    CHECK(probe_slot(x) == 0);
    errno = 1234;
    CHECK(probe_slot(p[0]) == 0);
    CHECK(errno == 1234);   // errno left as the program had it
    CHECK(probe_slot(-1) == 0);
    for (int fd : {t, u, x, p[0], p[1]}) ::close(fd);
}

TEST_CASE("slot encoding keeps kinds, counting and index apart") {
    uint32_t s = slot::kFlow | 12345 | slot::kCount;
    CHECK(slot::is_flow(s));
    CHECK(!slot::is_socket(s));
    CHECK(slot::counts(s));
    CHECK(slot::index(s) == 12345);
    CHECK(!slot::counts(slot::kFlow | 7));
    CHECK(!slot::counts(slot::kSocket | slot::kUdp));
    CHECK(slot::index(slot::kFlow | (kMaxFlows - 1)) == kMaxFlows - 1);
}

TEST_CASE("endpoint_from reads v4, v6 and turns v4-mapped into v4") {
    Endpoint e;
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(8080);
    inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
    REQUIRE(endpoint_from(reinterpret_cast<sockaddr*>(&in), sizeof in, e));
    CHECK(e.addr.family == AF_INET);
    CHECK(e.port == 8080);
    char buf[64];
    CHECK(std::string(format_endpoint(e, buf, sizeof buf)) == "10.1.2.3:8080");

    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(443);
    inet_pton(AF_INET6, "::ffff:192.168.1.9", &in6.sin6_addr);
    REQUIRE(endpoint_from(reinterpret_cast<sockaddr*>(&in6), sizeof in6, e));
    CHECK(e.addr.family == AF_INET);
    CHECK(std::string(format_endpoint(e, buf, sizeof buf)) == "192.168.1.9:443");

    inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
    REQUIRE(endpoint_from(reinterpret_cast<sockaddr*>(&in6), sizeof in6, e));
    CHECK(std::string(format_endpoint(e, buf, sizeof buf)) == "[2001:db8::1]:443");

    CHECK(!endpoint_from(reinterpret_cast<sockaddr*>(&in6), sizeof(sockaddr_in), e));   // truncated
    CHECK(!endpoint_from(nullptr, 0, e));
    sockaddr un{};
    un.sa_family = AF_UNIX;
    CHECK(!endpoint_from(&un, sizeof un, e));
}

TEST_CASE("flow records are reused after release and never handed out twice") {
    keep_closed_flows(false);
    std::vector<FlowRecord*> got;
    for (int i = 0; i < 100; ++i) {
        FlowRecord* r = flow_alloc();
        REQUIRE(r != nullptr);
        CHECK(r->refs.load() == 1);
        CHECK(r->state.load() == FlowState::open);
        got.push_back(r);
    }
    CHECK(std::set<FlowRecord*>(got.begin(), got.end()).size() == got.size());
    for (FlowRecord* r : got) flow_release(*r, -1);
    for (FlowRecord* r : got) CHECK(r->state.load() == FlowState::free);
    // The free list hands the same records back before the bump allocator grows.
    std::set<FlowRecord*> before(got.begin(), got.end());
    for (int i = 0; i < 100; ++i) {
        FlowRecord* r = flow_alloc();
        CHECK(before.count(r) == 1);
        flow_release(*r, -1);
    }
}

TEST_CASE("a dup'ed flow is finalized by its last reference only") {
    keep_closed_flows(true);
    FlowRecord* r = flow_alloc();
    REQUIRE(r != nullptr);
    r->refs.fetch_add(1);   // what dup() does
    flow_release(*r, -1);
    CHECK(r->state.load() == FlowState::open);
    flow_release(*r, -1);
    CHECK(r->state.load() == FlowState::closed);
    keep_closed_flows(false);
}

TEST_CASE("concurrent alloc and release from many threads keep records exclusive") {
    keep_closed_flows(false);
    constexpr int kThreads = 8, kRounds = 20000;
    std::atomic<int> clashes{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < kRounds; ++i) {
                FlowRecord* r = flow_alloc();
                if (r == nullptr) continue;
                // Each owner stamps the record; a record handed to two owners
                // at once would see the other's stamp.
                r->fd = t;
                for (int k = 0; k < 10; ++k)
                    if (r->fd != t) clashes.fetch_add(1);
                flow_release(*r, -1);
            }
        });
    for (auto& th : ts) th.join();
    CHECK(clashes.load() == 0);
    CHECK(flows_untracked() == 0);
}

TEST_CASE("the policy wins over the program's own TOS, priority and pacing, keeping ECN bits") {
    policy::Decision d;
    d.qos.dscp = 46;
    d.qos.priority = 5;
    d.qos.rate = 1000;
    FlowRecord r;
    r.decision = &d;
    uint64_t out = 0;
    int tos = 0x03;
    REQUIRE(policy_override(r, IPPROTO_IP, IP_TOS, &tos, sizeof tos, out));
    CHECK(out == (46u << 2 | 3));
    REQUIRE(policy_override(r, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos, out));
    CHECK(out == (46u << 2 | 3));
    int prio = 1;
    REQUIRE(policy_override(r, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio, out));
    CHECK(out == 5);
    uint64_t more = 5000, less = 10;
    REQUIRE(policy_override(r, SOL_SOCKET, SO_MAX_PACING_RATE, &more, sizeof more, out));
    CHECK(out == 1000);   // never more than the policy's rate
    REQUIRE(policy_override(r, SOL_SOCKET, SO_MAX_PACING_RATE, &less, sizeof less, out));
    CHECK(out == 10);     // the program may ask for less
    uint32_t unlimited32 = UINT32_MAX;
    REQUIRE(policy_override(r, SOL_SOCKET, SO_MAX_PACING_RATE, &unlimited32, sizeof unlimited32, out));
    CHECK(out == 1000);
    int other = 1;
    CHECK(!policy_override(r, IPPROTO_TCP, 1 /* TCP_NODELAY */, &other, sizeof other, out));
    CHECK(!policy_override(r, IPPROTO_IP, IP_TOS, &tos, 1, out));   // short option: the kernel decides

    policy::Decision none;
    FlowRecord plain;
    plain.decision = &none;
    CHECK(!policy_override(plain, IPPROTO_IP, IP_TOS, &tos, sizeof tos, out));
    CHECK(!policy_override(plain, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio, out));
}
