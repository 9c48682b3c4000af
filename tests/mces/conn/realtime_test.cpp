// Class realtime (class 3) in the simulator: a paced stream of messages with
// a latency bound over lossy, jittery paths. Each message carries its index
// and its send time; the receiver checks, at the instant it reads each one,
// that it is whole and not later than send time + latency, and the tests
// assert the on-time ratio per loss rate (virtual time: deterministic).
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/mces/conn/timing_buffer.h"
#include "tests/mces/conn/harness.h"

using namespace gs::mces;
using namespace gs::mces::test;
using gs::sim::LinkParams;

namespace {

constexpr Time kLatency = 120 * kMillisecond;

// Gilbert loss: a run starts at a packet with probability `start` and lasts
// `mean` packets on average (geometric).
struct BurstLoss {
    bool enabled = false;
    double start = 0;
    double mean = 1;
};

struct StreamParams {
    std::uint64_t seed = 1;
    double loss = 0;
    BurstLoss burst{};
    Time delay = 15 * kMillisecond;       // one way: RTT 20-40 ms with the jitter
    Time jitter = 5 * kMillisecond;
    Time reverse_delay = -1;              // server -> client, when different
    bool reorders = true;
    int messages = 1000;
    std::size_t size = 1200;
    Time interval = kMillisecond;
    Time latency = kLatency;
    bool retransmit = true;
    fec::Layout fec{10, 2, 1};
    bool fec_adaptive = true;             // as shipped; false: `fec` throughout
    bool resend_copies = true;            // ConnConfig::rt_resend_copies
    std::uint64_t link_bps = 100'000'000;
    std::size_t rt_window = 0;            // 0: ConnConfig's
    std::size_t queue_bytes = 0;          // datagram_queue_bytes, 0: ConnConfig's
    std::size_t max_datagram = 1300;      // room for 1200-byte messages and their repairs
    std::size_t coalesce = 0;             // ConnConfig::coalesce_size
    Time fec_max_delay = 0;
    bool with_fec = true;
    std::uint64_t clock_origin_us = 0;    // ConnConfig::rt_clock_origin_us (both sides)
    Time outage_at = 0, outage_for = 0;   // client -> server drops everything then (from the stream's start)
    Time sleep_at = 0, sleep_for = 0;     // the receiver's process does not run then (from the stream's start)
    bool clock_symmetric = false;         // ConnConfig::rt_clock_symmetric (both sides)
};

struct StreamResult {
    int sent = 0;                    // send_datagram accepted
    int delivered = 0;               // read by the receiver
    int last_index = -1;             // the last message read
    int after_deadline = 0;          // read later than send time + latency
    int malformed = 0;               // wrong size or content
    int duplicates = 0;
    int out_of_order = 0;
    Time min_margin = kNever;        // deadline - delivery time, the smallest
    ConnCounters tx, rx;
    std::uint64_t livelocks = 0;
    double on_time_ratio() const { return sent ? double(delivered - after_deadline) / sent : 0; }
};

std::uint8_t fill(int index, std::size_t i) { return static_cast<std::uint8_t>(index * 7 + i * 13); }

// Message: index (4 bytes), send time (8 bytes), then fill bytes.
std::vector<std::uint8_t> make_message(int index, Time at, std::size_t size) {
    std::vector<std::uint8_t> m(size);
    for (std::size_t i = 0; i < size; ++i) m[i] = fill(index, i);
    for (std::size_t i = 0; i < 4 && i < size; ++i) m[i] = static_cast<std::uint8_t>(index >> (8 * i));
    for (std::size_t i = 0; i < 8 && 4 + i < size; ++i) m[4 + i] = static_cast<std::uint8_t>(at >> (8 * i));
    return m;
}

ConnConfig rt_config(const StreamParams& p) {
    ConnConfig c;
    c.max_datagram_size = p.max_datagram;
    c.coalesce_size = p.coalesce;
    c.latency = p.latency;
    c.rt_retransmit = p.retransmit;
    c.fec = p.fec;
    c.fec_adaptive = p.fec_adaptive;
    c.rt_resend_copies = p.resend_copies;
    if (p.rt_window) c.rt_window = p.rt_window;
    if (p.queue_bytes) c.datagram_queue_bytes = p.queue_bytes;
    c.fec_max_delay = p.fec_max_delay;
    c.rt_clock_origin_us = p.clock_origin_us;
    c.rt_clock_symmetric = p.clock_symmetric;
    return c;
}

LinkParams link(const StreamParams& p, Time delay) {
    LinkParams lp;
    lp.delay = delay;
    lp.jitter = p.jitter;
    lp.jitter_reorders = p.reorders;
    lp.loss = p.loss;
    if (p.burst.enabled) {
        lp.loss = 0;
        lp.burst.enabled = true;
        lp.burst.p_good_to_bad = p.burst.start;
        lp.burst.p_bad_to_good = 1.0 / p.burst.mean;
        lp.burst.loss_bad = 1.0;
    }
    lp.rate_bps = p.link_bps;
    lp.queue_limit = std::max<std::size_t>(512 * 1024, p.link_bps / 8 / 100);   // 10 ms of the link
    return lp;
}

StreamResult run_stream(const StreamParams& p) {
    const std::vector<std::string> no_fec = {"framing",  "checksum", "handshake", "sequencing", "sack",
                                             "deadline", "pacing",   "keepalive", "close"};
    EndpointConfig scfg = endpoint_config(Pair::kServer, p.seed * 2 + 1);
    scfg.conn = rt_config(p);
    if (!p.with_fec) scfg.accept_elements = no_fec;
    EndpointConfig ccfg = endpoint_config(Pair::kClient, p.seed * 2 + 2);
    ccfg.conn = rt_config(p);
    gs::sim::Simulator sim(p.seed);
    Host server(scfg), client(ccfg);
    REQUIRE(sim.set_link(Pair::kClient, Pair::kServer, link(p, p.delay)) == 0);
    REQUIRE(sim.set_link(Pair::kServer, Pair::kClient,
                         link(p, p.reverse_delay >= 0 ? p.reverse_delay : p.delay)) == 0);
    REQUIRE(server.ep.listen({}) == 0);
    REQUIRE(sim.add_node(Pair::kServer, server) == 0);
    REQUIRE(sim.add_node(Pair::kClient, client) == 0);

    StreamResult res;
    std::shared_ptr<Connection> cconn, sconn;
    std::vector<int> seen(static_cast<std::size_t>(p.messages), 0);
    int last = -1;
    server.app = [&](Time now) {
        if (!sconn) sconn = server.ep.accept();
        if (!sconn) return;
        std::vector<std::uint8_t> buf(70000);
        for (;;) {
            std::size_t full = 0;
            const auto n = sconn->recv_datagram(buf, &full);
            if (n < 0) break;
            ++res.delivered;
            if (static_cast<std::size_t>(n) != p.size || full != p.size) {
                ++res.malformed;
                continue;
            }
            int index = 0;
            Time at = 0;
            for (std::size_t i = 0; i < 4; ++i) index |= int(buf[i]) << (8 * i);
            for (std::size_t i = 0; i < 8; ++i) at |= Time(buf[4 + i]) << (8 * i);
            bool ok = index >= 0 && index < p.messages;
            for (std::size_t i = 12; ok && i < p.size; ++i) ok = buf[i] == fill(index, i);
            if (!ok) {
                ++res.malformed;
                continue;
            }
            if (now > at + p.latency) ++res.after_deadline;
            res.min_margin = std::min(res.min_margin, at + p.latency - now);
            if (seen[static_cast<std::size_t>(index)]++) ++res.duplicates;
            if (index <= last) ++res.out_of_order;
            last = index;
            res.last_index = index;
        }
    };
    wire::Qos qos;
    qos.latency_us = static_cast<std::uint32_t>(p.latency / gs::sansio::kMicrosecond);
    std::vector<std::string> elements;
    if (!p.with_fec) elements = no_fec;
    REQUIRE(client.ep.connect(Pair::kServer, kClassRealtime, qos, sim.now(), cconn, elements) == 0);
    sim.kick(client);
    REQUIRE(sim.run_while([&] { return !(cconn->state() == Connection::State::established && sconn); },
                          sim.now() + 5 * kSecond));
    const Time start = sim.now() + 10 * kMillisecond;
    if (p.outage_for > 0)
        sim.set_link_filter([&](const Addr& from, const Addr&, Time now) {
            return !(from == Pair::kClient && now >= start + p.outage_at && now < start + p.outage_at + p.outage_for);
        });
    if (p.sleep_for > 0)
        sim.schedule(start + p.sleep_at, [&] {
            server.asleep_until = sim.now() + p.sleep_for;
            sim.kick(server);
        });
    for (int i = 0; i < p.messages; ++i) {
        sim.schedule(start + i * p.interval, [&, i] {
            const Time now = sim.now();
            client.ep.advance(now);
            const auto m = make_message(i, now, p.size);
            if (cconn->send_datagram(m) == static_cast<std::ptrdiff_t>(p.size)) ++res.sent;
            sim.kick(client);
        });
    }
    sim.run_until(start + p.messages * p.interval + p.latency + kSecond);
    res.tx = cconn->counters();
    res.rx = sconn->counters();
    res.livelocks = sim.stats().timer_livelocks;
    return res;
}

void report(const char* what, const StreamParams& p, const StreamResult& r) {
    MESSAGE(std::string(what) << ": loss " << p.loss * 100 << "%: on time " << r.delivered << "/" << r.sent << " ("
                 << r.on_time_ratio() * 100 << "%), late " << r.after_deadline << ", skipped "
                 << r.rx.late_dropped << ", late arrivals " << r.rx.late_arrivals << ", fec repaired "
                 << r.rx.fec_repaired << ", retransmitted " << r.tx.retransmitted << ", expired "
                 << r.tx.expired << ", repairs " << r.tx.repairs_sent << " ("
                 << (r.tx.bytes_sent ? 100.0 * double(r.tx.repair_bytes_sent) / double(r.tx.bytes_sent) : 0)
                 << "% of the bytes), jitter " << double(r.rx.jitter) / 1e6 << " ms, srtt "
                 << double(r.tx.srtt) / 1e6 << " ms, smallest margin to the deadline "
                 << double(r.min_margin) / 1e6 << " ms");
}

void check_common(const StreamParams& p, const StreamResult& r) {
    CHECK(r.sent == p.messages);
    CHECK(r.after_deadline == 0);    // nothing is ever delivered after its deadline
    CHECK(r.malformed == 0);         // whole messages, boundaries kept
    CHECK(r.duplicates == 0);
    CHECK(r.out_of_order == 0);      // in sequence order
    CHECK(r.livelocks == 0);
    CHECK(r.rx.on_time == static_cast<std::uint64_t>(r.delivered));
    // Every message is delivered or counted as skipped (the last ones may
    // still be missing at the end only if the stream ends with losses).
    CHECK(r.rx.on_time + r.rx.late_dropped <= static_cast<std::uint64_t>(r.sent));
}

}  // namespace


// The case: 1000 messages of 1200 bytes at 1 ms, latency 120 ms,
// RTT 20-40 ms (15 ms +-5 ms each way, reordering), retransmission and FEC
// 10/2. Ten seeds per loss rate; the bounds are the lowest ratio measured
// with some margin (docs/mces.md, "Realtime class", has the figures).
TEST_CASE("realtime stream at 1, 5 and 10% loss: on time, never late, boundaries kept") {
    struct Case {
        double loss;
        double bound;    // on-time ratio of every run at least
    };
    // Measured: every run 100% on time at each rate (seeds 1-10).
    const Case cases[] = {{0.0, 1.0}, {0.01, 0.999}, {0.05, 0.998}, {0.10, 0.995}};
    for (const Case& c : cases) {
        double worst = 1, sum = 0;
        std::uint64_t retransmitted = 0, repaired = 0, repair_bytes = 0, bytes = 0;
        const int seeds = 10;
        for (int seed = 1; seed <= seeds; ++seed) {
            CAPTURE(c.loss);
            CAPTURE(seed);
            StreamParams p;
            p.seed = static_cast<std::uint64_t>(seed);
            p.loss = c.loss;
            const StreamResult r = run_stream(p);
            if (seed == 1) report("retransmission + fec 10/2", p, r);
            check_common(p, r);
            CHECK(r.on_time_ratio() >= c.bound);
            worst = std::min(worst, r.on_time_ratio());
            sum += r.on_time_ratio();
            retransmitted += r.tx.retransmitted;
            repaired += r.rx.fec_repaired;
            repair_bytes += r.tx.repair_bytes_sent;
            bytes += r.tx.bytes_sent;
        }
        MESSAGE("loss " << c.loss * 100 << "%: on time mean " << sum / seeds * 100 << "%, worst " << worst * 100
                        << "%; per run " << retransmitted / seeds << " retransmitted, " << repaired / seeds
                        << " repaired by FEC, repairs " << 100.0 * double(repair_bytes) / double(bytes)
                        << "% of the bytes");
    }
}

TEST_CASE("without loss or reordering nothing is resent, skipped or repaired") {
    StreamParams p;
    p.reorders = false;
    p.fec_adaptive = false;   // 10/2 throughout (adaptive FEC would stop the repairs: see below)
    const StreamResult r = run_stream(p);
    report("clean", p, r);
    check_common(p, r);
    CHECK(r.delivered == p.messages);
    CHECK(r.tx.retransmitted == 0);
    CHECK(r.tx.expired == 0);
    CHECK(r.rx.late_dropped == 0);
    CHECK(r.rx.fec_repaired == 0);
    CHECK(r.tx.repairs_sent == 200);    // 10/2: two per block of ten, 100 blocks
    CHECK(r.rx.repairs_received == 200);
    // Jitter +-5 ms uniform without reordering: RFC 3550's estimate is a
    // few ms, never zero, never above the spread.
    CHECK(r.rx.jitter > 500 * gs::sansio::kMicrosecond);
    CHECK(r.rx.jitter < 10 * kMillisecond);
}

TEST_CASE("adaptive FEC: repairs only where resends cannot beat the deadline") {
    // RTT 20-40 ms, latency 120 ms: three resends fit. At 5% loss the
    // repairs needed are far fewer than 10/2's, on time all the same.
    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
        CAPTURE(seed);
        StreamParams p;
        p.seed = seed;
        p.loss = 0.05;
        p.messages = 2000;
        const StreamResult a = run_stream(p);
        p.fec_adaptive = false;
        const StreamResult f = run_stream(p);
        check_common(p, a);
        check_common(p, f);
        if (seed == 1) {
            report("adaptive, 5%, RTT 20-40 ms", p, a);
            report("fixed 10/2, 5%, RTT 20-40 ms", p, f);
        }
        CHECK(a.on_time_ratio() >= 0.998);
        CHECK(a.tx.repair_bytes_sent * 2 < f.tx.repair_bytes_sent);
        CHECK(a.tx.fec_loss_ppm > 20'000);    // it saw the loss (declared losses over packets)
        CHECK(a.tx.fec_loss_ppm < 100'000);
    }
    // A clean, short path: resends fit (many times), so from the first RTT
    // sample on, before any loss estimate, no repairs (fec_prior_loss); at
    // most the open group's before it.
    {
        StreamParams p;
        p.delay = kMillisecond;
        p.jitter = 0;
        p.reorders = false;
        p.messages = 2000;
        const StreamResult r = run_stream(p);
        check_common(p, r);
        report("adaptive, clean 2 ms RTT", p, r);
        CHECK(r.delivered == p.messages);
        CHECK(r.tx.fec_repairs == 0);
        CHECK(r.tx.repairs_sent <= 2);   // was up to 52 with the configured 10/2 until the first estimate
    }
    // A round trip about the latency (55 ms each way, latency 120): no
    // resend arrives in time, so at 5% loss FEC alone must do it: more than
    // 10/2's repairs, and more on time than 10/2 gets.
    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
        CAPTURE(seed);
        StreamParams p;
        p.seed = seed;
        p.loss = 0.05;
        p.delay = 55 * kMillisecond;
        p.jitter = 2 * kMillisecond;
        p.messages = 3000;
        const StreamResult a = run_stream(p);
        p.fec_adaptive = false;
        const StreamResult f = run_stream(p);
        check_common(p, a);
        check_common(p, f);
        if (seed == 1) {
            report("adaptive, 5%, RTT 110 ms", p, a);
            report("fixed 10/2, 5%, RTT 110 ms", p, f);
        }
        CHECK(a.tx.fec_repairs > 2);
        CHECK(a.on_time_ratio() >= 0.995);
        CHECK(a.on_time_ratio() > f.on_time_ratio());
    }
}

// RTT 40 ms, latency 120 ms: one resend round fits (the timing buffer
// releases one reverse one-way delay early, so the rounds run from 20 to
// 100 ms), and one leaves 0.25% missing at 5% loss, above fec_target. The
// cheaper cure than FEC is a second copy of some resends: about 0.63 extra
// copies each, 3% of the stream, where 10/2 costs 20%.
TEST_CASE("adaptive FEC: where one resend fits, extra copies of resends instead of repairs") {
    std::uint64_t skipped_copies = 0, skipped_plain = 0;
    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
        CAPTURE(seed);
        StreamParams p;
        p.seed = seed;
        p.loss = 0.05;
        p.delay = 20 * kMillisecond;
        p.jitter = kMillisecond;
        p.messages = 6000;
        const StreamResult a = run_stream(p);
        p.resend_copies = false;   // the same rule with FEC as its only tool
        const StreamResult n = run_stream(p);
        p.fec_adaptive = false;    // 10/2 throughout
        const StreamResult f = run_stream(p);
        check_common(p, a);
        check_common(p, n);
        check_common(p, f);
        const double payload = double(p.messages) * double(p.size);
        auto over = [&](const StreamResult& r) { return double(r.tx.bytes_sent) / payload - 1; };
        if (seed == 1) {
            report("adaptive, 5%, RTT 40 ms", p, a);
            report("adaptive without extra copies, 5%, RTT 40 ms", p, n);
            report("fixed 10/2, 5%, RTT 40 ms", p, f);
            MESSAGE("extra copies per resend " << a.tx.resend_extra_milli / 1000.0 << ", " << a.tx.extra_copies
                                               << " queued; bytes over the payload: adaptive " << over(a) * 100
                                               << "%, without copies " << over(n) * 100 << "%, 10/2 "
                                               << over(f) * 100 << "%");
        }
        CHECK(a.tx.fec_repairs == 0);
        CHECK(a.tx.resend_extra_milli >= 400);
        CHECK(a.tx.resend_extra_milli <= 900);
        CHECK(a.tx.extra_copies > 0);
        CHECK(n.tx.extra_copies == 0);
        CHECK(a.on_time_ratio() >= 0.998);
        CHECK(over(a) + 0.05 < over(n));   // FEC's repairs cost more than the copies
        CHECK(over(a) + 0.05 < over(f));
        skipped_copies += a.rx.late_dropped;
        skipped_plain += n.rx.late_dropped;
    }
    MESSAGE("skipped over 3 x 6000 messages: " << skipped_copies << " with extra copies, " << skipped_plain
                                               << " with FEC as the only tool");
    // One resend alone would leave 0.25% (45 of 18,000) missing; the copies
    // bring it near fec_target (0.1%: 18). FEC as the only tool overshoots
    // the target (its repairs come in whole r per block) at twice the bytes.
    CHECK(skipped_copies <= 27);
    CHECK(skipped_plain <= 27);
}

TEST_CASE("FEC alone repairs: no retransmission, the on-time ratio rises") {
    // 5% random loss, retransmission off: what FEC 10/2 recovers is all that
    // lifts the ratio above 95%.
    double with = 0, without = 0;
    std::uint64_t repaired = 0;
    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
        CAPTURE(seed);
        StreamParams p;
        p.fec_adaptive = false;   // the layout under test, throughout
        p.seed = seed;
        p.loss = 0.05;
        p.retransmit = false;
        const StreamResult f = run_stream(p);
        check_common(p, f);
        CHECK(f.tx.retransmitted == 0);
        CHECK(f.rx.fec_repaired > 0);
        p.with_fec = false;
        const StreamResult n = run_stream(p);
        check_common(p, n);
        CHECK(n.tx.retransmitted == 0);
        CHECK(n.tx.repairs_sent == 0);
        CHECK(n.rx.fec_repaired == 0);
        if (seed == 1) {
            report("fec only", p, f);
            report("neither", p, n);
        }
        with += f.on_time_ratio();
        without += n.on_time_ratio();
        repaired += f.rx.fec_repaired;
        CHECK(f.on_time_ratio() > n.on_time_ratio() + 0.03);
    }
    MESSAGE("5% loss, no retransmission: on time " << with / 3 * 100 << "% with FEC 10/2 (" << repaired / 3
                                                   << " repaired per run), " << without / 3 * 100 << "% without");
    CHECK(without / 3 < 0.97);     // the loss shows without FEC...
    CHECK(with / 3 >= 0.99);       // ...and FEC repairs most of it (measured 99.5%)
}

TEST_CASE("a burst of losses is repaired with interleaving, not without") {
    // Runs of losses of mean length 4 (5% of the packets), no retransmission:
    // blocks of 10/2 side by side lose whole runs; interleaved 8 deep, a run
    // of up to 16 costs each block at most 2.
    StreamParams p;
    p.fec_adaptive = false;   // the layouts under test, throughout
    p.burst.enabled = true;
    p.burst.mean = 4;
    p.burst.start = 0.05 / 4;
    p.retransmit = false;
    p.reorders = false;
    p.messages = 4000;
    double flat = 0, deep = 0;
    for (std::uint64_t seed = 1; seed <= 2; ++seed) {
        CAPTURE(seed);
        p.seed = seed;
        p.fec = {10, 2, 1};
        p.fec_max_delay = 0;
        const StreamResult a = run_stream(p);
        check_common(p, a);
        // A group of 8 x 10 messages spans 80 ms: its repairs wait for it.
        p.fec = {10, 2, 8};
        p.fec_max_delay = 85 * kMillisecond;
        const StreamResult b = run_stream(p);
        check_common(p, b);
        CHECK(b.tx.retransmitted == 0);
        if (seed == 1) {
            report("bursts, depth 1", p, a);
            report("bursts, depth 8", p, b);
        }
        flat += a.on_time_ratio();
        deep += b.on_time_ratio();
        CHECK(b.rx.fec_repaired > a.rx.fec_repaired);
        CHECK(b.on_time_ratio() > a.on_time_ratio());
    }
    MESSAGE("bursts (mean 4, 5%): on time " << flat / 2 * 100 << "% at depth 1, " << deep / 2 * 100
                                            << "% at depth 8");
    CHECK(flat / 2 < 0.98);
    CHECK(deep / 2 >= 0.99);
}

TEST_CASE("a path slower than the latency: late messages are dropped, never delivered late") {
    // 60 ms +-30 ms one way against 80 ms of latency: many messages arrive
    // after their deadline.
    StreamParams p;
    p.latency = 80 * kMillisecond;
    p.delay = 60 * kMillisecond;
    p.jitter = 30 * kMillisecond;
    p.loss = 0.02;
    const StreamResult r = run_stream(p);
    report("slow path", p, r);
    check_common(p, r);
    CHECK(r.rx.late_dropped + r.rx.late_arrivals > 0);
    CHECK(r.delivered < p.messages);
    CHECK(r.delivered > p.messages / 4);
}

TEST_CASE("an asymmetric path: the clock bound holds whatever the split of the round trip") {
    // 40 ms one way, 2 ms back: a receiver that assumed RTT / 2 each way
    // would release 19 ms late. The bound from the ACKs does not assume.
    for (bool forward_slow : {true, false}) {
        CAPTURE(forward_slow);
        StreamParams p;
        p.delay = forward_slow ? 40 * kMillisecond : 2 * kMillisecond;
        p.reverse_delay = forward_slow ? 2 * kMillisecond : 40 * kMillisecond;
        p.jitter = kMillisecond;
        p.loss = 0.02;
        const StreamResult r = run_stream(p);
        report(forward_slow ? "slow forward" : "slow reverse", p, r);
        check_common(p, r);
        CHECK(r.on_time_ratio() >= 0.99);
    }
}

TEST_CASE("a copy whose 16-bit seq decodes wrong is dropped late; a stamp from the future is dropped") {
    StreamParams p;
    ConnConfig cc = rt_config(p);
    Pair pair(9, LinkParams{}, cc);
    wire::Qos qos;
    qos.latency_us = 50'000;
    const Time t0 = pair.sim.now();   // the client's clock (its stamps) counts from here
    REQUIRE(pair.client.ep.connect(Pair::kServer, kClassRealtime, qos, pair.sim.now(), pair.cconn) == 0);
    pair.sim.kick(pair.client);
    REQUIRE(pair.sim.run_while(
        [&] { return !(pair.cconn->state() == Connection::State::established && pair.sconn); },
        pair.sim.now() + 5 * kSecond));
    std::vector<std::vector<std::uint8_t>> got;
    pair.server.app = [&](Time) {
        std::vector<std::uint8_t> buf(2000);
        for (;;) {
            const auto n = pair.sconn->recv_datagram(buf);
            if (n < 0) break;
            got.emplace_back(buf.begin(), buf.begin() + n);
        }
    };
    int id = 0;
    auto send = [&](int n) {
        for (int i = 0; i < n; ++i) {
            pair.client.ep.advance(pair.sim.now());
            const std::vector<std::uint8_t> m(20, static_cast<std::uint8_t>(id++));
            REQUIRE(pair.cconn->send_datagram(m) == 20);
            pair.sim.kick(pair.client);
            pair.sim.run_until(pair.sim.now() + kMillisecond);
        }
        pair.sim.run_until(pair.sim.now() + 200 * kMillisecond);
    };
    send(100);   // seqs 0-99
    REQUIRE(got.size() == 100);
    // Forged copies, each the last frame of a short packet (class 3: no
    // CRC), numbered beyond the client's packets (a packet number the
    // client used would be a duplicate, dropped before its frames are read).
    std::uint64_t pn = pair.cconn->counters().packets_sent + 1000;
    auto inject = [&](std::uint16_t seq16, std::uint32_t stamp) {
        std::vector<std::uint8_t> buf(256);
        wire::PacketWriter pw(buf);
        pw.begin_short(pair.sconn->local_cid(), pn++, 4, pair.sconn->checksum());
        const std::uint8_t body[] = {static_cast<std::uint8_t>(stamp >> 24), static_cast<std::uint8_t>(stamp >> 16),
                                     static_cast<std::uint8_t>(stamp >> 8), static_cast<std::uint8_t>(stamp), 'o', 'l', 'd'};
        wire::write_message(pw.body(), seq16, body, true);
        const int n = pw.finish();
        REQUIRE(n > 0);
        buf.resize(static_cast<std::size_t>(n));
        pair.sim.send({Pair::kClient, Pair::kServer, buf});
        pair.sim.run_until(pair.sim.now() + kMillisecond);
    };
    const ConnCounters before = pair.sconn->counters();
    // A copy of message 99 - 40,000 (a copy that waited while 40,000 were
    // sent): its low 16 bits decode to 25,535, ahead of the largest (99).
    // Its stamp (1 us into the stream's clock) is long past its deadline.
    REQUIRE(wire::decode_message_seq(99, (99 - 40000 + 65536) & 0xffff) == 99 - 40000 + 65536);
    inject(static_cast<std::uint16_t>((99 - 40000 + 65536) & 0xffff), 1);
    // A stamp a minute ahead of the sender's clock: no honest copy has it.
    const auto sender_now_us = static_cast<std::uint64_t>((pair.sim.now() - t0) / gs::sansio::kMicrosecond);
    inject(100, static_cast<std::uint32_t>(sender_now_us + 60'000'000));
    const ConnCounters after = pair.sconn->counters();
    CHECK(after.late_arrivals == before.late_arrivals + 1);
    CHECK(after.drops.bad_stamp == before.drops.bad_stamp + 1);
    CHECK(after.late_dropped == before.late_dropped);   // the window did not move toward 25,535
    // The stream goes on: seqs 100-199 all delivered, in order, nothing forged.
    send(100);
    REQUIRE(got.size() == 200);
    for (std::size_t k = 0; k < got.size(); ++k) {
        CAPTURE(k);
        CHECK(got[k].size() == 20);
        CHECK(got[k][0] == static_cast<std::uint8_t>(k));
    }
    CHECK(pair.sconn->counters().late_dropped == 0);
}

TEST_CASE("message boundaries: every size up to the largest, EMSGSIZE above") {
    StreamParams p;
    ConnConfig cc = rt_config(p);
    Pair pair(7, LinkParams{}, cc);
    wire::Qos qos;
    qos.latency_us = 50'000;
    REQUIRE(pair.client.ep.connect(Pair::kServer, kClassRealtime, qos, pair.sim.now(), pair.cconn) == 0);
    pair.sim.kick(pair.client);
    REQUIRE(pair.sim.run_while(
        [&] { return !(pair.cconn->state() == Connection::State::established && pair.sconn); },
        pair.sim.now() + 5 * kSecond));
    Connection& c = *pair.cconn;
    CHECK(pair.sconn->service_class() == kClassRealtime);
    CHECK(pair.sconn->chain().realtime());
    const std::size_t max = c.max_datagram_payload();
    CHECK(max >= 1200);
    std::vector<std::uint8_t> big(max + 1, 0x5a);
    CHECK(c.send_datagram(big) == -EMSGSIZE);
    CHECK(c.write(big) == -EOPNOTSUPP);
    const std::size_t sizes[] = {0, 1, 7, 8, 9, 100, 1000, max - 1, max};
    for (std::size_t n : sizes) {
        pair.client.ep.advance(pair.sim.now());
        std::vector<std::uint8_t> m(n);
        for (std::size_t i = 0; i < n; ++i) m[i] = static_cast<std::uint8_t>(n + i);
        CHECK(c.send_datagram(m) == static_cast<std::ptrdiff_t>(n));
        pair.sim.kick(pair.client);
        pair.sim.run_until(pair.sim.now() + kMillisecond);
    }
    std::vector<std::vector<std::uint8_t>> got;
    pair.server.app = [&](Time) {
        std::vector<std::uint8_t> buf(70000);
        for (;;) {
            const auto n = pair.sconn->recv_datagram(buf);
            if (n < 0) break;
            got.emplace_back(buf.begin(), buf.begin() + n);
        }
    };
    pair.sim.run_until(pair.sim.now() + 200 * kMillisecond);
    REQUIRE(got.size() == std::size(sizes));
    for (std::size_t k = 0; k < got.size(); ++k) {
        CAPTURE(k);
        REQUIRE(got[k].size() == sizes[k]);
        for (std::size_t i = 0; i < got[k].size(); ++i)
            if (got[k][i] != static_cast<std::uint8_t>(sizes[k] + i)) FAIL("byte " << i);
    }
    // The latency the client asked is the one both sides use.
    const auto g = pair.sconn->granted();
    REQUIRE(g.latency_us.has_value());
    CHECK(*g.latency_us == 50'000u);
    // Graceful close once everything is out.
    CHECK(c.close() == 0);
    CHECK(pair.sconn->close() == 0);
    CHECK(pair.run_until_closed(10 * kSecond));
    CHECK(c.error() == 0);
}

TEST_CASE("timing buffer: releases in order at stamp + offset + latency, skips and drops what is late") {
    TimingBufferConfig cfg;
    cfg.latency = 100 * kMillisecond;
    cfg.window = 8;
    cfg.max_bytes = 100;
    cfg.max_window = 8;         // fixed: growth is the next test's
    cfg.max_bytes_limit = 100;
    TimingBuffer tb(cfg);
    std::vector<std::uint64_t> out;
    auto run = [&](Time now) { return tb.release(now, [&](std::uint64_t s, auto) { out.push_back(s); }); };
    const std::uint8_t m[10] = {};
    // A strict clock: c >= 5 ms. Message n stamped n ms is due at n + 105 ms.
    tb.clock_sample(5 * kMillisecond);
    REQUIRE(tb.has_ack_clock());
    CHECK(tb.insert(1, 1000, {m, 10}, 20 * kMillisecond) == TimingBuffer::Insert::stored);
    CHECK(tb.insert(1, 1000, {m, 10}, 21 * kMillisecond) == TimingBuffer::Insert::duplicate);
    CHECK(tb.insert(3, 3000, {m, 10}, 22 * kMillisecond) == TimingBuffer::Insert::stored);
    CHECK(tb.insert(9, 9000, {m, 10}, 22 * kMillisecond) == TimingBuffer::Insert::too_far);
    CHECK(tb.next_release() == 106 * kMillisecond);
    CHECK(run(106 * kMillisecond - 1) == 0);
    CHECK(run(106 * kMillisecond) == 1);          // 0 skipped, 1 delivered
    CHECK(tb.counters().skipped == 1);
    CHECK(tb.next_release() == 108 * kMillisecond);
    // 2 arrives in time: delivered before 3, in order.
    CHECK(tb.insert(2, 2000, {m, 10}, 107 * kMillisecond) == TimingBuffer::Insert::stored);
    CHECK(run(108 * kMillisecond) == 2);
    CHECK(out == std::vector<std::uint64_t>{1, 2, 3});
    // Arriving after its release time: dropped, never delivered.
    CHECK(tb.insert(4, 4000, {m, 10}, 109 * kMillisecond + 1) == TimingBuffer::Insert::late);
    CHECK(tb.insert(0, 0, {m, 10}, 109 * kMillisecond) == TimingBuffer::Insert::duplicate);
    CHECK(tb.counters().late == 1);
    // Byte bound.
    for (std::uint64_t s = 5; s < 13; ++s)
        tb.insert(s, s * 1000, {m, 10}, 109 * kMillisecond);
    CHECK(tb.held_bytes() <= cfg.max_bytes);
    // A lying clock sample above c_high is cut to it.
    tb.observe_arrival(20, 20'000, 30 * kMillisecond);   // transit 10 ms: c <= 10 ms
    tb.clock_sample(50 * kMillisecond);
    CHECK(tb.clock_low() == 10 * kMillisecond);
    CHECK(tb.counters().clock_cut == 1);
    CHECK(run(kNever - 1) > 0);
    CHECK(tb.held() == 0);
}

TEST_CASE("timing buffer: the symmetric clock releases at the midpoint of its bounds, less the margin") {
    const std::uint8_t m[10] = {};
    TimingBufferConfig cfg;
    cfg.latency = 100 * kMillisecond;
    cfg.symmetric = true;
    cfg.margin = 2 * kMillisecond;
    TimingBuffer tb(cfg);
    TimingBufferConfig scfg = cfg;
    scfg.symmetric = false;
    TimingBuffer strict(scfg);
    for (TimingBuffer* b : {&tb, &strict}) {
        b->observe_arrival(0, 0, 30 * kMillisecond);       // transit 30 ms: c <= 30 ms
        b->clock_sample(10 * kMillisecond, false);          // the handshake's bound: c >= 10 ms
    }
    // Before an ACK's sample the bounds are not trusted for it: as strict.
    CHECK(tb.clock_offset() == 10 * kMillisecond);
    for (TimingBuffer* b : {&tb, &strict}) b->clock_sample(10 * kMillisecond);   // an ACK's
    // Midpoint 20 ms, less the margin: 18 ms; strict keeps its 10.
    CHECK(tb.clock_offset() == 18 * kMillisecond);
    CHECK(strict.clock_offset() == 10 * kMillisecond);
    CHECK(tb.release_time(5000, 0) == 123 * kMillisecond);
    CHECK(strict.release_time(5000, 0) == 115 * kMillisecond);
    // Lateness follows the release time: at 120 ms a message stamped 5 ms
    // is late for strict, not for symmetric.
    CHECK(strict.insert(1, 5000, {m, 10}, 120 * kMillisecond) == TimingBuffer::Insert::late);
    CHECK(tb.insert(1, 5000, {m, 10}, 120 * kMillisecond) == TimingBuffer::Insert::stored);
    std::vector<std::uint64_t> out;
    CHECK(tb.release(123 * kMillisecond - 1, [&](std::uint64_t s, auto) { out.push_back(s); }) == 0);
    CHECK(tb.release(123 * kMillisecond, [&](std::uint64_t s, auto) { out.push_back(s); }) == 1);
    // Bounds closer than twice the margin (a short path): never below the
    // strict bound.
    tb.clock_sample(29 * kMillisecond);
    CHECK(tb.clock_offset() == 29 * kMillisecond);
}

TEST_CASE("timing buffer: a late copy is dropped before its seq moves anything") {
    // A MESSAGE copy older than 2^15 messages decodes to a wrong seq, 2^16
    // too high (wire::decode_message_seq). Being that old, it is late: it
    // must be dropped as late without skipping the window toward its seq.
    TimingBufferConfig cfg;
    cfg.latency = 100 * kMillisecond;
    cfg.window = 8;
    cfg.max_window = 8;
    TimingBuffer tb(cfg);
    const std::uint8_t m[10] = {};
    tb.clock_sample(5 * kMillisecond);   // message stamped s ms is due at s + 105 ms
    // Nothing held: a far-ahead seq would move the window straight there.
    CHECK(tb.late(0, 200 * kMillisecond));
    CHECK(tb.insert(65536 + 3, 0, {m, 10}, 200 * kMillisecond) == TimingBuffer::Insert::late);
    CHECK(tb.next_seq() == 0);
    CHECK(tb.counters().skipped == 0);
    // Something held: the same, the held message stays next.
    CHECK(tb.insert(2, 150'000, {m, 10}, 200 * kMillisecond) == TimingBuffer::Insert::stored);
    CHECK(tb.insert(65536 + 40, 1000, {m, 10}, 201 * kMillisecond) == TimingBuffer::Insert::late);
    CHECK(tb.counters().late == 2);
    CHECK(tb.counters().skipped == 0);
    CHECK(tb.next_seq() == 0);
    std::vector<std::uint64_t> out;
    CHECK(tb.release(kNever - 1, [&](std::uint64_t s, auto) { out.push_back(s); }) == 1);
    CHECK(out == std::vector<std::uint64_t>{2});
}

TEST_CASE("timing buffer: before the ACK's sample, a loose bound holds messages an eighth of the latency") {
    TimingBufferConfig cfg;
    cfg.latency = 80 * kMillisecond;
    TimingBuffer tb(cfg);
    const std::uint8_t m[4] = {};
    // The handshake's bound says c >= -300 ms: message 0 stamped 400 ms is due
    // at 180 ms, long before it arrives at 410 ms.
    tb.epoch_sample(400'000, 100 * kMillisecond);
    CHECK_FALSE(tb.has_ack_clock());
    CHECK(tb.insert(1, 401'000, {m, 4}, 410 * kMillisecond) == TimingBuffer::Insert::stored);
    CHECK(tb.next_release() == 420 * kMillisecond);
    std::vector<std::uint64_t> out;
    CHECK(tb.insert(0, 400'000, {m, 4}, 415 * kMillisecond) == TimingBuffer::Insert::stored);
    // 0 is due at 425 ms (its own arrival + 10 ms); 1 waits behind it.
    CHECK(tb.release(420 * kMillisecond, [&](std::uint64_t s, auto) { out.push_back(s); }) == 0);
    CHECK(tb.release(425 * kMillisecond, [&](std::uint64_t s, auto) { out.push_back(s); }) == 2);
    CHECK(out == std::vector<std::uint64_t>{0, 1});
    CHECK(tb.counters().skipped == 0);
}

TEST_CASE("a sender that closes right after its last message: the receiver still gets every message, each at its time") {
    StreamParams p;
    ConnConfig cc = rt_config(p);
    LinkParams link;
    link.delay = 10 * kMillisecond;
    Pair pair(11, link, cc);
    wire::Qos qos;
    qos.latency_us = 100'000;
    REQUIRE(pair.client.ep.connect(Pair::kServer, kClassRealtime, qos, pair.sim.now(), pair.cconn) == 0);
    pair.sim.kick(pair.client);
    REQUIRE(pair.sim.run_while(
        [&] { return !(pair.cconn->state() == Connection::State::established && pair.sconn); },
        pair.sim.now() + 5 * kSecond));
    std::vector<Time> sent, got_at;
    pair.server.app = [&](Time now) {
        std::vector<std::uint8_t> buf(2000);
        while (pair.sconn->recv_datagram(buf) >= 0) got_at.push_back(now);
    };
    const int n = 50;
    for (int i = 0; i < n; ++i) {
        pair.client.ep.advance(pair.sim.now());
        sent.push_back(pair.sim.now());
        REQUIRE(pair.cconn->send_datagram(std::vector<std::uint8_t>(500, static_cast<std::uint8_t>(i))) == 500);
        pair.sim.kick(pair.client);
        pair.sim.run_until(pair.sim.now() + kMillisecond);
    }
    // Close at once: the receiver holds about 100 ms of messages then.
    CHECK(pair.cconn->close() == 0);
    pair.sim.kick(pair.client);
    pair.sim.run_until(pair.sim.now() + 2 * kSecond);
    REQUIRE(got_at.size() == static_cast<std::size_t>(n));   // without the release after close: the last ~90 lost
    for (int i = 0; i < n; ++i) CHECK(got_at[static_cast<std::size_t>(i)] <= sent[static_cast<std::size_t>(i)] + 100 * kMillisecond);
    CHECK(pair.sconn->state() == Connection::State::closed);
    CHECK(pair.sconn->error() == 0);
}

TEST_CASE("send_datagram's sent_at: the deadline runs from when the application sent the message") {
    // A message the engine held while the handshake ran: its deadline is
    // latency after the program's send, not after the connection took it.
    LinkParams lp;
    lp.delay = 10 * kMillisecond;
    Pair p(31, lp);
    REQUIRE(p.connect(kClassRealtime));
    p.sim.run_until(p.sim.now() + 200 * kMillisecond);   // clock samples taken
    const std::vector<std::uint8_t> early(100, 1), too_old(100, 2), fresh(100, 3);
    const Time now = p.sim.now();
    REQUIRE(p.cconn->send_datagram(early, now - 60 * kMillisecond) == 100);
    REQUIRE(p.cconn->send_datagram(too_old, now - 130 * kMillisecond) == 100);   // past its deadline already
    REQUIRE(p.cconn->send_datagram(fresh, now) == 100);
    p.sim.kick(p.client);
    std::vector<std::pair<std::uint8_t, Time>> got;
    p.server.app = [&](Time t) {
        std::uint8_t b[256];
        for (std::ptrdiff_t r; (r = p.sconn->recv_datagram(b)) > 0;) got.emplace_back(b[0], t);
    };
    p.sim.run_until(now + 300 * kMillisecond);
    REQUIRE(got.size() == 2);
    CHECK(got[0].first == 1);
    CHECK(got[0].second <= now + 60 * kMillisecond);    // 120 ms after its send, 60 ms before now
    CHECK(got[0].second >= now + 10 * kMillisecond);    // and not before it could arrive
    CHECK(got[1].first == 3);
    CHECK(got[1].second <= now + 120 * kMillisecond);
    CHECK(got[1].second > now + 60 * kMillisecond);
    CHECK(p.cconn->counters().expired == 1);             // the one already late never left
}

TEST_CASE("messages held while the handshake ran keep their send time, and arrive by it + the latency") {
    // 20 ms each way: the handshake takes one round trip (under_load, the
    // default: no RETRY), two with retry = always. What the program sent
    // at connect() is handed over when it ends, 40 or 80 ms later, stamped
    // with the program's time: released by that time + 120 ms (the first
    // packets carry the TIMESTAMP the receiver's first clock bound comes
    // from), not 40 or 80 ms after.
    for (const bool cookie : {false, true}) {
        CAPTURE(cookie);
        LinkParams lp;
        lp.delay = 20 * kMillisecond;
        Pair p(32, lp, {}, {}, cookie ? Pair::cookie_first() : gs::mces::wire::ServerConfig{});
        const Time t0 = p.sim.now();
        REQUIRE(p.connect(kClassRealtime));
        const Time established = p.sim.now();
        if (cookie) {
            CHECK(established - t0 >= 80 * kMillisecond);
        } else {
            // The client in 1 RTT; the server's program gets the connection
            // when the client's first packet proves its address (1.5 RTT).
            CHECK(established - t0 >= 60 * kMillisecond);
            CHECK(established - t0 < 65 * kMillisecond);
        }
        std::vector<std::pair<std::uint8_t, Time>> got;
        p.server.app = [&](Time t) {
            if (!p.sconn) p.sconn = p.server.ep.accept();
            if (!p.sconn) return;
            std::uint8_t b[256];
            for (std::ptrdiff_t r; (r = p.sconn->recv_datagram(b)) > 0;) got.emplace_back(b[0], t);
        };
        // 600 messages, one every 100 us from connect(), all handed over
        // at once when the handshake ends.
        const int n = 600;
        for (int i = 0; i < n; ++i) {
            const std::vector<std::uint8_t> m(200, static_cast<std::uint8_t>(i));
            REQUIRE(p.cconn->send_datagram(m, t0 + i * 100 * gs::sansio::kMicrosecond) == 200);
        }
        p.sim.kick(p.client);
        p.sim.run_until(established + 300 * kMillisecond);
        REQUIRE(got.size() == static_cast<std::size_t>(n));
        Time margin = kNever;   // the smallest time to spare before a deadline
        for (std::size_t i = 0; i < got.size(); ++i) {
            CAPTURE(i);
            CHECK(got[i].first == static_cast<std::uint8_t>(i));
            const Time deadline = t0 + static_cast<Time>(i) * 100 * gs::sansio::kMicrosecond + 120 * kMillisecond;
            CHECK(got[i].second <= deadline);
            margin = std::min(margin, deadline - got[i].second);
        }
        MESSAGE(std::string(cookie ? "retry = always" : "under_load")
                << ": established " << double(established - t0) / 1e6 << " ms after connect; first message released at "
                << double(got[0].second - t0) / 1e6 << " ms; smallest margin to a deadline " << double(margin) / 1e6
                << " ms");
        CHECK(p.cconn->counters().expired == 0);
        // One already past its deadline when handed over: taken, counted, never sent.
        const std::vector<std::uint8_t> fresh(200, 0xDD), stale(200, 0xEE);
        CHECK(p.cconn->send_datagram(fresh, p.sim.now()) == 200);
        CHECK(p.cconn->send_datagram(stale, p.sim.now() - 121 * kMillisecond) == 200);
        CHECK(p.cconn->counters().expired == 1);
    }
}

TEST_CASE("timing buffer: a window emptied by releases takes later messages, and grows for a faster stream") {
    const std::uint8_t m[10] = {};
    std::vector<std::uint64_t> out;
    {
        // Fixed at 4: 0-3 held, 4 refused; once 0-3 are released the
        // window is empty, and message 100 (the stream went on) is taken:
        // 4-96, a window behind it and never received, are skipped.
        TimingBufferConfig cfg;
        cfg.latency = 100 * kMillisecond;
        cfg.window = cfg.max_window = 4;
        TimingBuffer tb(cfg);
        tb.clock_sample(0);
        for (std::uint64_t s = 0; s < 4; ++s)
            CHECK(tb.insert(s, s * 1000, {m, 10}, kMillisecond) == TimingBuffer::Insert::stored);
        CHECK(tb.insert(4, 4000, {m, 10}, kMillisecond) == TimingBuffer::Insert::too_far);
        CHECK(tb.release(103 * kMillisecond, [&](std::uint64_t s, auto) { out.push_back(s); }) == 4);
        CHECK(tb.insert(100, 100'000, {m, 10}, 110 * kMillisecond) == TimingBuffer::Insert::stored);
        CHECK(tb.next_seq() == 97);
        CHECK(tb.counters().skipped == 93);
        CHECK(tb.insert(97, 97'000, {m, 10}, 110 * kMillisecond) == TimingBuffer::Insert::stored);   // still in time
        CHECK(tb.release(200 * kMillisecond, [&](std::uint64_t s, auto) { out.push_back(s); }) == 2);
        CHECK(out == std::vector<std::uint64_t>{0, 1, 2, 3, 97, 100});
        // Held messages stop the slide: 101 held, 200 beyond its window.
        CHECK(tb.insert(101, 101'000, {m, 10}, 150 * kMillisecond) == TimingBuffer::Insert::stored);
        CHECK(tb.insert(200, 200'000, {m, 10}, 150 * kMillisecond) == TimingBuffer::Insert::too_far);
        CHECK(tb.next_seq() == 101);
    }
    {
        // Window 4 and 40 bytes at first, up to 16 and 160: sixteen
        // messages in flight are all taken; the seventeenth is refused.
        TimingBufferConfig cfg;
        cfg.latency = 100 * kMillisecond;
        cfg.window = 4;
        cfg.max_window = 16;
        cfg.max_bytes = 40;
        cfg.max_bytes_limit = 160;
        TimingBuffer tb(cfg);
        tb.clock_sample(0);
        for (std::uint64_t s = 0; s < 16; ++s)
            CHECK(tb.insert(s, s * 1000, {m, 10}, kMillisecond) == TimingBuffer::Insert::stored);
        CHECK(tb.window() == 16);
        CHECK(tb.byte_bound() == 160);
        CHECK(tb.counters().grown == 2);
        CHECK(tb.insert(16, 16'000, {m, 10}, kMillisecond) == TimingBuffer::Insert::too_far);
        out.clear();
        CHECK(tb.release(kNever - 1, [&](std::uint64_t s, auto) { out.push_back(s); }) == 16);
        for (std::uint64_t s = 0; s < 16; ++s) CHECK(out[s] == s);   // in order after the moves
    }
}

namespace {
// `messages` of 1,200 bytes every 10 us (960 Mbit/s) over a clean 1 ms
// path of 10 Gbit/s.
StreamParams fast_stream(int messages) {
    StreamParams p;
    p.messages = messages;
    p.interval = 10 * gs::sansio::kMicrosecond;
    p.delay = kMillisecond;
    p.jitter = 0;
    p.reorders = false;
    p.link_bps = 10'000'000'000ull;
    return p;
}
}  // namespace

TEST_CASE("a stream of 960 Mbit/s: every message on time (the timing buffer grows to it)") {
    // 60,000 messages of 1,200 bytes every 10 us, latency 120 ms: 12,000
    // in the buffer at once, twelve times its first window. With the
    // window fixed at 1,024, 1,024 were delivered and the rest refused.
    const StreamParams p = fast_stream(60000);
    const StreamResult r = run_stream(p);
    report("960 Mbit/s", p, r);
    check_common(p, r);
    CHECK(r.delivered == p.messages);
    CHECK(r.on_time_ratio() == 1.0);
}

TEST_CASE("a fast stream whose receiver is kept from running for 5 ms: nothing is lost at its release") {
    // 960 Mbit/s as above; the receiving process sleeps 5 ms mid-stream
    // (descheduled: its datagrams wait, its timers do not fire). On waking
    // about 500 messages fall due at once. Before the application's queue
    // followed the timing buffer's size, 256 of them were kept and the rest
    // dropped (the 1.8 Gbit/s loopback ceiling lost 3% this way).
    StreamParams p = fast_stream(30000);
    p.sleep_at = 150 * kMillisecond;
    p.sleep_for = 5 * kMillisecond;
    const StreamResult r = run_stream(p);
    report("960 Mbit/s, receiver asleep 5 ms", p, r);
    CHECK(r.sent == p.messages);
    CHECK(r.rx.drops.datagram_queue_full == 0);
    CHECK(r.delivered == p.messages);
    CHECK(r.malformed == 0);
    CHECK(r.duplicates == 0);
    CHECK(r.out_of_order == 0);
    // Those that fell due while it slept are handed over when it wakes,
    // late by at most the sleep: no more of them than 5 ms of the stream.
    CHECK(r.after_deadline <= 501);
    CHECK(r.after_deadline > 0);   // the sleep did happen where messages fell due
}

TEST_CASE("the symmetric clock: the whole latency on a symmetric path, late by at most half the asymmetry") {
    // 20 ms each way, 5% loss, latency 120 ms (the bench's path). Strict
    // releases one reverse one-way delay early (100 ms after the send): one
    // resend round fits. Symmetric releases its margin (latency / 24: 5 ms)
    // before the deadline: two fit, so the stream needs less protection (extra copies of resends,
    // FEC repairs: adaptive FEC's choice) and misses fewer.
    std::uint64_t copies[2] = {}, bytes[2] = {}, missing[2] = {};
    for (const bool sym : {false, true}) {
        for (std::uint64_t seed = 1; seed <= 3; ++seed) {
            CAPTURE(sym);
            CAPTURE(seed);
            StreamParams p;
            p.seed = seed;
            p.messages = 4000;
            p.delay = 20 * kMillisecond;
            p.jitter = kMillisecond;
            p.loss = 0.05;
            p.clock_symmetric = sym;
            const StreamResult r = run_stream(p);
            if (seed == 1) report(sym ? "symmetric clock, 20 ms each way" : "strict clock, 20 ms each way", p, r);
            check_common(p, r);
            CHECK(r.min_margin >= 0);
            copies[sym] += r.tx.extra_copies + r.tx.repairs_sent;
            bytes[sym] += r.tx.bytes_sent;
            missing[sym] += static_cast<std::uint64_t>(r.sent - r.delivered);
        }
    }
    MESSAGE("3 x 4,000 messages: strict " << missing[0] << " missing, " << copies[0] << " extra copies and repairs, "
                                          << bytes[0] << " bytes; symmetric " << missing[1] << " missing, "
                                          << copies[1] << " extra copies and repairs, " << bytes[1] << " bytes");
    CHECK(missing[1] < missing[0]);
    CHECK(copies[1] < copies[0]);
    CHECK(bytes[1] < bytes[0]);

    // 40 ms forward, 2 ms back: the midpoint is 19 ms past the true offset,
    // so messages are released up to 19 - 5 = 14 ms (and the jitter) after
    // their deadline. Strict is never late (the test above). The price of
    // the option, as docs/policy.md says.
    StreamParams p;
    p.delay = 40 * kMillisecond;
    p.reverse_delay = 2 * kMillisecond;
    p.jitter = kMillisecond;
    p.loss = 0.02;
    p.clock_symmetric = true;
    const StreamResult r = run_stream(p);
    report("symmetric clock, 40 ms forward, 2 ms back", p, r);
    CHECK(r.after_deadline > 0);
    CHECK(r.min_margin >= -16 * kMillisecond);
    CHECK(r.delivered > p.messages * 9 / 10);
}

TEST_CASE("a stream across the 2^16 seq wrap and the 2^32 us stamp wrap: all on time, in order") {
    // MESSAGE carries the low 16 bits of the seq and the low 32 bits of the
    // send time (wire/frame.h). 70,000 messages every 50 us cross the seq
    // wrap at 65,536 (3.3 s in); the sender's clock starts 1.5 s before
    // its 32-bit wrap, so the stamps wrap about 1.4 s into the stream,
    // while messages are lost, resent, repaired and reordered around it.
    StreamParams p;
    p.messages = 70000;
    p.interval = 50 * gs::sansio::kMicrosecond;
    p.size = 100;
    p.loss = 0.02;
    p.delay = 5 * kMillisecond;
    p.jitter = kMillisecond;
    p.clock_origin_us = (std::uint64_t{1} << 32) - 1'500'000;
    const StreamResult r = run_stream(p);
    report("seq and stamp wraps, 2% loss", p, r);
    check_common(p, r);
    CHECK(r.delivered == p.messages);
    CHECK(r.on_time_ratio() == 1.0);
    CHECK(r.rx.drops.bad_stamp == 0);
    CHECK(r.rx.late_arrivals == 0);
    CHECK(r.tx.retransmitted > 0);
}

TEST_CASE("an outage of more than 2^15 messages: the stream after it is delivered (its seqs re-anchored)") {
    // 20,000 messages a second; the path toward the receiver drops
    // everything for 2 s after 2 s: 40,000 messages lost in a row, more than
    // the 16-bit seq's half range, so the first ones after it decode 2^16
    // too low. Their stamps are newer than the largest seq's: re-anchored,
    // and the last second of the stream is delivered.
    StreamParams p;
    p.messages = 100000;
    p.interval = 50 * gs::sansio::kMicrosecond;
    p.size = 100;
    p.delay = 5 * kMillisecond;
    p.jitter = 0;
    p.reorders = false;
    p.outage_at = 2 * kSecond;
    p.outage_for = 2 * kSecond;
    const StreamResult r = run_stream(p);
    report("outage of 40,000 messages", p, r);
    CHECK(r.after_deadline == 0);
    CHECK(r.malformed == 0);
    CHECK(r.duplicates == 0);
    CHECK(r.out_of_order == 0);
    CHECK(r.rx.seq_reanchored >= 1);
    CHECK(r.last_index == p.messages - 1);
    // Before and after the outage (a few around its edges are lost too).
    CHECK(r.delivered >= 59000);
    CHECK(r.delivered <= 60500);
}

TEST_CASE("realtime: a lost INITIAL is sent again after a quarter of the latency, not 250 ms") {
    // Nobody at the address: count the INITIALs in the first 100 ms.
    for (std::uint8_t cls : {kClassRealtime, kClassReliable}) {
        CAPTURE(int(cls));
        gs::sim::Simulator sim(41);
        LinkParams lp;
        lp.delay = 10 * kMillisecond;
        REQUIRE(sim.set_default_link(lp) == 0);
        Host client(endpoint_config(Pair::kClient, 7));
        REQUIRE(sim.add_node(Pair::kClient, client) == 0);
        std::shared_ptr<Connection> c;
        gs::mces::wire::Qos q;
        q.latency_us = 120'000;   // a quarter: 30 ms
        REQUIRE(client.ep.connect(Pair::kServer, cls, cls == kClassRealtime ? q : gs::mces::wire::Qos{}, sim.now(), c) == 0);
        sim.kick(client);
        sim.run_until(sim.now() + 100 * kMillisecond);
        // Realtime: at 0, 30 and 90 ms (backing off); reliable: only the first.
        CHECK(client.sent_sizes.size() == (cls == kClassRealtime ? 3u : 1u));
    }
}

TEST_CASE("adaptive FEC: every repair the layout asks for is sent, however many") {
    // 30% loss, no resends: adaptive FEC raises r far above the configured
    // 10/2. Each block's repairs are queued at once; the queue must hold
    // what the current layout makes, not what the configured one did.
    StreamParams p;
    p.loss = 0.3;
    p.retransmit = false;
    p.reorders = false;
    p.messages = 3000;
    const StreamResult r = run_stream(p);
    check_common(p, r);
    report("adaptive, 30% loss, no resends", p, r);
    REQUIRE(r.tx.fec_repairs > 12);   // beyond a queue sized for 10/2: 4 x depth x 2 + 4
    CHECK(r.tx.repairs_dropped == 0);
}
