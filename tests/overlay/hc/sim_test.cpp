// HC on the network simulator (tests/sim): 1,000 nodes joining, sendToAll,
// trees for random roots, churn (10% leave, 10% crash, all rejoin), 2% loss.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "core/overlay/hc/hc_node.h"
#include "tests/overlay/hc/hc_check.h"
#include "tests/sim/scale.h"
#include "tests/sim/sim.h"

using namespace gs::overlay;
using namespace gs::overlay::hc;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;

namespace {

constexpr std::uint64_t kOverlay = 0x4843'5445'5354ull;

Addr addr_of(int i) {
    return Addr::v4(0x0a000000u + static_cast<std::uint32_t>(i), 9000);
}

struct Cluster {
    gs::sim::Simulator sim;
    std::mt19937_64 rng;
    std::vector<std::unique_ptr<HcNode>> nodes;
    std::vector<bool> up;
    std::uint64_t seeds = 1;

    // HC_SIM_SEED (optional) shifts every seed: the same scenarios on other draws.
    static std::uint64_t shifted(std::uint64_t seed) {
        const char* e = std::getenv("HC_SIM_SEED");
        return e ? seed + std::strtoull(e, nullptr, 10) * 1000 : seed;
    }
    Cluster(int count, std::uint64_t seed, double loss) : sim(shifted(seed)), rng(shifted(seed)) {
        gs::sim::LinkParams p;
        p.delay = 5 * kMillisecond;
        p.jitter = 2 * kMillisecond;
        p.loss = loss;
        REQUIRE(sim.set_default_link(p) == 0);
        nodes.resize(count);
        up.assign(count, false);
    }

    // (Re)starts node i as a fresh object that joins through up to three
    // random members that are up (none: it is the first member).
    void start(int i) {
        std::vector<Addr> boot;
        std::vector<int> cand;
        for (std::size_t j = 0; j < nodes.size(); ++j)
            if (up[j] && nodes[j]->joined()) cand.push_back(int(j));
        for (int k = 0; k < 3 && !cand.empty(); ++k) boot.push_back(addr_of(cand[rng() % cand.size()]));
        if (boot.empty() && i != 0)
            for (std::size_t j = 0; j < nodes.size(); ++j)
                if (up[j]) boot.push_back(addr_of(int(j)));
        nodes[i] = std::make_unique<HcNode>(addr_of(i), kOverlay, seeds++, HcConfig{}, boot);
        REQUIRE(sim.add_node(addr_of(i), *nodes[i]) == 0);
        up[i] = true;
        nodes[i]->join(sim.now());
        sim.kick(*nodes[i]);
    }
    void crash(int i) {
        REQUIRE(sim.remove_node(*nodes[i]) == 0);
        up[i] = false;
    }
    void leave(int i) {
        nodes[i]->leave(sim.now());
        sim.kick(*nodes[i]);   // sends the leave messages
        REQUIRE(sim.remove_node(*nodes[i]) == 0);
        up[i] = false;
    }
    std::vector<HcNode*> live() {
        std::vector<HcNode*> v;
        for (std::size_t i = 0; i < nodes.size(); ++i)
            if (up[i]) v.push_back(nodes[i].get());
        return v;
    }
    std::size_t live_count() const {
        std::size_t c = 0;
        for (bool u : up) c += u ? 1 : 0;
        return c;
    }
    // Runs until the cube is converged with `n` members; returns the time it
    // took, or -1 at the deadline (and prints the last problem).
    Time converge(std::size_t n, Time limit) {
        const Time start = sim.now();
        std::string problem = "not checked";
        bool ok = sim.run_while(
            [&] {
                problem = hctest::cube_problem(live(), n);
                return !problem.empty();
            },
            start + limit, 250 * kMillisecond);
        if (!ok) {
            MESSAGE("not converged: " << problem);
            HcStats t;
            for (auto* x : live()) {
                const auto& h = x->hc_stats();
                t.joins_admitted += h.joins_admitted; t.fills += h.fills; t.shrinks += h.shrinks;
                t.takeovers += h.takeovers; t.rejoins += h.rejoins; t.reports_sent += h.reports_sent;
                t.reports_stale += h.reports_stale; t.seeks_sent += h.seeks_sent;
                t.conflicts += h.conflicts; t.dropped_unroutable += h.dropped_unroutable;
                t.dropped_ttl += h.dropped_ttl; t.dropped_unexpected += h.dropped_unexpected;
            }
            std::printf("admitted %llu fills %llu shrinks %llu takeovers %llu rejoins %llu reports %llu "
                        "stale %llu seeks %llu conflicts %llu unroutable %llu ttl %llu unexpected %llu\n",
                        (unsigned long long)t.joins_admitted, (unsigned long long)t.fills,
                        (unsigned long long)t.shrinks, (unsigned long long)t.takeovers,
                        (unsigned long long)t.rejoins, (unsigned long long)t.reports_sent,
                        (unsigned long long)t.reports_stale, (unsigned long long)t.seeks_sent,
                        (unsigned long long)t.conflicts, (unsigned long long)t.dropped_unroutable,
                        (unsigned long long)t.dropped_ttl, (unsigned long long)t.dropped_unexpected);
            for (auto* x : live())
                if (x->joined() && problem.find(" " + std::to_string(x->address()) + " ") != std::string::npos) {
                    std::printf("  node %s label %llu n %u seq %u head %s nbrs %zu/%zu is_head %d\n",
                                x->self().str().c_str(), (unsigned long long)x->address(), x->view().n,
                                x->view().seq, x->view().head.str().c_str(), x->neighbors().size(),
                                neighbors_of(Label(x->address()), x->view().n).size(), int(x->is_head()));
                    for (auto* y : live())
                        if (y->joined() && adjacent(Label(y->address()), Label(x->address()))) {
                            auto a = y->neighbor_addr(Label(x->address()));
                            auto nb = y->neighbors();
                            std::printf("    nbr %llu at %s n %u seq %u slot %s live %d\n",
                                        (unsigned long long)y->address(), y->self().str().c_str(),
                                        y->view().n, y->view().seq, a ? a->str().c_str() : "-",
                                        int(std::count(nb.begin(), nb.end(), x->address())));
                        }
                }
        }
        CHECK(sim.stats().timer_livelocks == 0);
        return ok ? sim.now() - start : -1;
    }
    void drain_deliveries() {
        Delivery d;
        for (std::size_t i = 0; i < nodes.size(); ++i)
            if (nodes[i])
                while (nodes[i]->poll_deliver(d)) {}
    }
    // sendToAll from member `s`; returns (members reached, duplicates among them).
    std::pair<std::size_t, std::size_t> broadcast(int s, Time wait) {
        drain_deliveries();
        static const std::uint8_t pl[] = {'p', 'r', 'o', 'b', 'e'};
        REQUIRE(nodes[s]->send(SendTo::all, pl, sim.now()) == 0);
        sim.kick(*nodes[s]);
        sim.run_until(sim.now() + wait);
        const LogicalAddress src = nodes[s]->address();
        std::size_t reached = 0, dups = 0;
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            if (!up[i] || int(i) == s) continue;
            std::size_t got = 0;
            Delivery d;
            while (nodes[i]->poll_deliver(d))
                if (d.source == src && d.payload.size() == sizeof pl) ++got;
            if (got >= 1) ++reached;
            if (got > 1) dups += got - 1;
        }
        return {reached, dups};
    }
    int random_live() {
        for (;;) {
            int i = int(rng() % nodes.size());
            if (up[i] && nodes[i]->joined()) return i;
        }
    }
};

constexpr int kN = static_cast<int>(gs::sim::scaled(1000));   // 333 under a sanitizer
constexpr Time kJoinGap = 20 * kMillisecond;   // a joiner every 20 ms: 50 joins/s
// Convergence bounds the tests assert (docs/overlay-hc.md quotes them).
constexpr Time kJoinBound = 30 * kSecond;       // after the last join starts
constexpr Time kChurnBound = 30 * kSecond;      // after the churn event

void build(Cluster& c, int count) {
    for (int i = 0; i < count; ++i) c.sim.schedule(i * kJoinGap, [&c, i] { c.start(i); });
    c.sim.run_until((count - 1) * kJoinGap);
}

void check_trees(Cluster& c, int roots) {
    std::map<LogicalAddress, HcNode*> by;
    for (auto* n : c.live()) by[n->address()] = n;
    const auto N = by.size();
    const unsigned maxdepth = dim_of(static_cast<std::uint32_t>(N));
    for (int k = 0; k < roots; ++k) {
        const LogicalAddress root = c.nodes[c.random_live()]->address();
        std::size_t edges = 0;
        for (auto& [l, n] : by) {
            auto p = n->parent(root);
            if (l == root) {
                CHECK_FALSE(p.has_value());
                continue;
            }
            REQUIRE(p.has_value());
            REQUIRE(by.count(*p));
            auto kids = by[*p]->children(root);
            CHECK(std::count(kids.begin(), kids.end(), l) == 1);
            ++edges;
            LogicalAddress cur = l;
            unsigned depth = 0;
            while (cur != root && depth <= maxdepth) {
                cur = *by[cur]->parent(root);
                ++depth;
            }
            CHECK(cur == root);
            CHECK(depth <= maxdepth);
        }
        CHECK(edges == N - 1);
    }
}

}  // namespace

TEST_CASE("1,000 nodes (333 under a sanitizer) join, converge, broadcast exactly once; trees for 20 roots") {
    Cluster c(kN, 11, 0.0);
    build(c, kN);
    const Time conv = c.converge(kN, kJoinBound);
    REQUIRE(conv >= 0);
    std::printf("hc join: %d joins at %lld ms apart converged %.1f s after the last\n", kN,
                static_cast<long long>(kJoinGap / kMillisecond), double(conv) / kSecond);

    // steady-state control traffic over 10 s
    std::vector<std::uint64_t> before;
    for (auto* n : c.live()) before.push_back(n->stats().control_sent);
    std::uint64_t b0 = 0;
    for (auto v : before) b0 += v;
    std::uint64_t bytes0 = 0;
    for (auto* n : c.live()) bytes0 += n->stats().control_bytes_sent;
    c.sim.run_until(c.sim.now() + 10 * kSecond);
    std::uint64_t b1 = 0, bytes1 = 0;
    for (auto* n : c.live()) {
        b1 += n->stats().control_sent;
        bytes1 += n->stats().control_bytes_sent;
    }
    std::printf("hc steady: control %.1f msg/s and %.0f B/s per node\n",
                double(b1 - b0) / kN / 10.0, double(bytes1 - bytes0) / kN / 10.0);
    CHECK(hctest::cube_problem(c.live(), kN) == "");

    for (int k = 0; k < 20; ++k) {
        auto [reached, dups] = c.broadcast(c.random_live(), 1 * kSecond);
        CHECK(reached == kN - 1);
        CHECK(dups == 0);
    }
    std::uint64_t dup_total = 0;
    for (auto* n : c.live()) dup_total += n->stats().dropped_duplicate;
    CHECK(dup_total == 0);   // a consistent cube sends no duplicate at all

    check_trees(c, 20);

    // sendToNode between 200 random pairs
    c.drain_deliveries();
    int delivered = 0;
    for (int k = 0; k < 200; ++k) {
        int s = c.random_live(), t = c.random_live();
        static const std::uint8_t pl[] = {'u'};
        REQUIRE(c.nodes[s]->send(SendTo::node, pl, c.sim.now(), kNoAddress, c.nodes[t]->address()) == 0);
        c.sim.kick(*c.nodes[s]);
        c.sim.run_until(c.sim.now() + 200 * kMillisecond);
        Delivery d;
        while (c.nodes[t]->poll_deliver(d)) delivered += d.source == c.nodes[s]->address() ? 1 : 0;
    }
    CHECK(delivered == 200);
}

TEST_CASE("churn: 10% leave and 10% crash at once, then all rejoin") {
    Cluster c(kN, 23, 0.0);
    build(c, kN);
    REQUIRE(c.converge(kN, kJoinBound) >= 0);

    // 100 leave gracefully and 100 crash, chosen at random, at the same instant
    std::vector<int> order(kN);
    for (int i = 0; i < kN; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), c.rng);
    std::vector<int> leavers(order.begin(), order.begin() + kN / 10);
    std::vector<int> crashers(order.begin() + kN / 10, order.begin() + kN / 5);
    const Time t0 = c.sim.now();
    for (int i : leavers) c.leave(i);
    for (int i : crashers) c.crash(i);

    // delivery ratio of a broadcast from a random member, once a second
    Time back_at = -1;
    for (int s = 0; s < 40 && back_at < 0; ++s) {
        auto [reached, dups] = c.broadcast(c.random_live(), 1 * kSecond);
        const double ratio = double(reached) / double(c.live_count() - 1);
        if (ratio == 1.0 && hctest::cube_problem(c.live(), c.live_count()).empty())
            back_at = c.sim.now() - t0;
        CHECK(dups == 0);
    }
    if (back_at < 0) c.converge(c.live_count(), 1 * kSecond);   // prints the problem
    std::printf("hc churn: 10%% left + 10%% crashed: full delivery and compact cube after %.1f s\n",
                double(back_at) / kSecond);
    REQUIRE(back_at >= 0);
    CHECK(back_at <= kChurnBound);

    // everyone comes back
    const Time t1 = c.sim.now();
    for (std::size_t k = 0; k < leavers.size(); ++k) {
        c.sim.schedule(t1 + Time(k) * kJoinGap, [&c, i = leavers[k]] { c.start(i); });
        c.sim.schedule(t1 + Time(k) * kJoinGap + kJoinGap / 2, [&c, i = crashers[k]] { c.start(i); });
    }
    c.sim.run_until(t1 + Time(leavers.size()) * kJoinGap);
    const Time conv = c.converge(kN, kChurnBound);
    std::printf("hc rejoin: 200 rejoins converged %.1f s after the last\n", double(conv) / kSecond);
    REQUIRE(conv >= 0);
    for (int k = 0; k < 5; ++k) {
        auto [reached, dups] = c.broadcast(c.random_live(), 1 * kSecond);
        CHECK(reached == kN - 1);
        CHECK(dups == 0);
    }
    std::uint64_t fills = 0, shrinks = 0, takeovers = 0, conflicts = 0;
    for (auto* n : c.live()) {
        fills += n->hc_stats().fills;
        shrinks += n->hc_stats().shrinks;
        takeovers += n->hc_stats().takeovers;
        conflicts += n->hc_stats().conflicts;
    }
    std::printf("hc churn counters (survivors): fills %llu shrinks %llu takeovers %llu conflicts %llu\n",
                (unsigned long long)fills, (unsigned long long)shrinks,
                (unsigned long long)takeovers, (unsigned long long)conflicts);
}

TEST_CASE("2% loss on every link: the cube converges and broadcasts reach >= 85%") {
    Cluster c(kN, 37, 0.02);
    build(c, kN);
    const Time conv = c.converge(kN, kJoinBound + 15 * kSecond);
    std::printf("hc loss 2%%: converged %.1f s after the last join\n", double(conv) / kSecond);
    REQUIRE(conv >= 0);
    double sum = 0;
    for (int k = 0; k < 10; ++k) {
        auto [reached, dups] = c.broadcast(c.random_live(), 1 * kSecond);
        sum += double(reached) / (kN - 1);
        CHECK(dups == 0);
    }
    // A tree hop loses 2%: a member at depth k gets it with 0.98^k, and the
    // mean depth in a 1,000-cube is about 5: about 90% expected.
    std::printf("hc loss 2%%: mean broadcast delivery %.3f\n", sum / 10);
    CHECK(sum / 10 >= 0.85);
    CHECK(hctest::cube_problem(c.live(), kN) == "");
}
