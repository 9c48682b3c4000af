// Partitions merging (issue 6) on the network simulator: two DT overlays
// started from disjoint bootstrap lists, and one overlay split by a network
// partition that later heals, become one exact Delaunay triangulation once
// their leaders are hinted members of the other side (the owner's job, from
// the overlay server's member list). Hints to itself, to a neighbour, to a
// dead address and a flood of hints stay cheap; malformed probes are dropped.
//
// The figures are printed (grep "dt_merge:" in the test log); the bounds
// asserted are the ones docs/overlay-dt.md states.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "check.h"
#include "tests/sim/sim.h"

using namespace dt_test;
using gs::overlay::Delivery;
using gs::overlay::SendTo;
using gs::overlay::dt::DtConfig;
using gs::overlay::dt::DtNode;
using gs::overlay::dt::kHintBurst;
using gs::overlay::dt::pack;
using gs::overlay::dt::Point;
using gs::sansio::Addr;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;
using gs::sansio::Time;

namespace {

constexpr std::uint64_t kOverlay = 0x6d65726765647421ull;
constexpr Time kHintPeriod = 3 * kSecond;   // how often the owner hints its leader

Addr addr_of(std::size_t i) { return Addr::v4(0x0a010000u + static_cast<std::uint32_t>(i), 7100); }

struct World {
    gs::sim::Simulator sim;
    std::mt19937_64 rng;
    std::vector<std::unique_ptr<DtNode>> nodes;
    std::vector<int> group;   // which side a node was started in (or is cut off in)
    std::set<Point> used;

    // DT_MERGE_SEED=k shifts every seed: the same scenarios on other draws.
    static std::uint64_t shifted(std::uint64_t seed) {
        const char* e = std::getenv("DT_MERGE_SEED");
        return e ? seed + std::strtoull(e, nullptr, 10) * 1000 : seed;
    }
    explicit World(std::uint64_t seed) : sim(shifted(seed)), rng(shifted(seed)) {
        gs::sim::LinkParams p;
        p.delay = 5 * kMillisecond;
        p.jitter = 2 * kMillisecond;
        REQUIRE(sim.set_default_link(p) == 0);
    }
    Point fresh_point() {
        std::uniform_int_distribution<int> d(0, 1'000'000);
        for (;;) {
            Point p{d(rng), d(rng)};
            if (used.insert(p).second) return p;
        }
    }
    // `count` nodes of group `g` joining within `window` from `t0`, each
    // bootstrapping from up to three earlier members of the same group.
    void start_group(int g, std::size_t count, Time t0, Time window) {
        std::vector<std::size_t> mine;
        std::uniform_int_distribution<Time> when(kMillisecond, window);
        std::vector<Time> at(count);
        at[0] = 0;
        for (std::size_t k = 1; k < count; ++k) at[k] = when(rng);
        std::sort(at.begin(), at.end());
        for (std::size_t k = 0; k < count; ++k) {
            const std::size_t i = nodes.size();
            std::vector<Addr> boot;
            for (int tries = 0; tries < 20 && !mine.empty() && boot.size() < 3; ++tries) {
                const Addr a = addr_of(mine[rng() % mine.size()]);
                if (std::find(boot.begin(), boot.end(), a) == boot.end()) boot.push_back(a);
            }
            nodes.push_back(std::make_unique<DtNode>(addr_of(i), kOverlay, pack(fresh_point()), 100 + i, DtConfig{},
                                                     boot));
            group.push_back(g);
            mine.push_back(i);
            DtNode* n = nodes.back().get();
            REQUIRE(sim.add_node(addr_of(i), *n) == 0);
            sim.schedule(t0 + at[k], [this, n] {
                n->join(sim.now());
                sim.kick(*n);
            });
        }
    }
    std::vector<const DtNode*> members(int g = -1) const {
        std::vector<const DtNode*> v;
        for (std::size_t i = 0; i < nodes.size(); ++i)
            if ((g < 0 || group[i] == g) && nodes[i]->joined()) v.push_back(nodes[i].get());
        return v;
    }
    std::size_t count(int g = -1) const {
        std::size_t k = 0;
        for (int x : group) k += (g < 0 || x == g);
        return k;
    }
    // Every node of group g (all: -1) joined with exactly its Delaunay
    // neighbours among group g.
    bool exact(int g = -1) const {
        auto m = members(g);
        return m.size() == count(g) && accuracy(m).all_exact();
    }
    std::vector<std::size_t> leaders() const {
        std::vector<std::size_t> v;
        for (std::size_t i = 0; i < nodes.size(); ++i)
            if (nodes[i]->leader()) v.push_back(i);
        return v;
    }
    // The owner: every kHintPeriod, each node that says it leads gets hinted
    // `per_round` members picked by `pick`.
    void hint_every(Time from, int per_round, std::function<std::size_t(std::size_t)> pick) {
        sim.schedule(from, [this, per_round, pick] {
            for (std::size_t i : leaders()) {
                for (int k = 0; k < per_round; ++k) nodes[i]->hint(addr_of(pick(i)), sim.now());
                sim.kick(*nodes[i]);
            }
            hint_every(sim.now() + kHintPeriod, per_round, pick);
        });
    }
    std::uint64_t control_sent() const {
        std::uint64_t s = 0;
        for (auto& n : nodes) s += n->stats().control_sent;
        return s;
    }
};

// sendToAll from node `src`: how many other members got it, and how many
// more than once.
std::pair<std::size_t, std::size_t> send_all(World& w, std::size_t src) {
    for (auto& n : w.nodes) {
        Delivery d;
        while (n->poll_deliver(d)) {
        }
    }
    const std::vector<std::uint8_t> payload = {0x6d, 0x67, static_cast<std::uint8_t>(src)};
    REQUIRE(w.nodes[src]->send(SendTo::all, payload, w.sim.now()) == 0);
    w.sim.kick(*w.nodes[src]);
    w.sim.run_until(w.sim.now() + 2 * kSecond);
    std::size_t once = 0, twice = 0;
    for (std::size_t i = 0; i < w.nodes.size(); ++i) {
        if (i == src) continue;
        std::size_t got = 0;
        Delivery d;
        while (w.nodes[i]->poll_deliver(d))
            if (d.payload == payload && d.source == w.nodes[src]->address()) ++got;
        once += got >= 1;
        twice += got > 1;
    }
    return {once, twice};
}

void check_one_overlay(World& w) {
    auto m = w.members();
    CHECK(w.leaders().size() == 1);
    for (int r = 0; r < 5; ++r) CHECK(trees_correct(m, m[w.rng() % m.size()]->address()));
    for (int r = 0; r < 3; ++r) {
        const std::size_t src = w.rng() % w.nodes.size();
        auto [once, twice] = send_all(w, src);
        CHECK(once == w.nodes.size() - 1);
        CHECK(twice == 0);
    }
}

}  // namespace

TEST_CASE("two overlays from disjoint bootstrap lists merge into the exact Delaunay triangulation") {
    for (std::uint64_t seed : {1, 2, 3}) {
        CAPTURE(seed);
        World w(seed);
        const std::size_t na = 30 + seed * 7, nb = 60 - seed * 5;
        w.start_group(0, na, 0, 3 * kSecond);
        w.start_group(1, nb, 0, 3 * kSecond);
        REQUIRE(w.sim.run_while([&] { return !(w.exact(0) && w.exact(1)); }, 30 * kSecond, 250 * kMillisecond));
        // Two partitions, one leader each: the maximum of each point set.
        w.sim.run_until(w.sim.now() + 2 * kSecond);
        REQUIRE(w.exact(0));
        REQUIRE(w.exact(1));
        CHECK_FALSE(w.exact());
        auto lead = w.leaders();
        REQUIRE(lead.size() == 2);
        CHECK(w.group[lead[0]] != w.group[lead[1]]);
        // The owner hints each leader one member of the other group, every
        // kHintPeriod while it leads.
        const Time t0 = w.sim.now();
        w.hint_every(t0, 1, [&w](std::size_t i) {
            for (;;) {
                const std::size_t j = w.rng() % w.nodes.size();
                if (w.group[j] != w.group[i]) return j;
            }
        });
        const bool ok = w.sim.run_while([&] { return !w.exact(); }, t0 + 60 * kSecond, 100 * kMillisecond);
        const Time took = w.sim.now() - t0;
        std::uint64_t probes = 0;
        for (auto& n : w.nodes) probes += n->dt_stats().merge_probes_sent;
        std::printf("dt_merge: %zu + %zu nodes from disjoint bootstraps: exact Delaunay of the union %.2f s after "
                    "the first hint (%llu probes)\n",
                    na, nb, took / 1e9, static_cast<unsigned long long>(probes));
        REQUIRE(ok);
        CHECK(took <= 10 * kSecond);   // docs/overlay-dt.md
        w.sim.run_until(w.sim.now() + 3 * kSecond);
        CHECK(w.exact());
        check_one_overlay(w);
        CHECK(w.sim.stats().timer_livelocks == 0);
    }
}

TEST_CASE("an overlay split by a network partition repairs into two, then merges again after the heal") {
    for (std::uint64_t seed : {11, 12}) {
        CAPTURE(seed);
        World w(seed);
        constexpr std::size_t kNodes = 60;
        w.start_group(0, kNodes, 0, 3 * kSecond);
        REQUIRE(w.sim.run_while([&] { return !w.exact(); }, 30 * kSecond, 250 * kMillisecond));
        // Cut: a random half on each side, nothing crosses.
        std::vector<bool> side(kNodes);
        for (std::size_t i = 0; i < kNodes; ++i) side[i] = (w.rng() % 2) != 0;
        std::map<Addr, bool> side_of;
        for (std::size_t i = 0; i < kNodes; ++i) side_of[addr_of(i)] = side[i];
        bool cut = true;
        w.sim.set_link_filter([&](const Addr& a, const Addr& b, Time) {
            if (!cut) return true;
            auto x = side_of.find(a), y = side_of.find(b);
            return x == side_of.end() || y == side_of.end() || x->second == y->second;
        });
        for (std::size_t i = 0; i < kNodes; ++i) w.group[i] = side[i] ? 1 : 0;
        const Time t_cut = w.sim.now();
        // Each side repairs into the exact triangulation of its own members,
        // and stays cut long enough to forget the other (memory: 10 s).
        REQUIRE(w.sim.run_while([&] { return !(w.exact(0) && w.exact(1)); }, t_cut + 40 * kSecond,
                                250 * kMillisecond));
        const Time t_repaired = w.sim.now() - t_cut;
        w.sim.run_until(t_cut + 30 * kSecond);
        REQUIRE(w.exact(0));
        REQUIRE(w.exact(1));
        REQUIRE(w.leaders().size() == 2);
        cut = false;
        // Healed. The owner does not know the partition: each leader is
        // hinted three members of the whole overlay, every kHintPeriod.
        const Time t0 = w.sim.now();
        w.hint_every(t0, 3, [&w](std::size_t) { return static_cast<std::size_t>(w.rng() % w.nodes.size()); });
        const bool ok = w.sim.run_while([&] { return !w.exact(); }, t0 + 60 * kSecond, 100 * kMillisecond);
        const Time took = w.sim.now() - t0;
        std::printf("dt_merge: %zu nodes cut in two (%zu + %zu): each side exact after %.2f s; after the heal, "
                    "exact Delaunay of all %.2f s after the first hint\n",
                    kNodes, w.count(0), w.count(1), t_repaired / 1e9, took / 1e9);
        REQUIRE(ok);
        CHECK(took <= 10 * kSecond);   // docs/overlay-dt.md
        w.sim.run_until(w.sim.now() + 3 * kSecond);
        CHECK(w.exact());
        check_one_overlay(w);
    }
}

TEST_CASE("hints to itself, a neighbour, a same-partition member, a dead address and a flood stay bounded") {
    World w(5);
    w.start_group(0, 20, 0, 2 * kSecond);
    REQUIRE(w.sim.run_while([&] { return !w.exact(); }, 30 * kSecond, 250 * kMillisecond));
    w.sim.run_until(w.sim.now() + 10 * kSecond);   // slow hellos
    auto lead = w.leaders();
    REQUIRE(lead.size() == 1);
    DtNode& l = *w.nodes[lead[0]];
    const auto nbrs_before = l.neighbors();
    const std::size_t known_before = l.known_count();

    // Not a member: nothing.
    DtNode idle(addr_of(999), kOverlay, pack({5, 5}), 9);
    idle.hint(addr_of(0), 0);
    gs::sansio::Datagram d;
    CHECK_FALSE(idle.poll_transmit(d));
    CHECK_FALSE(idle.leader());

    // Itself and a neighbour: nothing sent.
    const auto s0 = l.stats().control_sent;
    l.hint(addr_of(lead[0]), w.sim.now());
    std::size_t nb = 0;
    for (std::size_t i = 0; i < w.nodes.size(); ++i)
        if (std::binary_search(nbrs_before.begin(), nbrs_before.end(), w.nodes[i]->address())) nb = i;
    l.hint(addr_of(nb), w.sim.now());
    CHECK(l.stats().control_sent == s0);
    CHECK(l.dt_stats().hints_ignored == 2);

    // A member of the same partition that is not a neighbour: the probe is
    // routed back toward the leader and stops at the first node that hears
    // it; a few datagrams in all, nothing changes.
    std::size_t far = 0;
    for (std::size_t i = 0; i < w.nodes.size(); ++i)
        if (i != lead[0] && !std::binary_search(nbrs_before.begin(), nbrs_before.end(), w.nodes[i]->address()))
            far = i;
    const Time t = w.sim.now();
    l.hint(addr_of(far), t);
    w.sim.kick(l);
    w.sim.run_until(t + 200 * kMillisecond);
    std::uint64_t dropped = 0, forwarded = 0;
    for (auto& n : w.nodes) {
        dropped += n->dt_stats().merge_probes_dropped;
        forwarded += n->dt_stats().merge_probes_forwarded;
    }
    CHECK(dropped == 1);
    CHECK(forwarded <= 8);
    std::printf("dt_merge: hint of a non-neighbour in the same partition: 1 probe, %llu forwards, dropped once\n",
                static_cast<unsigned long long>(forwarded));
    CHECK(l.dt_stats().merge_probes_answered == 0);

    // An address that does not answer: one probe, no state.
    const auto p0 = l.dt_stats().merge_probes_sent;
    l.hint(Addr::v4(0x0a090909, 7100), w.sim.now());
    w.sim.kick(l);
    CHECK(l.dt_stats().merge_probes_sent == p0 + 1);
    w.sim.run_until(w.sim.now() + 5 * kSecond);
    CHECK(l.known_count() <= known_before);   // hints add no knowledge
    CHECK(l.neighbors() == nbrs_before);

    // A flood: 1,000 hints of random addresses at once cost at most the
    // bucket (kHintBurst probes), then one a second.
    const auto p1 = l.dt_stats().merge_probes_sent;
    for (int k = 0; k < 1000; ++k) l.hint(Addr::v4(0x0b000000u + static_cast<std::uint32_t>(k), 7100), w.sim.now());
    w.sim.kick(l);
    CHECK(l.dt_stats().merge_probes_sent - p1 <= static_cast<std::uint64_t>(kHintBurst));
    const Time f0 = w.sim.now();
    for (int k = 0; k < 1000; ++k) {
        w.sim.run_until(f0 + k * 10 * kMillisecond);
        l.hint(Addr::v4(0x0c000000u + static_cast<std::uint32_t>(k), 7100), w.sim.now());
        w.sim.kick(l);
    }
    const auto flood = l.dt_stats().merge_probes_sent - p1;
    std::printf("dt_merge: 2,000 hints to dead addresses over 10 s: %llu probes sent, %llu limited\n",
                static_cast<unsigned long long>(flood), static_cast<unsigned long long>(l.dt_stats().hints_limited));
    CHECK(flood <= static_cast<std::uint64_t>(kHintBurst) + 11);
    CHECK(l.dt_stats().hints_limited >= 2000 - flood);
    w.sim.run_until(w.sim.now() + 5 * kSecond);
    CHECK(l.known_count() <= known_before);   // hints add no knowledge
    CHECK(w.exact());
}

TEST_CASE("malformed, foreign and stray merge probes are dropped and counted") {
    World w(6);
    w.start_group(0, 4, 0, 500 * kMillisecond);
    REQUIRE(w.sim.run_while([&] { return !w.exact(); }, 20 * kSecond, 100 * kMillisecond));
    DtNode& a = *w.nodes[0];
    auto probe = [](std::uint64_t overlay, std::uint64_t coords, const Addr& at, std::uint8_t ttl) {
        std::vector<std::uint8_t> b = {0x47, 0x53, 1, 1};
        for (int s = 56; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(overlay >> s));
        b.push_back(0x05);
        for (int s = 56; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(coords >> s));
        b.insert(b.end(), at.ip.begin(), at.ip.end());
        b.push_back(static_cast<std::uint8_t>(at.port >> 8));
        b.push_back(static_cast<std::uint8_t>(at.port));
        b.push_back(ttl);
        return b;
    };
    const Addr x = Addr::v4(0x0a090909, 7100);
    const auto good = probe(kOverlay, pack({7, 7}), x, 255);
    REQUIRE(good.size() == gs::overlay::dt::kJoinRequestSize);
    const auto m0 = a.stats().dropped_malformed, f0 = a.stats().dropped_foreign;
    const std::vector<std::uint8_t> shorter(good.begin(), good.end() - 1);
    auto longer = good;
    longer.push_back(0);
    const std::vector<std::vector<std::uint8_t>> malformed = {
        shorter, longer, probe(kOverlay, gs::overlay::kNoAddress, x, 255),
        probe(kOverlay, pack({7, 7}), Addr::v4(0x0a090909, 0), 255)};
    for (auto& b : malformed) a.on_datagram(x, addr_of(0), b, w.sim.now());
    CHECK(a.stats().dropped_malformed == m0 + malformed.size());
    a.on_datagram(x, addr_of(0), probe(kOverlay ^ 1, pack({7, 7}), x, 255), w.sim.now());
    CHECK(a.stats().dropped_foreign == f0 + 1);
    // A node that is not a member drops even a good one.
    DtNode idle(addr_of(999), kOverlay, pack({5, 5}), 9);
    idle.on_datagram(x, addr_of(999), good, 0);
    CHECK(idle.dt_stats().dropped_not_member == 1);
    // A probe that claims a member's own position (a clash) or comes back to
    // the prober is dropped, not answered.
    const auto d0 = a.dt_stats().merge_probes_dropped;
    a.on_datagram(x, addr_of(0), probe(kOverlay, a.address(), x, 255), w.sim.now());
    a.on_datagram(x, addr_of(0), probe(kOverlay, a.address(), addr_of(0), 255), w.sim.now());
    CHECK(a.dt_stats().merge_probes_dropped == d0 + 2);
    CHECK(a.dt_stats().merge_probes_answered == 0);
    // TTL 1 is not forwarded.
    const auto t0 = a.dt_stats().dropped_ttl;
    // Just beside each other member: a has a neighbour closer to it.
    for (int k = 0; k < 4; ++k) {
        const Point p = gs::overlay::dt::unpack(w.nodes[static_cast<std::size_t>(k)]->address());
        if (k == 0) continue;
        a.on_datagram(x, addr_of(0), probe(kOverlay, pack({p.x + 1, p.y}), x, 1), w.sim.now());
    }
    CHECK(a.dt_stats().dropped_ttl > t0);
    w.sim.run_until(w.sim.now() + 5 * kSecond);
    CHECK(w.exact());
}
