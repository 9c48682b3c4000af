// The DT protocol driven by hand (mini_net.h): joins, convergence on small
// overlays, the send kinds, leave, strict parsing.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <set>

#include "check.h"
#include "mini_net.h"

using namespace dt_test;
using gs::overlay::Delivery;
using gs::overlay::kNoAddress;
using gs::overlay::SendTo;
using gs::overlay::dt::pack;
using gs::overlay::dt::unpack;

namespace {

std::vector<const DtNode*> members(const MiniNet& net) {
    std::vector<const DtNode*> v;
    for (auto& [a, n] : net.by_addr)
        if (n->joined()) v.push_back(n);
    return v;
}

std::vector<std::uint8_t> prefix(std::uint8_t type, std::uint64_t overlay = kOverlay) {
    std::vector<std::uint8_t> b = {0x47, 0x53, 1, 1};
    for (int s = 56; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(overlay >> s));
    b.push_back(type);
    return b;
}
void put64(std::vector<std::uint8_t>& b, std::uint64_t v) {
    for (int s = 56; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}

std::size_t drain_deliveries(DtNode& n, std::vector<Delivery>* out = nullptr) {
    Delivery d;
    std::size_t k = 0;
    while (n.poll_deliver(d)) {
        ++k;
        if (out) out->push_back(d);
    }
    return k;
}

}  // namespace

TEST_CASE("the first member is alone and joined; sends need membership") {
    MiniNet net;
    auto& a = net.add({0, 0}, {});
    const std::uint8_t x[3] = {1, 2, 3};
    CHECK(a.send(SendTo::all, x, 0) == -ENOTCONN);
    CHECK_FALSE(a.joined());
    CHECK(a.address() == kNoAddress);
    a.join(0);
    CHECK(a.joined());
    CHECK(a.address() == pack({0, 0}));
    CHECK(a.neighbors().empty());
    CHECK(a.send(SendTo::all, x, 0) == 0);
    CHECK(a.send(SendTo::parent, x, 0) == -EHOSTUNREACH);   // parent of the root itself
    std::vector<std::uint8_t> big(2000);
    CHECK(a.send(SendTo::all, big, 0) == -EINVAL);
    CHECK(a.send(SendTo::node, x, 0, kNoAddress, kNoAddress) == -EINVAL);
    CHECK(a.send(SendTo::node, x, 0, kNoAddress, pack({0, 0})) == 0);   // to itself
    CHECK(drain_deliveries(a) == 1);
    // (-1, -1) is kNoAddress: not a valid position.
    DtNode bad(addr_of(99), kOverlay, pack({-1, -1}), 1);
    CHECK_FALSE(bad.valid());
    bad.join(0);
    CHECK_FALSE(bad.joined());
}

TEST_CASE("two and three nodes find each other; trees and one-hop sends") {
    MiniNet net;
    auto& a = net.add({0, 0}, {});
    a.join(0);
    auto& b = net.add({100, 0}, {a.underlay()});
    b.join(0);
    net.drain(b);
    net.run(2 * kSecond);
    REQUIRE(b.joined());
    CHECK(a.neighbors() == std::vector<LogicalAddress>{pack({100, 0})});
    CHECK(b.neighbors() == std::vector<LogicalAddress>{pack({0, 0})});
    auto& c = net.add({50, 80}, {b.underlay()});
    c.join(net.now);
    net.drain(c);
    net.run(5 * kSecond);
    auto m = members(net);
    REQUIRE(m.size() == 3);
    CHECK(accuracy(m).all_exact());
    for (auto* n : m) CHECK(trees_correct(m, n->address()));
    CHECK(a.parent(pack({100, 0})) == pack({100, 0}));
    CHECK(a.children(pack({0, 0})).size() == 2);
    const std::uint8_t x[2] = {7, 8};
    CHECK(b.send(SendTo::parent, x, net.now, pack({0, 0})) == 0);
    CHECK(c.send(SendTo::neighbors, x, net.now) == 0);
    CHECK(a.send(SendTo::children, x, net.now) == 0);
    net.drain(a);
    net.drain(b);
    net.drain(c);
    net.run(net.now + 100 * kMillisecond);
    std::vector<Delivery> da, db, dc;
    drain_deliveries(a, &da);
    drain_deliveries(b, &db);
    drain_deliveries(c, &dc);
    CHECK(da.size() == 2);   // b's to-parent, c's to-neighbours
    CHECK(db.size() == 2);   // c's to-neighbours, a's to-children
    CHECK(dc.size() == 1);   // a's to-children
    CHECK(dc[0].source == pack({0, 0}));
    CHECK(dc[0].payload == std::vector<std::uint8_t>{7, 8});
    // Collinear: three on a line form a path.
    MiniNet line;
    auto& p = line.add({0, 0}, {});
    p.join(0);
    for (int i = 1; i <= 4; ++i) {
        auto& q = line.add({i * 10, i * 10}, {p.underlay()});
        q.join(0);
        line.drain(q);
    }
    line.run(10 * kSecond);
    auto lm = members(line);
    REQUIRE(lm.size() == 5);
    CHECK(accuracy(lm).all_exact());
    CHECK(p.neighbors() == std::vector<LogicalAddress>{pack({10, 10})});
}

TEST_CASE("60 nodes joining at once through one member converge to the Delaunay triangulation") {
    for (int box : {10, 1000, 1 << 30}) {   // a small box: many collinear and co-circular points
        CAPTURE(box);
        MiniNet net;
        std::mt19937_64 rng(box);
        std::uniform_int_distribution<int> d(-box, box);
        std::set<Point> used;
        auto& first = net.add({0, 0}, {});
        used.insert({0, 0});
        first.join(0);
        while (net.nodes.size() < 60) {
            Point p{d(rng), d(rng)};
            if (p == Point{-1, -1} || !used.insert(p).second) continue;
            auto& n = net.add(p, {first.underlay()});
            n.join(0);
            net.drain(n);
        }
        net.run(30 * kSecond);
        auto m = members(net);
        REQUIRE(m.size() == 60);
        auto acc = accuracy(m);
        CHECK(acc.exact == 60);
        CHECK(acc.missing == 0);
        CHECK(acc.extra == 0);
        for (auto* n : m) {
            CHECK(n->stable());
            CHECK(trees_correct(m, n->address()));
        }
        // sendToAll from every member: everyone else gets it once.
        for (auto& n : net.nodes) CHECK(n->send(SendTo::all, std::vector<std::uint8_t>{1}, net.now) == 0);
        for (auto& n : net.nodes) net.drain(*n);
        net.run(net.now + kSecond);
        for (auto& n : net.nodes) {
            std::vector<Delivery> got;
            drain_deliveries(*n, &got);
            std::set<LogicalAddress> src;
            for (auto& g : got) src.insert(g.source);
            CHECK(got.size() == 59);
            CHECK(src.size() == 59);
            CHECK(n->stats().dropped_duplicate == 0);
        }
        // sendToNode: greedy routing reaches any member.
        std::uniform_int_distribution<std::size_t> pick(0, 59);
        for (int i = 0; i < 50; ++i) {
            auto& s = *net.nodes[pick(rng)];
            auto& t = *net.nodes[pick(rng)];
            CHECK(s.send(SendTo::node, std::vector<std::uint8_t>{9}, net.now, kNoAddress, t.address()) == 0);
            net.drain(s);
            net.run(net.now + kSecond);
            std::vector<Delivery> got;
            drain_deliveries(t, &got);
            REQUIRE(got.size() == 1);
            CHECK(got[0].source == s.address());
        }
    }
}

TEST_CASE("a graceful leave is repaired before any timeout") {
    MiniNet net;
    std::mt19937_64 rng(5);
    std::uniform_int_distribution<int> d(0, 100000);
    auto& first = net.add({50000, 50000}, {});
    first.join(0);
    for (int i = 1; i < 40; ++i) {
        auto& n = net.add({d(rng), d(rng)}, {first.underlay()});
        n.join(0);
        net.drain(n);
    }
    net.run(20 * kSecond);
    REQUIRE(accuracy(members(net)).all_exact());
    // The first member (the bootstrap) and two more leave.
    for (std::size_t i : {0u, 7u, 20u}) {
        net.nodes[i]->leave(net.now);
        net.drain(*net.nodes[i]);
        CHECK_FALSE(net.nodes[i]->joined());
        net.remove(*net.nodes[i]);
    }
    // Well within neighbor_timeout (4 s): Goodbyes, not timeouts, repair it.
    net.run(net.now + 2 * kSecond);
    auto m = members(net);
    REQUIRE(m.size() == 37);
    CHECK(accuracy(m).all_exact());
    std::uint64_t byes = 0;
    for (auto* n : m) byes += n->dt_stats().goodbyes_received;
    CHECK(byes > 0);
}

TEST_CASE("malformed and foreign datagrams are dropped and counted, state unchanged") {
    MiniNet net;
    auto& a = net.add({0, 0}, {});
    a.join(0);
    auto& b = net.add({10, 0}, {a.underlay()});
    b.join(0);
    net.drain(b);
    net.run(3 * kSecond);
    REQUIRE(a.neighbors().size() == 1);
    const auto before = a.neighbors();
    const Addr from = addr_of(500);
    auto feed = [&](std::vector<std::uint8_t> m) { a.on_datagram(from, a.underlay(), m, net.now); };

    struct Case {
        const char* name;
        std::vector<std::uint8_t> bytes;
        bool foreign;
    };
    std::vector<Case> cases;
    cases.push_back({"empty", {}, false});
    cases.push_back({"short prefix", {0x47, 0x53, 1}, false});
    cases.push_back({"bad magic", [] { auto b = prefix(1); b[0] = 0; return b; }(), true});
    cases.push_back({"bad version", [] { auto b = prefix(1); b[2] = 2; return b; }(), true});
    cases.push_back({"HC protocol", [] { auto b = prefix(1); b[3] = 2; return b; }(), true});
    cases.push_back({"other overlay", prefix(1, 42), true});
    cases.push_back({"unknown type", prefix(0x05), false});
    cases.push_back({"hello truncated", [] { auto b = prefix(1); put64(b, 77); return b; }(), false});
    cases.push_back({"hello count beyond size", [] { auto b = prefix(1); put64(b, 77); b.push_back(1); b.push_back(3); return b; }(), false});
    cases.push_back({"hello count over limit", [] { auto b = prefix(1); put64(b, 77); b.push_back(1); b.push_back(49);
                                                    b.resize(b.size() + 49 * 26, 1); return b; }(), false});
    cases.push_back({"hello reserved flags", [] { auto b = prefix(1); put64(b, 77); b.push_back(0x80); b.push_back(0); return b; }(), false});
    cases.push_back({"hello from no address", [] { auto b = prefix(1); put64(b, kNoAddress); b.push_back(1); b.push_back(0); return b; }(), false});
    cases.push_back({"hello from our own position", [] { auto b = prefix(1); put64(b, 0); b.push_back(1); b.push_back(0); return b; }(), false});
    cases.push_back({"hello with port 0 entry", [] { auto b = prefix(1); put64(b, 77); b.push_back(1); b.push_back(1);
                                                     put64(b, 78); b.resize(b.size() + 18, 0); return b; }(), false});
    cases.push_back({"hello with a duplicate entry", [] { auto b = prefix(1); put64(b, 77); b.push_back(1); b.push_back(2);
                                                          for (int i = 0; i < 2; ++i) { put64(b, 78); b.resize(b.size() + 18, 1); }
                                                          return b; }(), false});
    cases.push_back({"join request short", [] { auto b = prefix(2); put64(b, 77); return b; }(), false});
    cases.push_back({"goodbye long", [] { auto b = prefix(4); put64(b, 77); b.push_back(0); return b; }(), false});
    cases.push_back({"data short", [] { auto b = prefix(0x80); b.resize(30); return b; }(), false});
    cases.push_back({"data bad kind", [] { auto b = prefix(0x80); b.push_back(9); b.push_back(5); put64(b, 77); put64(b, 77);
                                           put64(b, kNoAddress); b.resize(b.size() + 10, 0); return b; }(), false});
    cases.push_back({"data length mismatch", [] { auto b = prefix(0x80); b.push_back(0); b.push_back(5); put64(b, 77); put64(b, 77);
                                                  put64(b, kNoAddress); b.resize(b.size() + 8, 0); b.push_back(0); b.push_back(5); return b; }(), false});
    cases.push_back({"data to node without destination", [] { auto b = prefix(0x80); b.push_back(4); b.push_back(5); put64(b, 77); put64(b, 77);
                                                              put64(b, kNoAddress); b.resize(b.size() + 10, 0); return b; }(), false});
    for (const auto& c : cases) {
        CAPTURE(c.name);
        const auto s0 = a.stats();
        feed(c.bytes);
        const auto s1 = a.stats();
        if (c.foreign) {
            CHECK(s1.dropped_foreign == s0.dropped_foreign + 1);
            CHECK(s1.dropped_malformed == s0.dropped_malformed);
        } else {
            CHECK(s1.dropped_malformed == s0.dropped_malformed + 1);
            CHECK(s1.dropped_foreign == s0.dropped_foreign);
        }
        CHECK(a.neighbors() == before);
        CHECK(s1.delivered == s0.delivered);
    }
    // A spoofed Goodbye (wrong source address) is ignored.
    auto bye = prefix(4);
    put64(bye, pack({10, 0}));
    feed(bye);
    CHECK(a.neighbors() == before);
    CHECK(a.dt_stats().goodbyes_received == 0);
    // A replayed data message is a duplicate.
    auto data = prefix(0x80);
    data.push_back(2);   // children
    data.push_back(5);
    put64(data, pack({10, 0}));
    put64(data, pack({10, 0}));
    put64(data, kNoAddress);
    for (int i = 0; i < 8; ++i) data.push_back(0);
    data.push_back(0);
    data.push_back(1);
    data.push_back(0xaa);
    feed(data);
    feed(data);
    CHECK(drain_deliveries(a) == 1);
    CHECK(a.stats().dropped_duplicate == 1);
}

TEST_CASE("knowledge stays bounded whatever a peer claims") {
    MiniNet net;
    auto& a = net.add({0, 0}, {});
    a.join(0);
    // Hellos from 2000 made-up senders, each listing 48 made-up nodes.
    for (std::uint32_t s = 0; s < 2000; ++s) {
        auto b = prefix(1);
        put64(b, pack({static_cast<int>(s) + 1, 5}));
        b.push_back(1);
        b.push_back(48);
        for (std::uint32_t i = 0; i < 48; ++i) {
            put64(b, pack({static_cast<int>(s * 100 + i), -7}));
            auto ad = addr_of(s * 48 + i);
            b.insert(b.end(), ad.ip.begin(), ad.ip.end());
            b.push_back(static_cast<std::uint8_t>(ad.port >> 8));
            b.push_back(static_cast<std::uint8_t>(ad.port));
        }
        a.on_datagram(addr_of(s), a.underlay(), b, 0);
    }
    CHECK(a.known_count() <= gs::overlay::dt::kMaxKnown);
    CHECK(a.dt_stats().hellos_received == 2000);
    Datagram d;
    std::size_t out = 0;
    while (a.poll_transmit(d)) ++out;
    CHECK(out <= gs::overlay::dt::kMaxTransmits);
}

// The seed-23 split of bench/overlay_sim: a member whose star had just
// changed (no confirmed neighbour yet) answered a JoinRequest as if it were
// the node closest to the joiner; the joiner got a far node it soon dropped
// and formed, with later joiners, a second triangulation. A member must
// route the request on through its star, confirmed or not.
TEST_CASE("a member with no confirmed neighbour forwards a join toward a closer star member") {
    MiniNet net;
    auto& m = net.add({0, 0}, {});
    m.join(0);
    REQUIRE(m.joined());
    const Point k{-1000, 0}, s{1000, 0}, j{1100, 10};
    const Addr s_addr = addr_of(2), j_addr = addr_of(3);
    auto put_addr = [](std::vector<std::uint8_t>& b, const Addr& a) {
        b.insert(b.end(), a.ip.begin(), a.ip.end());
        b.push_back(static_cast<std::uint8_t>(a.port >> 8));
        b.push_back(static_cast<std::uint8_t>(a.port));
    };
    // K does not take M for a neighbour (flag 0) and lists S: M's star is
    // {K, S}, and neither is a confirmed neighbour.
    auto hello = prefix(1);
    put64(hello, pack(k));
    hello.push_back(0);
    hello.push_back(1);
    put64(hello, pack(s));
    put_addr(hello, s_addr);
    m.on_datagram(addr_of(1), m.underlay(), hello, 0);
    REQUIRE(m.desired() == std::vector<LogicalAddress>{std::min(pack(k), pack(s)), std::max(pack(k), pack(s))});
    REQUIRE(m.neighbors().empty());
    Datagram d;
    while (m.poll_transmit(d)) {}
    // J, next to S, asks M.
    auto req = prefix(2);
    put64(req, pack(j));
    put_addr(req, j_addr);
    req.push_back(255);
    m.on_datagram(j_addr, m.underlay(), req, 1 * kMillisecond);
    CHECK(m.dt_stats().joins_answered == 0);
    CHECK(m.dt_stats().join_requests_forwarded == 1);
    std::size_t to_s = 0, to_j = 0;
    while (m.poll_transmit(d)) {
        to_j += d.to == j_addr;
        if (d.to == s_addr) {
            ++to_s;
            REQUIRE(d.bytes.size() == req.size());
            CHECK(d.bytes[12] == 2);                        // the JoinRequest itself
            CHECK(std::equal(d.bytes.begin() + 13, d.bytes.end() - 1, req.begin() + 13));
            CHECK(d.bytes.back() == 254);                   // one hop spent
        }
    }
    CHECK(to_s == 1);
    CHECK(to_j == 0);                                       // M does not claim J
}

// The other side of the rule: a member whose star holds nothing closer to
// the joiner than itself answers, confirmed neighbours or not (the first
// member is alone).
TEST_CASE("a member with no star member closer to the joiner answers it") {
    MiniNet net;
    auto& m = net.add({0, 0}, {});
    m.join(0);
    auto req = prefix(2);
    put64(req, pack({-50, 3}));
    const Addr j_addr = addr_of(3);
    req.insert(req.end(), j_addr.ip.begin(), j_addr.ip.end());
    req.push_back(static_cast<std::uint8_t>(j_addr.port >> 8));
    req.push_back(static_cast<std::uint8_t>(j_addr.port));
    req.push_back(255);
    m.on_datagram(j_addr, m.underlay(), req, 0);
    CHECK(m.dt_stats().joins_answered == 1);
    CHECK(m.dt_stats().join_requests_forwarded == 0);
    Datagram d;
    std::size_t hellos_to_j = 0;
    while (m.poll_transmit(d)) hellos_to_j += d.to == j_addr && d.bytes[12] == 1;
    CHECK(hellos_to_j == 1);
}
