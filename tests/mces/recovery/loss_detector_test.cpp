#include <doctest/doctest.h>

#include <cerrno>
#include <vector>

#include "core/mces/recovery/loss_detector.h"

using namespace gs::mces;
using gs::sansio::Time;
using gs::sansio::kNever;
constexpr Time ms = gs::sansio::kMillisecond;

static SentPacket pkt(std::uint64_t pn, Time sent, std::uint32_t bytes = 1000) {
    return SentPacket{pn, sent, bytes, true, true, pn * 10};
}
static std::vector<std::uint64_t> pns(const std::vector<SentPacket>& v) {
    std::vector<std::uint64_t> r;
    for (const auto& p : v) r.push_back(p.pn);
    return r;
}

TEST_CASE("ack processing: newly acked, bytes in flight, rtt sample, tokens kept") {
    LossDetector ld;
    for (std::uint64_t pn = 0; pn < 4; ++pn) REQUIRE(ld.on_sent(pkt(pn, Time(pn) * ms)) == 0);
    CHECK(ld.bytes_in_flight() == 4000);
    AckOutcome out;
    const PacketRange r[] = {{0, 3}};
    REQUIRE(ld.on_ack(r, 0, 53 * ms, out) == 0);
    CHECK(pns(out.acked) == std::vector<std::uint64_t>{0, 1, 2, 3});
    CHECK(out.acked[2].token == 20);
    CHECK(out.acked_bytes == 4000);
    CHECK(out.rtt_sampled);
    CHECK(ld.rtt().latest() == 50 * ms);     // from the largest: sent at 3 ms
    CHECK(ld.bytes_in_flight() == 0);
    CHECK(ld.tracked() == 0);
    CHECK(ld.next_timeout() == kNever);
    // The same ACK again settles nothing and takes no sample.
    REQUIRE(ld.on_ack(r, 0, 60 * ms, out) == 0);
    CHECK(out.acked.empty());
    CHECK_FALSE(out.rtt_sampled);
}

TEST_CASE("packet threshold: 3 later packets acknowledged") {
    LossDetector ld;
    for (std::uint64_t pn = 0; pn < 5; ++pn) ld.on_sent(pkt(pn, Time(pn) * ms));
    AckOutcome out;
    const PacketRange r[] = {{1, 2}};
    REQUIRE(ld.on_ack(r, 0, 50 * ms, out) == 0);
    CHECK(out.lost.empty());               // largest 2 < 0 + 3
    const PacketRange r2[] = {{1, 3}};
    REQUIRE(ld.on_ack(r2, 0, 51 * ms, out) == 0);
    CHECK(pns(out.lost) == std::vector<std::uint64_t>{0});
    CHECK(out.lost_bytes == 1000);
    CHECK(out.largest_lost_sent == 0);
    CHECK(ld.bytes_in_flight() == 1000);        // packet 4 still out
}

TEST_CASE("time threshold: 9/8 * max(srtt, latest) arms the loss timer") {
    LossDetector ld;
    for (std::uint64_t pn = 0; pn < 4; ++pn) ld.on_sent(pkt(pn, Time(pn) * ms));
    AckOutcome out;
    const PacketRange r[] = {{1, 2}};
    REQUIRE(ld.on_ack(r, 0, 50 * ms, out) == 0);     // latest 48 ms
    CHECK(out.lost.empty());
    // loss delay 54 ms: packet 0 (sent at 0) is lost at 54 ms; 3 is above largest.
    CHECK(ld.next_timeout() == 54 * ms);
    CHECK(ld.on_timeout(53 * ms, out) == LossDetector::TimerAction::None);
    CHECK(ld.on_timeout(54 * ms, out) == LossDetector::TimerAction::LossDetected);
    CHECK(pns(out.lost) == std::vector<std::uint64_t>{0});
    // Only packet 3 remains: the PTO is armed from its send time.
    CHECK(ld.next_timeout() == 3 * ms + ld.rtt().pto(0));
}

TEST_CASE("PTO: exponential back-off, reset by an ACK") {
    LossDetector ld;
    ld.on_sent(pkt(0, 0));
    AckOutcome out;
    CHECK(ld.next_timeout() == 1024 * ms);           // no sample: 333 + 666 + 25
    CHECK(ld.on_timeout(1023 * ms, out) == LossDetector::TimerAction::None);
    CHECK(ld.on_timeout(1024 * ms, out) == LossDetector::TimerAction::Probe);
    CHECK(ld.pto_count() == 1);
    ld.on_sent(pkt(1, 1024 * ms));                   // the probe
    CHECK(ld.next_timeout() == 1024 * ms + 2048 * ms);
    CHECK(ld.on_timeout(3072 * ms, out) == LossDetector::TimerAction::Probe);
    ld.on_sent(pkt(2, 3072 * ms));
    CHECK(ld.next_timeout() == 3072 * ms + 4096 * ms);
    CHECK(ld.oldest_outstanding()->pn == 0);
    const PacketRange r[] = {{2, 2}};
    REQUIRE(ld.on_ack(r, 0, 3172 * ms, out) == 0);
    CHECK(ld.pto_count() == 0);
}

TEST_CASE("persistent congestion: lost run longer than 3 * PTO, nothing acked inside") {
    auto run = [](bool ack_in_middle) {
        LossDetector ld;
        AckOutcome out;
        ld.on_sent(pkt(0, 0));
        const PacketRange r0[] = {{0, 0}};
        ld.on_ack(r0, 0, 100 * ms, out);             // srtt 100, rttvar 50: pto_base 325 ms
        for (std::uint64_t pn = 1; pn <= 12; ++pn) ld.on_sent(pkt(pn, Time(100 + 100 * pn) * ms));
        if (ack_in_middle) {
            const PacketRange r6[] = {{6, 6}};
            ld.on_ack(r6, 0, 801 * ms, out);         // too early for anything to be lost by time
        }
        const PacketRange r12[] = {{12, 12}};
        ld.on_ack(r12, 0, 1400 * ms, out);
        return out;
    };
    const auto a = run(false);
    CHECK(a.lost.size() == 11);     // 1..11 span 1000 ms > 3 * pto_base (3 * 275 ms)
    CHECK(a.persistent_congestion);
    const auto b = run(true);
    CHECK_FALSE(b.persistent_congestion);            // an ACK inside breaks the run
    CHECK_FALSE(b.lost.empty());
}

TEST_CASE("untrusted ACKs are refused without changing state") {
    LossDetector ld;
    AckOutcome out;
    const PacketRange none[] = {{0, 0}};
    CHECK(ld.on_ack(none, 0, 0, out) == -EPROTO);    // nothing sent yet
    for (std::uint64_t pn = 0; pn < 10; ++pn) ld.on_sent(pkt(pn, 0));
    CHECK(ld.on_ack({}, 0, 1, out) == -EINVAL);
    const PacketRange inverted[] = {{5, 3}};
    CHECK(ld.on_ack(inverted, 0, 1, out) == -EINVAL);
    const PacketRange ascending[] = {{1, 2}, {5, 6}};
    CHECK(ld.on_ack(ascending, 0, 1, out) == -EINVAL);
    const PacketRange overlapping[] = {{5, 8}, {2, 5}};
    CHECK(ld.on_ack(overlapping, 0, 1, out) == -EINVAL);
    const PacketRange unsent[] = {{10, 10}};
    CHECK(ld.on_ack(unsent, 0, 1, out) == -EPROTO);
    CHECK(ld.invalid_acks() == 6);
    CHECK(ld.bytes_in_flight() == 10000);
    CHECK_FALSE(ld.has_largest_acked());
    const PacketRange ok[] = {{7, 9}, {2, 4}};
    CHECK(ld.on_ack(ok, 0, 1, out) == 0);
    CHECK(pns(out.acked) == std::vector<std::uint64_t>{2, 3, 4, 7, 8, 9});
}

TEST_CASE("sent map is bounded and packet numbers must increase") {
    LossConfig cfg;
    cfg.max_tracked = 4;
    LossDetector ld(cfg);
    for (std::uint64_t pn = 0; pn < 4; ++pn) CHECK(ld.on_sent(pkt(pn, 0)) == 0);
    CHECK(ld.on_sent(pkt(4, 0)) == -ENOBUFS);
    AckOutcome out;
    const PacketRange r[] = {{0, 1}};
    ld.on_ack(r, 0, 10 * ms, out);
    CHECK(ld.tracked() == 2);
    CHECK(ld.on_sent(pkt(3, 0)) == -EINVAL);
    CHECK(ld.on_sent(pkt(7, 0)) == 0);               // gaps in numbering are fine
}

TEST_CASE("spurious losses raise the packet and time thresholds, within their ceilings") {
    LossConfig cfg;
    cfg.max_packet_threshold = 6;
    LossDetector ld(cfg);
    AckOutcome out;
    for (std::uint64_t pn = 0; pn < 40; ++pn) ld.on_sent(pkt(pn, Time(pn) * ms));
    const PacketRange a[] = {{1, 5}};
    ld.on_ack(a, 0, 50 * ms, out);
    CHECK(pns(out.lost) == std::vector<std::uint64_t>{0});      // 5 >= 0 + 3
    const PacketRange b[] = {{0, 5}};                             // 0 was only late
    ld.on_ack(b, 0, 51 * ms, out);
    CHECK(out.spurious_losses == 1);
    CHECK(ld.packet_threshold() == 6);                            // 5 - 0 + 1
    CHECK(ld.time_threshold_num() == 9);                          // packets declared it, not time
    // With threshold 6, a gap of 5 is no longer a loss.
    const PacketRange c[] = {{7, 11}, {0, 5}};
    ld.on_ack(c, 0, 52 * ms, out);
    CHECK(out.lost.empty());
    // A distance beyond the ceiling stays capped.
    const PacketRange d[] = {{7, 20}, {0, 5}};
    ld.on_ack(d, 0, 53 * ms, out);
    CHECK(pns(out.lost) == std::vector<std::uint64_t>{6});
    const PacketRange e[] = {{0, 20}};
    ld.on_ack(e, 0, 54 * ms, out);
    CHECK(ld.packet_threshold() == 6);
    CHECK(ld.spurious_losses() == 2);
    // Time threshold: packet 0 sent 100 ms before packet 1, which is acked
    // 50 ms later (loss delay 56.25 ms): lost by time; then it is acked.
    LossDetector lt;
    lt.on_sent(pkt(0, 0));
    lt.on_sent(pkt(1, 100 * ms));
    const PacketRange f[] = {{1, 1}};
    lt.on_ack(f, 0, 150 * ms, out);
    CHECK(pns(out.lost) == std::vector<std::uint64_t>{0});
    const PacketRange g[] = {{0, 1}};
    lt.on_ack(g, 0, 151 * ms, out);
    CHECK(out.spurious_losses == 1);
    CHECK(lt.time_threshold_num() == 10);
    CHECK(lt.packet_threshold() == 3);
}
