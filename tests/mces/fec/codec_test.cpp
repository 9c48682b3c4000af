// Encoder and decoder together: round trips, every erasure pattern for small
// blocks, bursts against interleaving, deadlines, gaps, hostile input and the
// memory bound.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <set>

#include "tests/mces/fec/harness.h"

using namespace gs::mces::fec;
using fectest::Receiver;
using fectest::WirePacket;

namespace {

EncoderConfig enc_cfg(unsigned k, unsigned r, unsigned depth = 1, std::size_t max_packet = 300) {
    EncoderConfig c;
    c.layout = {k, r, depth};
    c.max_packet = max_packet;
    c.max_pending = 4096;
    return c;
}

DecoderConfig dec_cfg(std::size_t max_packet = 300) {
    DecoderConfig c;
    c.max_packet = max_packet;
    return c;
}

std::size_t count_repairs(const std::vector<WirePacket>& w) {
    return static_cast<std::size_t>(std::count_if(w.begin(), w.end(), [](const WirePacket& p) { return p.repair; }));
}

}  // namespace

TEST_CASE("codec: no loss: r repairs per block, nothing to recover, repairs unneeded") {
    Encoder enc(enc_cfg(8, 2));
    REQUIRE(enc.valid());
    const auto wire = fectest::send(enc, 1000, 80, 200);
    CHECK(count_repairs(wire) == 20);
    CHECK(enc.counters().blocks == 10);
    CHECK(enc.counters().partial_blocks == 0);
    Receiver rx(dec_cfg(), 200);
    for (const auto& w : wire) rx.deliver(w);
    CHECK(rx.got.size() == 80);
    CHECK(rx.dec.counters().repaired == 0);
    CHECK(rx.dec.counters().repair_unneeded == 20);
    CHECK(rx.dec.active_blocks() == 0);
}

TEST_CASE("codec: any r of k + r erasures are repaired (exhaustive, k <= 6, r <= 3)") {
    for (unsigned k = 1; k <= 6; ++k)
        for (unsigned r = 1; r <= 3; ++r) {
            Encoder enc(enc_cfg(k, r));
            const auto wire = fectest::send(enc, 50, k, 120);
            REQUIRE(wire.size() == k + r);
            const unsigned n = k + r;
            for (unsigned mask = 0; mask < (1u << n); ++mask) {
                const auto lost = static_cast<unsigned>(__builtin_popcount(mask));
                if (lost > r) continue;
                Receiver rx(dec_cfg(), 120);
                for (unsigned i = 0; i < n; ++i)
                    if (!(mask >> i & 1)) rx.deliver(wire[i]);
                INFO("k=" << k << " r=" << r << " lost mask=" << mask);
                REQUIRE(rx.got.size() == k);
                REQUIRE(rx.wrong == 0);
                REQUIRE(rx.double_delivered == 0);
            }
        }
}

TEST_CASE("codec: r + 1 erasures of sources cannot be repaired and are counted once the block expires") {
    Encoder enc(enc_cfg(4, 2));
    auto wire = fectest::send(enc, 0, 4, 50);
    DecoderConfig dc = dec_cfg();
    dc.source_window = 16;
    Receiver rx(dc, 50);
    // lose sources 0, 1, 2: three erasures, two repairs
    for (std::size_t i = 3; i < wire.size(); ++i) rx.deliver(wire[i]);
    CHECK(rx.got.size() == 1);
    CHECK(rx.dec.active_blocks() == 1);
    // later traffic moves the window past the block
    Encoder enc2(enc_cfg(4, 2));
    for (const auto& w : fectest::send(enc2, 100, 4, 50)) rx.deliver(w);
    CHECK(rx.dec.active_blocks() == 0);
    CHECK(rx.dec.counters().blocks_expired == 1);
    CHECK(rx.dec.counters().unrecoverable == 3);
}

TEST_CASE("codec: recovery happens at the k-th symbol of the block, not later") {
    Encoder enc(enc_cfg(5, 2));
    const auto wire = fectest::send(enc, 10, 5, 64);   // s0..s4 R0 R1
    Receiver rx(dec_cfg(), 64);
    rx.deliver(wire[0]);
    rx.deliver(wire[2]);
    rx.deliver(wire[3]);
    rx.deliver(wire[5]);   // R0: 4 symbols of 5
    CHECK(rx.got.size() == 3);
    rx.deliver(wire[6]);   // R1: the fifth
    CHECK(rx.got.size() == 5);
    CHECK(rx.got.at(11) == true);
    CHECK(rx.got.at(14) == true);
    // the late originals are duplicates, and the caller is told so
    CHECK(rx.dec.on_source(11, wire[1].bytes) == SourceResult::duplicate);
    CHECK(rx.wrong == 0);
}

TEST_CASE("codec: repairs before their sources, any order, duplicates") {
    std::mt19937_64 rng(5);
    for (int trial = 0; trial < 200; ++trial) {
        Encoder enc(enc_cfg(10, 3));
        auto wire = fectest::send(enc, 1u << 20, 100, 250);
        // lose up to 3 symbols per block, then shuffle within a window of 30 and duplicate some
        std::vector<WirePacket> in;
        std::size_t block_lost = 0, pos = 0;
        for (auto& w : wire) {
            if (pos % 13 == 0) block_lost = 0;
            ++pos;
            if (block_lost < 3 && rng() % 5 == 0) {
                ++block_lost;
                continue;
            }
            in.push_back(w);
            if (rng() % 7 == 0) in.push_back(w);
        }
        for (std::size_t i = 0; i + 1 < in.size(); ++i) std::swap(in[i], in[i + rng() % std::min<std::size_t>(30, in.size() - i)]);
        Receiver rx(dec_cfg(), 250);
        for (const auto& w : in) rx.deliver(w);
        REQUIRE(rx.got.size() == 100);
        REQUIRE(rx.wrong == 0);
        REQUIRE(rx.double_delivered == 0);
    }
}

TEST_CASE("codec: variable lengths, empty packets, one byte and max_packet") {
    Encoder enc(enc_cfg(4, 2, 1, 1000));
    Receiver rx(dec_cfg(1000), 0);
    const std::vector<std::vector<std::uint8_t>> pk = {{}, std::vector<std::uint8_t>(1000, 0xab), {7}, {}};
    std::vector<WirePacket> wire;
    std::vector<std::uint8_t> body;
    for (std::uint64_t i = 0; i < 4; ++i) {
        REQUIRE(enc.add_source(i, pk[i], 0) == 0);
        wire.push_back({false, i, pk[i]});
    }
    while (enc.poll_repair(body)) wire.push_back({true, 0, body});
    REQUIRE(wire.size() == 6);
    CHECK(wire[4].bytes.size() == kRepairHeaderSize + 1002);
    // lose the long one and an empty one
    Decoder dec(dec_cfg(1000));
    dec.on_source(2, pk[2]);
    dec.on_source(3, pk[3]);
    dec.on_repair(wire[4].bytes);
    dec.on_repair(wire[5].bytes);
    std::map<std::uint64_t, std::vector<std::uint8_t>> out;
    Recovered r;
    while (dec.poll_recovered(r)) out[r.seq].assign(r.bytes.begin(), r.bytes.end());
    REQUIRE(out.size() == 2);
    CHECK(out[0] == pk[0]);
    CHECK(out[1] == pk[1]);
    // too long is refused by both
    std::vector<std::uint8_t> big(1001);
    CHECK(enc.add_source(4, big, 0) == -EMSGSIZE);
    CHECK(enc.counters().too_long == 1);
    CHECK(dec.on_source(9, big) == SourceResult::too_long);
}

TEST_CASE("codec: interleaving repairs a burst of depth * r consecutive losses") {
    const unsigned k = 8, r = 2, depth = 6;
    Encoder enc(enc_cfg(k, r, depth));
    auto wire = fectest::send(enc, 0, k * depth * 3, 100);
    CHECK(count_repairs(wire) == r * depth * 3);
    // Lose every run of B = depth * r consecutive *source* packets, one start at a time.
    std::vector<std::size_t> src_pos;
    for (std::size_t i = 0; i < wire.size(); ++i)
        if (!wire[i].repair) src_pos.push_back(i);
    const std::size_t burst = depth * r;
    for (std::size_t start = 0; start + burst <= src_pos.size(); start += 5) {
        Receiver rx(dec_cfg(), 100);
        std::set<std::size_t> lost;
        for (std::size_t j = start; j < start + burst; ++j) lost.insert(src_pos[j]);
        for (std::size_t i = 0; i < wire.size(); ++i)
            if (!lost.count(i)) rx.deliver(wire[i]);
        INFO("burst from source " << start);
        REQUIRE(rx.got.size() == k * depth * 3);
        REQUIRE(rx.wrong == 0);
    }
    // The same burst without interleaving is beyond repair.
    Encoder flat(enc_cfg(k, r, 1));
    auto w1 = fectest::send(flat, 0, k * depth * 3, 100);
    Receiver rx(dec_cfg(), 100);
    std::size_t seen = 0;
    for (const auto& w : w1) {
        const bool lost = !w.repair && w.seq >= 20 && w.seq < 20 + burst;
        if (!lost) rx.deliver(w);
        seen += lost;
    }
    CHECK(seen == burst);
    CHECK(rx.got.size() < k * depth * 3);
}

TEST_CASE("codec: a deadline flush repairs a partial block; interleaved partial groups too") {
    EncoderConfig c = enc_cfg(10, 2, 3);
    c.max_delay = 5 * gs::sansio::kMillisecond;
    Encoder enc(c);
    CHECK(enc.next_timeout() == gs::sansio::kNever);
    std::vector<WirePacket> wire;
    for (std::uint64_t s = 0; s < 7; ++s) {
        auto p = fectest::packet(s, 80);
        enc.add_source(s, p, 1000 + static_cast<gs::sansio::Time>(s));
        wire.push_back({false, s, p});
    }
    CHECK(enc.next_timeout() == 1000 + 5 * gs::sansio::kMillisecond);
    enc.on_timeout(1000 + 5 * gs::sansio::kMillisecond - 1);
    CHECK(enc.pending() == 0);
    enc.on_timeout(1000 + 5 * gs::sansio::kMillisecond);
    CHECK(enc.pending() == 6);   // 3 partial blocks (3, 2, 2 packets) x 2
    CHECK(enc.counters().partial_blocks == 3);
    CHECK(enc.counters().deadline_flushes == 1);
    CHECK(enc.next_timeout() == gs::sansio::kNever);
    std::vector<std::uint8_t> body;
    while (enc.poll_repair(body)) wire.push_back({true, 0, body});
    // lose two packets of block 0 (seqs 0 and 3) and one of block 1 (seq 1)
    Receiver rx(dec_cfg(), 80);
    for (const auto& w : wire)
        if (w.repair || (w.seq != 0 && w.seq != 3 && w.seq != 1)) rx.deliver(w);
    CHECK(rx.got.size() == 7);
    CHECK(rx.wrong == 0);
}

TEST_CASE("codec: a gap in sequence numbers closes the group; set_layout flushes") {
    Encoder enc(enc_cfg(4, 1));
    std::vector<std::uint8_t> p(10, 1), body;
    enc.add_source(0, p, 0);
    enc.add_source(1, p, 0);
    enc.add_source(5, p, 0);   // gap
    CHECK(enc.counters().gaps == 1);
    CHECK(enc.pending() == 1);
    REQUIRE(enc.poll_repair(body));
    RepairView v;
    REQUIRE(parse_repair(body, v) == ParseError::ok);
    CHECK(v.block_id == 0);
    CHECK(v.k == 2);
    CHECK(enc.set_layout({4, 2, 2}) == 0);   // flushes the block started at 5
    CHECK(enc.pending() == 1);
    REQUIRE(enc.poll_repair(body));
    REQUIRE(parse_repair(body, v) == ParseError::ok);
    CHECK(v.block_id == 5);
    CHECK(v.k == 1);
    CHECK(enc.set_layout({0, 2, 2}) == -EINVAL);
    CHECK(enc.config().layout == Layout{4, 2, 2});
    // the last sequence number: the group cannot run past it
    enc.add_source(~0ull, p, 0);
    CHECK(enc.pending() == 2);
}

TEST_CASE("codec: invalid configurations are refused") {
    CHECK_FALSE(Encoder(enc_cfg(0, 1)).valid());
    CHECK_FALSE(Encoder(enc_cfg(kMaxK + 1, 1)).valid());
    CHECK_FALSE(Encoder(enc_cfg(4, kMaxR + 1)).valid());
    CHECK_FALSE(Encoder(enc_cfg(4, 1, kMaxStride + 1)).valid());
    CHECK_FALSE(Encoder(enc_cfg(4, 1, 1, kMaxPacket + 1)).valid());
    Encoder bad(enc_cfg(0, 1));
    std::vector<std::uint8_t> p(3);
    CHECK(bad.add_source(0, p, 0) == -EINVAL);
    DecoderConfig d;
    d.source_window = 0;
    Decoder dec(d);
    CHECK_FALSE(dec.valid());
    CHECK(dec.on_repair(p) == -EINVAL);
    CHECK(dec.on_source(1, p) == SourceResult::stale);
}

TEST_CASE("codec: garbage, truncated, forged and inconsistent repairs are dropped and counted") {
    Encoder enc(enc_cfg(6, 2));
    const auto wire = fectest::send(enc, 500, 6, 90);
    Receiver rx(dec_cfg(), 90);
    std::mt19937_64 rng(9);
    // random garbage
    for (int i = 0; i < 2000; ++i) {
        std::vector<std::uint8_t> g(rng() % 60);
        for (auto& x : g) x = static_cast<std::uint8_t>(rng());
        rx.dec.on_repair(g);
    }
    CHECK(rx.dec.counters().malformed > 1900);
    // truncations of a real repair
    const auto& rep = wire[6].bytes;
    for (std::size_t n = 0; n < rep.size(); ++n)
        CHECK(rx.dec.on_repair(std::span<const std::uint8_t>(rep).first(n)) == -EBADMSG);
    CHECK(rx.dec.last_parse_error() == ParseError::truncated);
    // a real repair with its symbol length changed (and padded to match)
    auto odd = rep;
    odd.push_back(0);
    odd[14] = static_cast<std::uint8_t>(odd[14] + 1);
    if (odd[14] == 0) odd[13]++;
    // lose sources 502 and 503 (two missing: the block waits for a second repair)
    for (std::size_t i = 0; i < 6; ++i)
        if (i != 2 && i != 3) rx.deliver(wire[i]);
    CHECK(rx.dec.on_repair(odd) == 0);            // starts the block with L + 1
    CHECK(rx.dec.on_repair(wire[6].bytes) == 0);  // same block, other L: inconsistent
    CHECK(rx.dec.counters().inconsistent == 1);
    CHECK(rx.dec.active_blocks() == 1);
    rx.drain();
    CHECK(rx.wrong == 0);
    // a bit flipped in the symbol of a repair: the decode of a forged symbol is refused
    Receiver rx2(dec_cfg(), 90);
    auto flip = wire[6].bytes;
    flip[kRepairHeaderSize] ^= 0x40;   // the length prefix of the sum
    for (std::size_t i = 0; i < 6; ++i)
        if (i != 2) rx2.deliver(wire[i]);
    rx2.dec.on_repair(flip);
    CHECK(rx2.dec.counters().decode_failed == 1);
    CHECK(rx2.got.size() == 5);
    CHECK(rx2.wrong == 0);
    // the genuine repair row 1 then recovers it
    rx2.deliver(wire[7]);
    CHECK(rx2.got.size() == 6);
    CHECK(rx2.wrong == 0);
    // a symbol longer than the decoder's max_packet
    Encoder big(enc_cfg(2, 1, 1, 1000));
    auto bw = fectest::send(big, 0, 2, 0);
    std::vector<std::uint8_t> p(900, 3);
    big.add_source(10, p, 0);
    big.flush();
    std::vector<std::uint8_t> body;
    while (big.poll_repair(body)) {}
    CHECK(rx.dec.on_repair(body) == -EBADMSG);
    CHECK(rx.dec.counters().too_long == 1);
}

TEST_CASE("codec: stale sources and repairs, too-wide blocks, far-future block ids") {
    DecoderConfig dc = dec_cfg();
    dc.source_window = 64;
    Decoder dec(dc);
    std::vector<std::uint8_t> p(5, 1);
    CHECK(dec.on_source(1000, p) == SourceResult::stored);
    CHECK(dec.on_source(1000, p) == SourceResult::duplicate);
    CHECK(dec.on_source(1000 - 64, p) == SourceResult::stale);
    CHECK(dec.on_source(1000 - 63, p) == SourceResult::stored);
    std::vector<std::uint8_t> b(kRepairHeaderSize + 7);
    // too wide: (k - 1) * stride >= window
    REQUIRE(write_repair_header(b, 990, 8, 9, 1, 0, 7) == 0);
    CHECK(dec.on_repair(b) == -ENOSPC);
    CHECK(dec.counters().too_wide == 1);
    // block below the window
    REQUIRE(write_repair_header(b, 900, 1, 4, 1, 0, 7) == 0);
    CHECK(dec.on_repair(b) == 0);
    CHECK(dec.counters().repair_stale == 1);
    // far ahead of the horizon: refused, the horizon stays
    REQUIRE(write_repair_header(b, 1u << 30, 1, 4, 1, 0, 7) == 0);
    CHECK(dec.on_repair(b) == 0);
    CHECK(dec.counters().repair_stale == 2);
    // the horizon did not move: 939 is still in the window
    CHECK(dec.on_source(1001, p) == SourceResult::stored);
    CHECK(dec.has(1000));
    CHECK(dec.on_source(1000 - 61, p) == SourceResult::stored);
}

TEST_CASE("codec: memory stays within the bound under a flood of distinct blocks") {
    DecoderConfig dc;
    dc.max_packet = 1200;
    dc.source_window = 256;
    dc.max_blocks = 16;
    dc.repair_slots = 40;
    Decoder dec(dc);
    std::mt19937_64 rng(1);
    std::vector<std::uint8_t> b(kRepairHeaderSize + 1202), src(1200);
    std::size_t peak = 0;
    for (int i = 0; i < 20000; ++i) {
        const std::uint64_t id = 10000 + rng() % 300;
        const unsigned k = 1 + static_cast<unsigned>(rng() % 20), r = 1 + static_cast<unsigned>(rng() % 8);
        const std::size_t len = 2 + rng() % 1201;
        REQUIRE(write_repair_header(b, id, 1 + static_cast<unsigned>(rng() % 4), k, r,
                                    static_cast<unsigned>(rng() % r), len) == 0);
        for (std::size_t j = 0; j < len; ++j) b[kRepairHeaderSize + j] = static_cast<std::uint8_t>(rng());
        dec.on_repair(std::span<const std::uint8_t>(b).first(kRepairHeaderSize + len));
        if (rng() % 3 == 0) dec.on_source(10000 + rng() % 300, std::span<const std::uint8_t>(src).first(rng() % 1201));
        Recovered rc;
        while (dec.poll_recovered(rc)) REQUIRE(rc.bytes.size() <= 1200);
        REQUIRE(dec.active_blocks() <= dc.max_blocks);
        peak = std::max(peak, dec.memory_in_use());
    }
    MESSAGE("decoder peak memory " << peak << " of bound " << dec.memory_bound());
    CHECK(peak <= dec.memory_bound());
    CHECK(dec.counters().blocks_evicted > 0);
    CHECK(dec.counters().repairs > 0);
}

TEST_CASE("codec: steady state allocates nothing new: memory in use stops growing") {
    Encoder enc(enc_cfg(10, 2, 2, 500));
    DecoderConfig dc = dec_cfg(500);
    dc.source_window = 128;
    Receiver rx(dc, 500);
    std::mt19937_64 rng(2);
    std::size_t after_warmup = 0;
    for (int round = 0; round < 20; ++round) {
        auto wire = fectest::send(enc, static_cast<std::uint64_t>(round) * 200, 200, 500);
        for (const auto& w : wire)
            if (rng() % 20) rx.deliver(w);
        if (round == 4) after_warmup = rx.dec.memory_in_use();
    }
    CHECK(rx.dec.memory_in_use() == after_warmup);
    CHECK(rx.wrong == 0);
}

TEST_CASE("codec: with no room, the oldest block is evicted; a block cannot evict itself") {
    Encoder enc(enc_cfg(4, 2));
    const auto wire = fectest::send(enc, 0, 8, 40);   // block 0: s0-s3 R R, block 1: s4-s7 R R
    REQUIRE(wire.size() == 12);
    {
        DecoderConfig dc = dec_cfg();
        dc.max_blocks = 1;
        Receiver rx(dc, 40);
        // two sources of each block lost, one repair each: both blocks wait
        rx.deliver(wire[2]);
        rx.deliver(wire[3]);
        rx.deliver(wire[4]);
        rx.deliver(wire[8]);
        rx.deliver(wire[9]);
        rx.deliver(wire[10]);   // block 1 pushes block 0 out
        CHECK(rx.dec.counters().blocks_evicted == 1);
        CHECK(rx.dec.counters().unrecoverable == 2);
        rx.deliver(wire[11]);   // block 1 completes
        CHECK(rx.got.size() == 6);
        CHECK(rx.dec.counters().repaired == 2);
        CHECK(rx.wrong == 0);
    }
    {
        DecoderConfig dc = dec_cfg();
        dc.repair_slots = 1;
        Receiver rx(dc, 40);
        rx.deliver(wire[2]);
        rx.deliver(wire[3]);
        rx.deliver(wire[4]);
        CHECK(rx.dec.on_repair(wire[5].bytes) == -ENOSPC);   // its own block holds the only slot
        CHECK(rx.dec.counters().no_slot == 1);
        CHECK(rx.dec.active_blocks() == 1);
        CHECK(rx.got.size() == 2);
    }
}
