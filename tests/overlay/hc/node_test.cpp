// HcNode driven by hand: a tiny in-test network (fixed 1 ms delay, FIFO, no
// loss unless asked) delivers datagrams between a few nodes.
#include <doctest/doctest.h>

#include <cerrno>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include "core/overlay/hc/hc_node.h"
#include "core/overlay/hc/wire.h"
#include "tests/overlay/hc/hc_check.h"

using namespace gs::overlay;
using namespace gs::overlay::hc;
using gs::sansio::Datagram;
using gs::sansio::kMillisecond;
using gs::sansio::kNever;
using gs::sansio::kSecond;

namespace {

constexpr std::uint64_t kOverlay = 0xabcdef;

Addr addr_of(int i) { return Addr::v4(0x0a000000u + static_cast<std::uint32_t>(i), 9000); }

struct MiniNet {
    Time now = 0;
    Time delay = 1 * kMillisecond;
    std::vector<std::unique_ptr<HcNode>> nodes;
    std::set<int> down;                       // crashed or left: no input
    std::deque<std::pair<Time, Datagram>> wire;
    std::function<bool(const Datagram&)> drop;   // optional loss
    std::map<Addr, int> index;

    HcNode& add(int i, std::vector<Addr> boot, HcConfig cfg = {}) {
        nodes.push_back(std::make_unique<HcNode>(addr_of(i), kOverlay, 1000 + i, cfg, std::move(boot)));
        index[addr_of(i)] = i;
        return *nodes.back();
    }
    void drain(HcNode& n) {
        Datagram d;
        while (n.poll_transmit(d))
            if (!drop || !drop(d)) wire.emplace_back(now + delay, std::move(d));
    }
    void run_for(Time dt) {
        const Time end = now + dt;
        for (std::size_t i = 0; i < nodes.size(); ++i)   // what the test made them send
            if (!down.count(int(i))) drain(*nodes[i]);
        for (;;) {
            Time t = wire.empty() ? kNever : wire.front().first;
            for (std::size_t i = 0; i < nodes.size(); ++i)
                if (!down.count(int(i))) t = std::min(t, nodes[i]->next_timeout());
            if (t > end) break;
            now = std::max(now, t);
            if (!wire.empty() && wire.front().first <= now) {
                Datagram d = std::move(wire.front().second);
                wire.pop_front();
                auto it = index.find(d.to);
                if (it == index.end() || down.count(it->second)) continue;
                HcNode& n = *nodes[it->second];
                n.on_datagram(d.from, d.to, d.bytes, now);
                drain(n);
                continue;
            }
            for (std::size_t i = 0; i < nodes.size(); ++i) {
                if (down.count(int(i)) || nodes[i]->next_timeout() > now) continue;
                nodes[i]->on_timeout(now);
                drain(*nodes[i]);
            }
        }
        now = end;
    }
    std::vector<HcNode*> live() {
        std::vector<HcNode*> v;
        for (std::size_t i = 0; i < nodes.size(); ++i)
            if (!down.count(int(i))) v.push_back(nodes[i].get());
        return v;
    }
    // Joins nodes 0..count-1, each through node 0, one every 50 ms.
    void build(int count) {
        for (int i = 0; i < count; ++i) {
            HcNode& n = add(i, i == 0 ? std::vector<Addr>{} : std::vector<Addr>{addr_of(0)});
            n.join(now);
            drain(n);
            run_for(50 * kMillisecond);
        }
    }
    // Drains every node's deliveries: (receiver index, source label, payload).
    std::vector<std::tuple<int, LogicalAddress, std::string>> deliveries() {
        std::vector<std::tuple<int, LogicalAddress, std::string>> out;
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            Delivery d;
            while (nodes[i]->poll_deliver(d))
                out.emplace_back(int(i), d.source, std::string(d.payload.begin(), d.payload.end()));
        }
        return out;
    }
};

std::span<const std::uint8_t> bytes(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST_CASE("the first member takes label 0 and is head") {
    MiniNet net;
    HcNode& a = net.add(0, {});
    CHECK_FALSE(a.joined());
    CHECK(a.send(SendTo::all, bytes("x"), 0) == -ENOTCONN);
    a.join(0);
    CHECK(a.joined());
    CHECK(a.address() == 0);
    CHECK(a.is_head());
    CHECK(a.view().n == 1);
    CHECK(a.neighbors().empty());
    CHECK_FALSE(a.parent(kNoAddress).has_value());
    CHECK(a.send(SendTo::parent, bytes("x"), 0) == -EHOSTUNREACH);
    std::vector<std::uint8_t> big(1201, 1);
    CHECK(a.send(SendTo::all, big, 0) == -EINVAL);
    CHECK(a.send(SendTo::node, bytes("x"), 0, kNoAddress, 5) == -EINVAL);
}

TEST_CASE("eight joiners build a compact consistent cube") {
    MiniNet net;
    net.build(8);
    net.run_for(3 * kSecond);
    CHECK(hctest::cube_problem(net.live(), 8) == "");
    // joins are handed out in order: the i-th joiner holds gray(i)
    for (int i = 0; i < 8; ++i) CHECK(net.nodes[i]->address() == gray(i));
    CHECK(net.nodes[7]->is_head());
    std::uint64_t admitted = 0;
    for (auto* n : net.live()) admitted += n->hc_stats().joins_admitted;
    CHECK(admitted == 7);
}

TEST_CASE("sendToAll, sendToNode, parent, children and neighbours deliver exactly once") {
    MiniNet net;
    net.build(11);
    net.run_for(3 * kSecond);
    REQUIRE(hctest::cube_problem(net.live(), 11) == "");
    for (int s = 0; s < 11; ++s) {
        REQUIRE(net.nodes[s]->send(SendTo::all, bytes("all" + std::to_string(s)), net.now) == 0);
        net.run_for(100 * kMillisecond);
        auto got = net.deliveries();
        CHECK(got.size() == 10);
        std::set<int> receivers;
        for (auto& [r, src, p] : got) {
            CHECK(src == net.nodes[s]->address());
            CHECK(p == "all" + std::to_string(s));
            receivers.insert(r);
        }
        CHECK(receivers.size() == 10);
        CHECK_FALSE(receivers.count(s));
    }
    for (int s = 0; s < 11; ++s)
        for (int t = 0; t < 11; ++t) {
            REQUIRE(net.nodes[s]->send(SendTo::node, bytes("n"), net.now, kNoAddress,
                                       net.nodes[t]->address()) == 0);
            net.run_for(20 * kMillisecond);
            auto got = net.deliveries();
            REQUIRE(got.size() == 1);
            CHECK(std::get<0>(got[0]) == t);
        }
    // parent / children toward root label 5 are one hop each, and agree
    const LogicalAddress root = gray(5);
    for (int s = 0; s < 11; ++s) {
        auto p = net.nodes[s]->parent(root);
        if (net.nodes[s]->address() == root) {
            CHECK_FALSE(p.has_value());
            continue;
        }
        REQUIRE(p.has_value());
        REQUIRE(net.nodes[s]->send(SendTo::parent, bytes("up"), net.now, root) == 0);
        net.run_for(10 * kMillisecond);
        auto got = net.deliveries();
        REQUIRE(got.size() == 1);
        CHECK(net.nodes[std::get<0>(got[0])]->address() == *p);
        auto kids = net.nodes[std::get<0>(got[0])]->children(root);
        CHECK(std::count(kids.begin(), kids.end(), net.nodes[s]->address()) == 1);
    }
    REQUIRE(net.nodes[3]->send(SendTo::neighbors, bytes("nb"), net.now) == 0);
    net.run_for(10 * kMillisecond);
    CHECK(net.deliveries().size() == net.nodes[3]->neighbors().size());
    for (auto* n : net.live()) CHECK(n->stats().dropped_duplicate == 0);
}

TEST_CASE("graceful leave, crash and head crash are repaired to a compact cube") {
    MiniNet net;
    net.build(12);
    net.run_for(3 * kSecond);
    REQUIRE(hctest::cube_problem(net.live(), 12) == "");

    SUBCASE("a member in the middle leaves: no timeout needed") {
        net.nodes[4]->leave(net.now);
        net.drain(*net.nodes[4]);
        net.down.insert(4);
        net.run_for(1 * kSecond);
        CHECK(hctest::cube_problem(net.live(), 11) == "");
        CHECK(net.nodes[11]->address() == gray(4));   // the head moved into the hole
    }
    SUBCASE("the head leaves") {
        net.nodes[11]->leave(net.now);
        net.drain(*net.nodes[11]);
        net.down.insert(11);
        net.run_for(1 * kSecond);
        CHECK(hctest::cube_problem(net.live(), 11) == "");
        CHECK(net.nodes[10]->is_head());
    }
    SUBCASE("a member crashes") {
        net.down.insert(2);
        net.run_for(8 * kSecond);
        CHECK(hctest::cube_problem(net.live(), 11) == "");
    }
    SUBCASE("the head crashes: the next label takes over") {
        net.down.insert(11);
        net.run_for(12 * kSecond);
        CHECK(hctest::cube_problem(net.live(), 11) == "");
        CHECK(net.nodes[10]->hc_stats().takeovers == 1);
    }
    SUBCASE("three members crash at once, the head among them") {
        net.down.insert(11);
        net.down.insert(0);
        net.down.insert(6);
        net.run_for(20 * kSecond);
        CHECK(hctest::cube_problem(net.live(), 9) == "");
    }
    // everyone still reaches everyone
    auto live = net.live();
    for (auto* s : live) {
        REQUIRE(s->send(SendTo::all, bytes("after"), net.now) == 0);
        net.run_for(50 * kMillisecond);
        CHECK(net.deliveries().size() == live.size() - 1);
    }
}

TEST_CASE("a crashed member that restarts rejoins with a new label") {
    MiniNet net;
    net.build(6);
    net.run_for(3 * kSecond);
    net.down.insert(2);
    net.run_for(8 * kSecond);
    REQUIRE(hctest::cube_problem(net.live(), 5) == "");
    // restart at the same address: a fresh node object
    net.nodes[2] = std::make_unique<HcNode>(addr_of(2), kOverlay, 77, HcConfig{},
                                            std::vector<Addr>{addr_of(0)});
    net.down.erase(2);
    net.nodes[2]->join(net.now);
    net.drain(*net.nodes[2]);
    net.run_for(4 * kSecond);
    CHECK(hctest::cube_problem(net.live(), 6) == "");
}

TEST_CASE("malformed, foreign and hostile datagrams are counted and bounded") {
    MiniNet net;
    net.build(3);
    net.run_for(2 * kSecond);
    REQUIRE(hctest::cube_problem(net.live(), 3) == "");
    HcNode& a = *net.nodes[1];
    const Addr evil = Addr::v4(0x0b000001, 666);
    std::vector<std::uint8_t> junk = {1, 2, 3};
    a.on_datagram(evil, a.self(), junk, net.now);
    CHECK(a.stats().dropped_malformed == 1);
    std::vector<std::uint8_t> buf;
    encode(Leave{0}, kOverlay + 1, buf);
    a.on_datagram(evil, a.self(), buf, net.now);
    CHECK(a.stats().dropped_foreign == 1);
    // a spoofed leave from the wrong address changes nothing
    encode(Leave{a.neighbors().front() == 0 ? 0u : static_cast<Label>(a.neighbors().front())}, kOverlay, buf);
    a.on_datagram(evil, a.self(), buf, net.now);
    CHECK(a.hc_stats().dropped_unexpected >= 1);

    // a flood of data from 100k made-up sources: dedup table and the delivery
    // queue stay at their caps
    static const std::uint8_t pl[] = {1};
    for (std::uint32_t i = 0; i < 100000; ++i) {
        Data d;
        d.src = i % kMaxMembers;
        d.incarnation = i;
        d.root = 0;
        d.kind = Kind::hop;
        d.seq = i;
        d.ttl = 1;
        d.payload = pl;
        encode(d, kOverlay, buf);
        a.on_datagram(evil, a.self(), buf, net.now);
    }
    Delivery dl;
    std::size_t queued = 0;
    while (a.poll_deliver(dl)) ++queued;
    CHECK(queued == HcConfig{}.max_queue);
    CHECK(a.hc_stats().dropped_queue == 100000 - HcConfig{}.max_queue);
    // and the cube is still fine
    net.run_for(2 * kSecond);
    CHECK(hctest::cube_problem(net.live(), 3) == "");
}
