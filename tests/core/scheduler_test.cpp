// The scheduler on a manual clock: strict priority between ranks, DRR
// fairness inside one, buckets that skip a flow without blocking others, the
// earliest-time answer, thousands of flows, and no allocation per decision.
#include "core/qos/scheduler.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <utility>
#include <vector>

using namespace gs::qos;
using gs::policy::ServiceClass;

// Counts heap allocations so a test can show the send path makes none (as
// tests/policy/match_test.cpp). Not inlined: see there.
static std::atomic<long> g_allocs{0};
__attribute__((noinline)) void* operator new(std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
__attribute__((noinline)) void* operator new[](std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
// The scheduler sizes its timer heap with new (std::nothrow): replaced too, so
// every allocation and free meets its own pair (ASan checks).
__attribute__((noinline)) void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n ? n : 1);
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr uint64_t kEndless = uint64_t{1} << 50;   // a greedy stream's backlog

// The engine's part, reduced to counting: runs the scheduler from `now` to
// `end`, keeping every datagram flow in `refill` backlogged (one packet of
// `packet` bytes re-queued per send). Returns the time reached.
struct Sim {
    explicit Sim(Scheduler& sched, std::vector<SchedFlow*> r = {}) : s(sched), refill(std::move(r)) {}
    Scheduler& s;
    std::vector<SchedFlow*> refill;
    uint64_t packet = 1000;
    long decisions = 0;

    int64_t run(int64_t now, int64_t end) {
        while (now <= end) {
            Pick p = s.next(now);
            if (!p.flow) {
                if (p.wake == kNever) break;
                REQUIRE(p.wake > now);   // never a wake-up in the past
                now = p.wake;
                continue;
            }
            ++decisions;
            sent_by(p.flow) += p.bytes;
            for (SchedFlow* f : refill)
                if (f == p.flow) REQUIRE(s.enqueue(*f, packet) == 0);
        }
        return now;
    }
    std::vector<std::pair<SchedFlow*, uint64_t>> sent;
    uint64_t& sent_by(SchedFlow* f) {
        for (auto& [g, n] : sent)
            if (g == f) return n;
        sent.emplace_back(f, 0);
        return sent.back().second;
    }
};

}  // namespace

TEST_CASE("rank: realtime > guaranteed > reliable > datagram = group") {
    CHECK(rank_of(ServiceClass::realtime) == 3);
    CHECK(rank_of(ServiceClass::guaranteed) == 2);
    CHECK(rank_of(ServiceClass::reliable) == 1);
    CHECK(rank_of(ServiceClass::datagram) == 0);
    CHECK(rank_of(ServiceClass::group) == 0);

    Scheduler s;
    SchedFlow dg, rel, gua, rt, grp;
    REQUIRE(s.attach(dg, {ServiceClass::datagram}) == 0);
    REQUIRE(s.attach(grp, {ServiceClass::group}) == 0);
    REQUIRE(s.attach(rel, {ServiceClass::reliable}) == 0);
    REQUIRE(s.attach(gua, {ServiceClass::guaranteed}) == 0);
    REQUIRE(s.attach(rt, {ServiceClass::realtime}) == 0);
    // Queued lowest first; each has two packets.
    for (SchedFlow* f : {&dg, &grp, &rel, &gua, &rt}) {
        REQUIRE(s.enqueue(*f, 100) == 0);
        REQUIRE(s.enqueue(*f, 100) == 0);
    }
    std::vector<SchedFlow*> order;
    for (Pick p = s.next(0); p.flow; p = s.next(0)) order.push_back(p.flow);
    // datagram and group share one round robin (a 16 KiB turn holds both packets).
    std::vector<SchedFlow*> want = {&rt, &rt, &gua, &gua, &rel, &rel, &dg, &dg, &grp, &grp};
    CHECK(order == want);
    CHECK(s.next(0).wake == kNever);   // all sent, nothing to wait for
}

TEST_CASE("DRR: three greedy flows of one class share within 1% over 10 s; weights") {
    for (uint32_t w2 : {1u, 2u}) {
        CAPTURE(w2);
        TokenBucket process(10'000'000, 0, 0);   // rate_up 10 MB/s
        Scheduler s;
        s.set_root(&process);
        SchedFlow f[3];
        uint32_t weight[3] = {1, w2, w2 == 1 ? 1u : 3u};
        for (int i = 0; i < 3; ++i) REQUIRE(s.attach(f[i], {ServiceClass::reliable, weight[i], true}) == 0);
        for (auto& x : f) REQUIRE(s.enqueue(x, kEndless) == 0);
        Sim sim(s);
        sim.run(0, 10 * kSec);
        uint64_t total = 0;
        for (auto& x : f) total += sim.sent_by(&x);
        uint32_t wsum = weight[0] + weight[1] + weight[2];
        for (int i = 0; i < 3; ++i) {
            double share = static_cast<double>(sim.sent_by(&f[i])) / static_cast<double>(total);
            double want = static_cast<double>(weight[i]) / wsum;
            std::printf("DRR weights %u:%u:%u flow %d share %.5f (want %.5f)\n", weight[0], weight[1], weight[2],
                        i, share, want);
            CHECK(std::fabs(share - want) / want <= 0.01);
        }
        // The root's rate plus its one burst.
        CHECK(total <= 100'000'000 + process.burst());
        CHECK(total >= 100'000'000 - 65536);
    }
}

TEST_CASE("strict priority: realtime bounded by its bucket, guaranteed and reliable get the rest in order") {
    TokenBucket process(10'000'000, 0, 0);
    TokenBucket rt_bucket(2'000'000, 0, 0), gua_bucket(3'000'000, 0, 0);
    Scheduler s;
    s.set_root(&process);
    SchedFlow rt, gua, rel;
    REQUIRE(s.attach(rt, {ServiceClass::realtime, 1, false, &rt_bucket}) == 0);
    REQUIRE(s.attach(gua, {ServiceClass::guaranteed, 1, true, &gua_bucket}) == 0);
    REQUIRE(s.attach(rel, {ServiceClass::reliable, 1, true}) == 0);
    REQUIRE(s.enqueue(rt, 1000) == 0);
    REQUIRE(s.enqueue(gua, kEndless) == 0);
    REQUIRE(s.enqueue(rel, kEndless) == 0);
    Sim sim(s, {&rt});
    sim.run(0, 10 * kSec);
    uint64_t r = sim.sent_by(&rt), g = sim.sent_by(&gua), l = sim.sent_by(&rel);
    std::printf("priority: realtime %llu (2 MB/s), guaranteed %llu (3 MB/s), reliable %llu (rest of 10 MB/s)\n",
                static_cast<unsigned long long>(r), static_cast<unsigned long long>(g),
                static_cast<unsigned long long>(l));
    // Each limited rank gets its rate (plus one burst); reliable the rest.
    CHECK(std::fabs(static_cast<double>(r) - 20e6) <= rt_bucket.burst() + 1000);
    CHECK(std::fabs(static_cast<double>(g) - 30e6) <= gua_bucket.burst() + 1448);
    CHECK(std::fabs(static_cast<double>(r + g + l) - 100e6) <= process.burst() + 65536);
}

TEST_CASE("a rank aggregate keeps an unlimited realtime flow from starving guaranteed") {
    TokenBucket process(10'000'000, 0, 0), realtime_total(4'000'000, 0, 0);
    Scheduler s;
    s.set_root(&process);
    s.set_class_bucket(ServiceClass::realtime, &realtime_total);
    SchedFlow rt, gua;
    REQUIRE(s.attach(rt, {ServiceClass::realtime, 1, true}) == 0);   // no bucket of its own
    REQUIRE(s.attach(gua, {ServiceClass::guaranteed, 1, true}) == 0);
    REQUIRE(s.enqueue(rt, kEndless) == 0);
    REQUIRE(s.enqueue(gua, kEndless) == 0);
    Sim sim(s);
    sim.run(0, 10 * kSec);
    CHECK(std::fabs(static_cast<double>(sim.sent_by(&rt)) - 40e6) <= realtime_total.burst() + 1448);
    CHECK(std::fabs(static_cast<double>(sim.sent_by(&gua)) - 60e6) <= process.burst() + 65536);
}

TEST_CASE("a flow without tokens is skipped; the others go on") {
    TokenBucket process(1'000'000, 0, 0), slow_bucket(10'000, 0, 0);
    Scheduler s;
    s.set_root(&process);
    SchedFlow slow, fast;
    REQUIRE(s.attach(slow, {ServiceClass::datagram, 1, false, &slow_bucket}) == 0);
    REQUIRE(s.attach(fast, {ServiceClass::datagram}) == 0);
    REQUIRE(s.enqueue(slow, 1000) == 0);
    REQUIRE(s.enqueue(fast, 1000) == 0);
    Sim sim(s, {&slow, &fast});
    sim.run(0, 10 * kSec);
    uint64_t a = sim.sent_by(&slow), b = sim.sent_by(&fast);
    CHECK(a >= 100'000 - 1000);
    CHECK(a <= 100'000 + slow_bucket.burst() + 1000);
    CHECK(a + b >= 10'000'000 - 1000);
    CHECK(a + b <= 10'000'000 + process.burst() + 1000);
}

TEST_CASE("the earliest time something becomes sendable") {
    Scheduler s;
    TokenBucket a_b(1'000'000, 1000, 0), b_b(100'000, 1000, 0);
    SchedFlow a, b;
    REQUIRE(s.attach(a, {ServiceClass::reliable, 1, false, &a_b}) == 0);
    REQUIRE(s.attach(b, {ServiceClass::datagram, 1, false, &b_b}) == 0);
    CHECK(s.next(0).wake == kNever);   // nothing queued
    for (int i = 0; i < 2; ++i) {
        REQUIRE(s.enqueue(a, 1000) == 0);
        REQUIRE(s.enqueue(b, 500) == 0);
    }
    CHECK(s.next(0).flow == &a);   // full buckets: a (reliable), then b
    CHECK(s.next(0).flow == &b);
    Pick p = s.next(0);
    // a needs 1000 B at 1 MB/s: 1 ms. b needs 500 B of which it has 500: now.
    CHECK(p.flow == &b);
    p = s.next(0);
    CHECK(p.flow == nullptr);
    CHECK(p.wake == 1 * kMs);
    CHECK(s.parked() == 1);
    CHECK(s.next(kMs - 1).flow == nullptr);
    p = s.next(kMs);
    CHECK(p.flow == &a);
    CHECK(p.bytes == 1000);
    CHECK(s.next(kMs).wake == kNever);

    // The root's own wait is reported too.
    TokenBucket root(1000, 1000, 0);
    s.set_root(&root);
    root.consume(1000, 0);
    REQUIRE(s.enqueue(b, 100) == 0);   // b's bucket is full again by 10 ms
    p = s.next(10 * kMs);
    CHECK(p.flow == nullptr);
    CHECK(p.wake == 100 * kMs);   // 100 B at 1000 B/s
    CHECK(s.next(100 * kMs).flow == &b);
}

TEST_CASE("streams send what the buckets allow, in full segments") {
    TokenBucket process(100'000, 0, 0);   // 100 kB/s, burst 3000
    Scheduler s;
    s.set_root(&process);
    SchedFlow f;
    REQUIRE(s.attach(f, {ServiceClass::reliable, 1, true}) == 0);
    REQUIRE(s.enqueue(f, kEndless) == 0);
    Pick p = s.next(0);
    CHECK(p.bytes == 3000);   // the burst, not a 64 KiB chunk into debt
    p = s.next(0);
    CHECK(p.flow == nullptr);
    CHECK(p.wake == 5 * kMs);   // 100 kB/s earns 500 B in min_chunk_ns (5 ms)
    p = s.next(p.wake);
    CHECK(p.bytes == 500);
    // 10 s at 100 kB/s: smooth in 100 ms bins.
    std::vector<uint64_t> bins(100, 0);
    int64_t now = p.wake;
    while (now < 10 * kSec) {
        p = s.next(now);
        if (!p.flow) {
            now = p.wake;
            continue;
        }
        bins[static_cast<size_t>(now / (100 * kMs))] += p.bytes;
    }
    double mean = 0, var = 0;
    for (size_t i = 1; i < bins.size(); ++i) mean += static_cast<double>(bins[i]);
    mean /= 99;
    for (size_t i = 1; i < bins.size(); ++i) var += std::pow(static_cast<double>(bins[i]) - mean, 2);
    double cv = std::sqrt(var / 99) / mean;
    std::printf("stream at 100 kB/s through the scheduler: mean %.0f B per 100 ms, CoV %.4f\n", mean, cv);
    CHECK(cv <= 0.05);
    CHECK(std::fabs(mean - 10'000) <= 100);
}

TEST_CASE("pause, resume, detach, and the errors a caller can get") {
    SchedConfig cfg;
    cfg.max_flows = 2;
    Scheduler s(cfg);
    SchedFlow a, b, c;
    CHECK(s.enqueue(a, 100) == -EINVAL);   // not attached
    CHECK(s.attach(a, {ServiceClass::reliable, 0}) == -EINVAL);   // weight 0
    REQUIRE(s.attach(a, {ServiceClass::datagram}) == 0);
    CHECK(s.attach(a, {ServiceClass::datagram}) == -EALREADY);
    REQUIRE(s.attach(b, {ServiceClass::datagram}) == 0);
    CHECK(s.attach(c, {ServiceClass::datagram}) == -ENOSPC);
    CHECK(s.enqueue(a, 0) == -EINVAL);
    CHECK(s.enqueue(a, uint64_t{1} << 33) == -EINVAL);   // no datagram is 8 GiB
    for (uint32_t i = 0; i < SchedFlow::kMaxPackets; ++i) REQUIRE(s.enqueue(a, 10) == 0);
    CHECK(s.enqueue(a, 10) == -ENOBUFS);
    CHECK(a.queued_packets() == SchedFlow::kMaxPackets);
    CHECK(a.queued_bytes() == 640);

    REQUIRE(s.enqueue(b, 10) == 0);
    s.pause(a);
    CHECK(s.next(0).flow == &b);
    CHECK(s.next(0).wake == kNever);   // only a paused flow has data
    s.resume(a);
    CHECK(s.next(0).flow == &a);

    // Detached while parked on the timer heap: gone from the heap too.
    TokenBucket tb(1000, 1000, 0);
    s.detach(b);
    REQUIRE(s.attach(b, {ServiceClass::datagram, 1, false, &tb}) == 0);
    tb.consume(1000, 0);
    REQUIRE(s.enqueue(b, 10) == 0);
    s.pause(a);
    CHECK(s.next(0).flow == nullptr);
    CHECK(s.parked() == 1);
    s.detach(b);
    CHECK(s.parked() == 0);
    CHECK(s.flows() == 1);
    s.resume(a);
    for (Pick p = s.next(0); p.flow; p = s.next(0)) CHECK(p.flow == &a);
    CHECK(a.queued_bytes() == 0);
}

TEST_CASE("thousands of flows: each gets its rate, and the send path never allocates") {
    constexpr int n = 5000;
    TokenBucket process(50'000'000, 0, 0);   // 50 MB/s
    Scheduler s;
    s.set_root(&process);
    // Half shaped to 5 kB/s each (25 MB/s together), half unlimited greedy
    // sharing the other 25 MB/s by DRR.
    std::unique_ptr<TokenBucket[]> buckets(new TokenBucket[n]);
    std::unique_ptr<SchedFlow[]> flows(new SchedFlow[n]);
    std::vector<SchedFlow*> refill;
    for (int i = 0; i < n; ++i) {
        bool shaped = i % 2 == 0;
        if (shaped) buckets[i].set_rate(5000, 0, 0);
        REQUIRE(s.attach(flows[i], {ServiceClass::reliable, 1, false, shaped ? &buckets[i] : nullptr}) == 0);
        REQUIRE(s.enqueue(flows[i], 1000) == 0);
    }
    // The simulated engine below re-queues after every send; none of it
    // allocates (its bookkeeping is sized first).
    std::vector<uint64_t> sent(n, 0);
    long before = g_allocs.load();
    int64_t now = 0;
    long decisions = 0;
    while (now <= 2 * kSec) {
        Pick p = s.next(now);
        if (!p.flow) {
            now = p.wake;
            continue;
        }
        ++decisions;
        size_t i = static_cast<size_t>(p.flow - flows.get());
        sent[i] += p.bytes;
        REQUIRE(s.enqueue(*p.flow, 1000) == 0);
    }
    long allocs = g_allocs.load() - before;
    uint64_t shaped_min = UINT64_MAX, shaped_max = 0, free_min = UINT64_MAX, free_max = 0;
    for (int i = 0; i < n; ++i) {
        uint64_t& lo = i % 2 == 0 ? shaped_min : free_min;
        uint64_t& hi = i % 2 == 0 ? shaped_max : free_max;
        lo = std::min(lo, sent[i]);
        hi = std::max(hi, sent[i]);
    }
    std::printf("%d flows, 2 s: %ld decisions, %ld allocations; shaped %llu..%llu B (10000 + 3000 burst), "
                "greedy %llu..%llu B\n",
                n, decisions, allocs, static_cast<unsigned long long>(shaped_min),
                static_cast<unsigned long long>(shaped_max), static_cast<unsigned long long>(free_min),
                static_cast<unsigned long long>(free_max));
    CHECK(allocs == 0);
    // Shaped: 2 s x 5 kB/s plus the 3000 B starting burst, within a packet.
    CHECK(shaped_min >= 10'000 + 3000 - 1000);
    CHECK(shaped_max <= 10'000 + 3000 + 1000);
    // Greedy: the rest (~100 MB - 65 MB) split evenly, within a DRR turn.
    CHECK(free_max - free_min <= 16 * 1024 + 1000);
}
