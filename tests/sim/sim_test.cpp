// The discrete-event simulator (tests/sim/sim.h) driving small sans-IO
// endpoints written here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "tests/sim/sim.h"

using namespace gs::sim;
using gs::sansio::kMicrosecond;
using gs::sansio::kMillisecond;
using gs::sansio::kSecond;

namespace {

Addr A(std::uint32_t host, std::uint16_t port = 9000) { return Addr::v4(0x0a000000u + host, port); }

// Base with an outbox: subclasses queue datagrams with out().
class Box : public Endpoint {
public:
    bool poll_transmit(Datagram& d) override {
        if (outbox_.empty()) return false;
        d = std::move(outbox_.front());
        outbox_.pop_front();
        return true;
    }
    Time next_timeout() const override { return timer_; }
    void on_timeout(Time) override {}
    void on_datagram(const Addr&, const Addr&, std::span<const std::uint8_t>, Time) override {}

    void out(const Addr& from, const Addr& to, std::vector<std::uint8_t> b) {
        outbox_.push_back(Datagram{from, to, std::move(b)});
    }
    Time timer_ = kNever;

protected:
    std::deque<Datagram> outbox_;
};

// Pings the peer every `interval`, `count` times; records round-trip times.
class Pinger : public Box {
public:
    Pinger(Addr self, Addr peer, int count, Time interval)
        : self_(self), peer_(peer), count_(count), interval_(interval) { timer_ = 0; }
    void on_timeout(Time now) override {
        if (sent_ >= count_) {
            timer_ = kNever;
            return;
        }
        std::vector<std::uint8_t> b(16);
        std::memcpy(b.data(), &now, 8);
        std::memcpy(b.data() + 8, &sent_, 4);
        out(self_, peer_, std::move(b));
        ++sent_;
        timer_ = now + interval_;
    }
    void on_datagram(const Addr& from, const Addr&, std::span<const std::uint8_t> b, Time now) override {
        if (b.size() != 16 || !(from == peer_)) {
            ++bad_;
            return;
        }
        Time sent_at;
        std::memcpy(&sent_at, b.data(), 8);
        rtts_.push_back(now - sent_at);
    }
    Addr self_, peer_;
    int count_, sent_ = 0, bad_ = 0;
    Time interval_;
    std::vector<Time> rtts_;
};

// Echoes every datagram back to its sender from the address it arrived at.
class Echo : public Box {
public:
    void on_datagram(const Addr& from, const Addr& to, std::span<const std::uint8_t> b, Time now) override {
        ++got_;
        last_at_ = now;
        out(to, from, std::vector<std::uint8_t>(b.begin(), b.end()));
    }
    int got_ = 0;
    Time last_at_ = -1;
};

}  // namespace

TEST_CASE("ping-pong: round trip is exactly twice the link delay") {
    Simulator sim(1);
    LinkParams lp;
    lp.delay = 15 * kMillisecond;
    REQUIRE(sim.set_default_link(lp) == 0);
    Pinger p(A(1), A(2), 50, 100 * kMillisecond);
    Echo e;
    REQUIRE(sim.add_node(A(1), p) == 0);
    REQUIRE(sim.add_node(A(2), e) == 0);
    sim.run_until(10 * kSecond);
    CHECK(p.sent_ == 50);
    CHECK(e.got_ == 50);
    REQUIRE(p.rtts_.size() == 50);
    for (Time r : p.rtts_) CHECK(r == 30 * kMillisecond);
    CHECK(p.bad_ == 0);
    CHECK(sim.now() == 10 * kSecond);
    CHECK(sim.stats().datagrams_sent == 100);
    CHECK(sim.stats().datagrams_delivered == 100);
    CHECK(sim.link_stats(A(1), A(2)).delivered == 50);
    CHECK(sim.link_stats(A(2), A(1)).delivered == 50);
    CHECK(sim.total_link_stats().packets_in == 100);
    // 50 timer fires + 1 final (sets kNever) + 100 deliveries.
    CHECK(sim.events_processed() == 151);
    CHECK(sim.stats().timer_livelocks == 0);
}

TEST_CASE("per-link overrides: one direction only, the other keeps the default") {
    Simulator sim(1);
    LinkParams lossy;
    lossy.loss = 1.0;
    REQUIRE(sim.set_link(A(2), A(1), lossy) == 0);      // before the nodes exist
    Pinger p(A(1), A(2), 10, 10 * kMillisecond);
    Echo e;
    sim.add_node(A(1), p);
    sim.add_node(A(2), e);
    sim.run_until(kSecond);
    CHECK(e.got_ == 10);
    CHECK(p.rtts_.empty());
    CHECK(sim.link_stats(A(2), A(1)).dropped_loss == 10);
    CHECK(sim.stats().dropped_link == 10);
    // Changing the override of a link in use keeps its counters.
    LinkParams clean;
    clean.delay = kMillisecond;
    REQUIRE(sim.set_link(A(2), A(1), clean) == 0);
    p.count_ = 20;
    p.timer_ = sim.now();
    sim.kick(p);
    sim.run_until(2 * kSecond);
    CHECK(p.rtts_.size() == 10);
    CHECK(sim.link_stats(A(2), A(1)).packets_in == 20);
    LinkParams bad;
    bad.loss = 2.0;
    CHECK(sim.set_link(A(1), A(2), bad) == -EINVAL);
    bad = {};
    bad.delay = -1;
    CHECK(sim.set_default_link(bad) == -EINVAL);
}

TEST_CASE("equal times run in scheduling order") {
    Simulator sim(1);
    std::vector<int> order;
    for (int i = 0; i < 100; ++i) sim.schedule(5 * kMillisecond, [&order, i] { order.push_back(i); });
    sim.schedule(kMillisecond, [&order] { order.push_back(-1); });
    sim.run_until(10 * kMillisecond);
    REQUIRE(order.size() == 101);
    CHECK(order[0] == -1);
    for (int i = 0; i < 100; ++i) CHECK(order[static_cast<std::size_t>(i) + 1] == i);
    CHECK(sim.stats().callbacks_run == 101);
}

namespace {

// Records when its timer fired; the test moves the timer around.
class TimerNode : public Box {
public:
    void on_timeout(Time now) override {
        fired_.push_back(now);
        timer_ = next_.empty() ? kNever : next_.front();
        if (!next_.empty()) next_.erase(next_.begin());
    }
    std::vector<Time> fired_;
    std::vector<Time> next_;
};

}  // namespace

TEST_CASE("timers: re-armed earlier, later, cancelled; stale events never fire") {
    Simulator sim(1);
    TimerNode t;
    t.timer_ = 100 * kMillisecond;
    t.next_ = {150 * kMillisecond, 150 * kMillisecond + 1};
    sim.add_node(A(1), t);

    // Earlier: 100 ms -> 40 ms (the 100 ms event goes stale).
    t.timer_ = 40 * kMillisecond;
    sim.kick(t);
    sim.run_until(50 * kMillisecond);
    REQUIRE(t.fired_.size() == 1);
    CHECK(t.fired_[0] == 40 * kMillisecond);
    // The endpoint asked for 150 ms next; move it later to 300 ms.
    t.timer_ = 300 * kMillisecond;
    t.next_ = {};
    sim.kick(t);
    sim.run_until(299 * kMillisecond);
    CHECK(t.fired_.size() == 1);
    sim.run_until(300 * kMillisecond);
    REQUIRE(t.fired_.size() == 2);
    CHECK(t.fired_[1] == 300 * kMillisecond);
    // Cancel one that is armed.
    t.timer_ = 400 * kMillisecond;
    sim.kick(t);
    t.timer_ = kNever;
    sim.kick(t);
    sim.run_until(kSecond);
    CHECK(t.fired_.size() == 2);
    CHECK(sim.stats().timers_fired == 2);
    CHECK(sim.stats().timers_stale == 3);   // 100 ms, 150 ms, 400 ms
    // A time in the past fires at now.
    t.timer_ = 10 * kMillisecond;
    sim.kick(t);
    sim.run_until(sim.now());
    REQUIRE(t.fired_.size() == 3);
    CHECK(t.fired_[2] == kSecond);
    CHECK(sim.pending_events() == 0);
}

TEST_CASE("an endpoint that always asks for now is caught, not hung") {
    struct Spinner : Box {
        void on_timeout(Time now) override { timer_ = now; ++calls; }
        long calls = 0;
    } s;
    s.timer_ = 0;
    Simulator sim(1);
    sim.add_node(A(1), s);
    sim.run_until(10 * kMicrosecond - 1);   // instants 0, 1, ..., 9 us
    CHECK(sim.stats().timer_livelocks == 10);    // once per instant
    CHECK(s.calls == 10 * SimStats::kMaxSpins);
}

TEST_CASE("unknown destination and removed nodes: dropped and counted") {
    Simulator sim(1);
    LinkParams lp;
    lp.delay = 10 * kMillisecond;
    sim.set_default_link(lp);
    Pinger p(A(1), A(2), 100, kMillisecond);
    Echo e;
    sim.add_node(A(1), p);
    sim.run_until(5 * kMillisecond);   // pings at 0..5 ms, nobody at A(2) yet
    CHECK(sim.stats().dropped_unknown == 6);
    CHECK(e.got_ == 0);

    sim.add_node(A(2), e);
    sim.run_until(50 * kMillisecond);
    const int got_before = e.got_;
    CHECK(got_before == 35);   // pings sent at 6..40 ms arrived by 50 ms
    // Crash: in-flight pings (sent at 41..50 ms) die on arrival.
    REQUIRE(sim.remove_node(e) == 0);
    CHECK_FALSE(sim.attached(A(2)));
    CHECK(sim.node_count() == 1);
    sim.run_until(200 * kMillisecond);
    CHECK(e.got_ == got_before);
    CHECK(sim.stats().dropped_detached == 10);
    // The pinger's later pings find no node: dropped at send.
    CHECK(sim.stats().dropped_unknown == 6 + 49);
    CHECK(sim.remove_node(e) == -ENOENT);
    CHECK(sim.kick(e) == -ENOENT);

    // Restart at the same address: traffic flows again (pings are over by now).
    Echo e2;
    REQUIRE(sim.add_node(A(2), e2) == 0);
    sim.send(Datagram{A(9), A(2), {1, 2, 3}});   // from an address nobody has
    sim.run_until(300 * kMillisecond);
    CHECK(e2.got_ == 1);
    CHECK(e2.last_at_ == 210 * kMillisecond);
    CHECK(sim.stats().dropped_unknown == 6 + 49 + 1);   // the echo back to A(9)
}

TEST_CASE("a node with several addresses: sends from the one named, else the first") {
    Simulator sim(1);
    Echo e;
    Box multi;
    REQUIRE(sim.add_node(A(1, 1), multi) == 0);
    REQUIRE(sim.add_node(A(1, 2), multi) == 0);
    CHECK(sim.add_node(A(1, 2), e) == -EEXIST);
    REQUIRE(sim.add_node(A(2), e) == 0);
    CHECK(sim.node_count() == 2);
    multi.out(A(1, 2), A(2), {1});
    multi.out(Addr{}, A(2), {2});
    sim.kick(multi);
    std::vector<std::string> seen;
    sim.set_trace([&](const TraceEvent& ev) {
        if (ev.kind == TraceEvent::Kind::deliver) seen.push_back(ev.from->str() + ">" + ev.to->str());
    });
    sim.run_until(kMillisecond);
    REQUIRE(seen.size() == 4);
    CHECK(seen[0] == "10.0.0.1:2>10.0.0.2:9000");
    CHECK(seen[1] == "10.0.0.1:1>10.0.0.2:9000");
    CHECK(seen[2] == "10.0.0.2:9000>10.0.0.1:2");   // echoes go back to each
    CHECK(seen[3] == "10.0.0.2:9000>10.0.0.1:1");
    // Removing one address keeps the node at the other.
    CHECK(sim.remove_addr(A(1, 1)) == 0);
    CHECK(sim.attached(A(1, 2)));
    CHECK(sim.node_count() == 2);
    CHECK(sim.remove_addr(A(1, 2)) == 0);
    CHECK(sim.node_count() == 1);
    CHECK(sim.remove_addr(A(1, 2)) == -ENOENT);
}

namespace {

// Gossip: every node sends a counter to `fanout` peers chosen by its own
// seeded PRNG every `period`, and forwards the first copy of each message
// id it sees to one more peer. Deterministic given the seed.
class Gossip : public Box {
public:
    Gossip(Addr self, std::vector<Addr>* peers, std::uint64_t seed, int fanout, Time period, Time start)
        : self_(self), peers_(peers), rng_(seed), fanout_(fanout), period_(period) { timer_ = start; }
    void on_timeout(Time now) override {
        for (int i = 0; i < fanout_; ++i) {
            std::vector<std::uint8_t> b(24, 0);
            const std::uint64_t id = rng_.next();
            std::memcpy(b.data(), &id, 8);
            out(self_, pick(), std::move(b));
        }
        timer_ = now + period_;
    }
    void on_datagram(const Addr&, const Addr&, std::span<const std::uint8_t> b, Time) override {
        ++received_;
        if (b.size() == 24 && b[8] == 0) {   // first hop: forward once
            std::vector<std::uint8_t> f(b.begin(), b.end());
            f[8] = 1;
            out(self_, pick(), std::move(f));
        }
    }
    const Addr& pick() { return (*peers_)[rng_.below(peers_->size())]; }
    Addr self_;
    std::vector<Addr>* peers_;
    gs::impair::Rng rng_;
    int fanout_;
    Time period_;
    long received_ = 0;
};

struct GossipNet {
    std::vector<Addr> addrs;
    std::vector<std::unique_ptr<Gossip>> nodes;
    Simulator sim;
    GossipNet(int n, std::uint64_t seed, const LinkParams& lp) : sim(seed) {
        for (int i = 0; i < n; ++i) addrs.push_back(A(static_cast<std::uint32_t>(i + 1)));
        REQUIRE(sim.set_default_link(lp) == 0);
        for (int i = 0; i < n; ++i) {
            nodes.push_back(std::make_unique<Gossip>(addrs[static_cast<std::size_t>(i)], &addrs,
                                                     1000 + static_cast<std::uint64_t>(i), 2,
                                                     100 * kMillisecond, i * kMicrosecond));
            REQUIRE(sim.add_node(addrs[static_cast<std::size_t>(i)], *nodes.back()) == 0);
        }
    }
};

LinkParams rough_link() {
    LinkParams lp;
    lp.loss = 0.02;
    lp.delay = 5 * kMillisecond;
    lp.jitter = 2 * kMillisecond;
    lp.reorder_prob = 0.01;
    lp.dup_prob = 0.01;
    lp.corrupt_prob = 0.01;
    lp.rate_bps = 10'000'000;
    lp.queue_limit = 2000;
    return lp;
}

std::uint64_t trace_hash(std::uint64_t seed) {
    GossipNet net(30, seed, rough_link());
    std::uint64_t h = 1469598103934665603ull;
    auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    net.sim.set_trace([&](const TraceEvent& ev) {
        mix(static_cast<std::uint64_t>(ev.kind));
        mix(static_cast<std::uint64_t>(ev.at));
        mix(gs::sansio::AddrHash{}(*ev.from));
        mix(gs::sansio::AddrHash{}(*ev.to));
        mix(static_cast<std::uint64_t>(ev.reason));
        for (auto b : ev.bytes) mix(b);
    });
    net.sim.run_until(3 * kSecond);
    mix(net.sim.events_processed());
    return h;
}

}  // namespace

TEST_CASE("determinism: same seed, identical trace; another seed, another trace") {
    const std::uint64_t a = trace_hash(1);
    CHECK(a == trace_hash(1));
    CHECK(a != trace_hash(2));
}

TEST_CASE("impairments through the simulator: counters add up") {
    GossipNet net(30, 5, rough_link());
    net.sim.run_until(5 * kSecond);
    // Stop the gossip and let what is in flight land, so the books balance.
    for (auto& n : net.nodes) {
        n->timer_ = kNever;
        net.sim.kick(*n);
    }
    net.sim.run_until(6 * kSecond);
    CHECK(net.sim.pending_events() == 0);
    const LinkStats s = net.sim.total_link_stats();
    const SimStats& st = net.sim.stats();
    CHECK(s.packets_in == st.datagrams_sent - st.dropped_unknown);
    CHECK(st.dropped_link == s.dropped());
    CHECK(s.delivered == st.datagrams_delivered + st.dropped_detached);
    CHECK(s.dropped_loss > 0);
    CHECK(s.duplicated > 0);
    CHECK(s.corrupted > 0);
    CHECK(s.reordered > 0);
    long received = 0;
    for (auto& n : net.nodes) received += n->received_;
    CHECK(received == static_cast<long>(st.datagrams_delivered));
}

TEST_CASE("1,000 nodes: runs, and reports events/s (information only)") {
    LinkParams lp;
    lp.delay = 20 * kMillisecond;
    lp.jitter = 5 * kMillisecond;
    lp.loss = 0.01;
    const auto t0 = std::chrono::steady_clock::now();
    GossipNet net(1000, 3, lp);
    net.sim.run_until(20 * kSecond);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto ev = net.sim.events_processed();
    // 1000 nodes x 200 periods x (1 timer + 2 sends + up to 2 forwards) ~ 1M events.
    CHECK(ev > 800'000);
    CHECK(net.sim.stats().timer_livelocks == 0);
    long min_recv = 1L << 40;
    for (auto& n : net.nodes) min_recv = std::min(min_recv, n->received_);
    CHECK(min_recv > 0);
    MESSAGE("1000 nodes, 20 s virtual: " << ev << " events in " << secs << " s = "
            << static_cast<long>(static_cast<double>(ev) / secs) << " events/s");
}

TEST_CASE("run_while: stops when the predicate turns false, else at the deadline") {
    Simulator sim(1);
    LinkParams lp;
    lp.delay = 10 * kMillisecond;
    sim.set_default_link(lp);
    Pinger p(A(1), A(2), 1000, 10 * kMillisecond);
    Echo e;
    sim.add_node(A(1), p);
    sim.add_node(A(2), e);
    CHECK(sim.run_while([&] { return p.rtts_.size() < 5; }, 10 * kSecond));
    CHECK(p.rtts_.size() == 5);
    CHECK(sim.now() == 60 * kMillisecond);   // 5th echo: sent at 40 ms + 20 ms
    CHECK_FALSE(sim.run_while([&] { return p.rtts_.size() < 1000000; }, kSecond));
    CHECK(sim.now() == kSecond);
    // Checked only every 100 ms of virtual time: stops at the first check after.
    CHECK(sim.run_while([&] { return p.rtts_.size() < 150; }, 10 * kSecond, 100 * kMillisecond));
    CHECK(p.rtts_.size() >= 150);
    CHECK(p.rtts_.size() < 162);
    // Already false: returns at once.
    const Time t = sim.now();
    CHECK(sim.run_while([] { return false; }, 10 * kSecond));
    CHECK(sim.now() == t);
    // step() runs one event at a time.
    const auto before = sim.events_processed();
    CHECK(sim.step());
    CHECK(sim.events_processed() == before + 1);
}

TEST_CASE("link filter: a partition drops both ways, healing restores traffic") {
    Simulator sim(1);
    Pinger p(A(1), A(2), 100, 10 * kMillisecond);
    Echo e;
    sim.add_node(A(1), p);
    sim.add_node(A(2), e);
    // Partition between 200 ms and 500 ms.
    sim.set_link_filter([](const Addr&, const Addr&, Time now) {
        return now < 200 * kMillisecond || now >= 500 * kMillisecond;
    });
    sim.run_until(kSecond);
    CHECK(p.rtts_.size() == 70);   // pings at 200..490 ms lost
    CHECK(sim.stats().dropped_filter == 30);
    CHECK(sim.link_stats(A(1), A(2)).packets_in == 70);
    sim.set_link_filter({});
    p.count_ = 110;
    p.timer_ = sim.now();
    sim.kick(p);
    sim.run_until(2 * kSecond);
    CHECK(p.rtts_.size() == 80);
}

TEST_CASE("delay model: a per-pair delay on top of the link's, order kept, removable") {
    Simulator sim(1);
    LinkParams lp;
    lp.delay = 2 * kMillisecond;
    REQUIRE(sim.set_default_link(lp) == 0);
    // Pair delay from the host numbers: 1 ms per unit of distance; a model
    // returning a negative value counts as 0.
    sim.set_delay_model([](const Addr& from, const Addr& to) -> Time {
        const int a = from.ip[15], b = to.ip[15];
        if (a == 4 || b == 4) return -5 * kMillisecond;
        return (a > b ? a - b : b - a) * kMillisecond;
    });
    Pinger p2(A(1), A(2), 5, 100 * kMillisecond);
    Pinger p3(A(5), A(3), 5, 100 * kMillisecond);   // 5 <-> 3: 2 ms of model delay each way
    Pinger p4(A(6), A(4), 5, 100 * kMillisecond);   // negative model delay: link delay only
    Echo e2, e3, e4;
    REQUIRE(sim.add_node(A(1), p2) == 0);
    REQUIRE(sim.add_node(A(2), e2) == 0);
    REQUIRE(sim.add_node(A(5), p3) == 0);
    REQUIRE(sim.add_node(A(3), e3) == 0);
    REQUIRE(sim.add_node(A(6), p4) == 0);
    REQUIRE(sim.add_node(A(4), e4) == 0);
    sim.run_until(kSecond);
    REQUIRE(p2.rtts_.size() == 5);
    REQUIRE(p3.rtts_.size() == 5);
    REQUIRE(p4.rtts_.size() == 5);
    for (Time r : p2.rtts_) CHECK(r == 2 * (2 + 1) * kMillisecond);
    for (Time r : p3.rtts_) CHECK(r == 2 * (2 + 2) * kMillisecond);
    for (Time r : p4.rtts_) CHECK(r == 2 * 2 * kMillisecond);
    // Jitter on the link with a constant pair delay: FIFO order is kept
    // (Pinger's sequence numbers arrive at the echo in order).
    struct Seq : Box {
        void on_datagram(const Addr&, const Addr&, std::span<const std::uint8_t> b, Time) override {
            std::uint32_t s;
            std::memcpy(&s, b.data() + 8, 4);
            seen_.push_back(s);
        }
        std::vector<std::uint32_t> seen_;
    } seq;
    LinkParams jit;
    jit.delay = 5 * kMillisecond;
    jit.jitter = 4 * kMillisecond;
    REQUIRE(sim.set_link(A(7), A(9), jit) == 0);
    Pinger fast(A(7), A(9), 200, 100 * kMicrosecond);
    REQUIRE(sim.add_node(A(7), fast) == 0);
    REQUIRE(sim.add_node(A(9), seq) == 0);
    sim.run_until(2 * kSecond);
    REQUIRE(seq.seen_.size() == 200);
    CHECK(std::is_sorted(seq.seen_.begin(), seq.seen_.end()));
    // Removed: the link delay alone again.
    sim.set_delay_model({});
    p2.count_ = 10;
    p2.timer_ = sim.now();
    sim.kick(p2);
    sim.run_until(3 * kSecond);
    REQUIRE(p2.rtts_.size() == 10);
    for (std::size_t i = 5; i < 10; ++i) CHECK(p2.rtts_[i] == 4 * kMillisecond);
}
