// HC wire format: round trips, strict rejection, and (with HC_CORPUS_DIR set)
// the fuzz seed corpus: one valid datagram of every type.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/overlay/hc/wire.h"

using namespace gs::overlay::hc;
using gs::overlay::Addr;

namespace {

constexpr std::uint64_t kOverlay = 0x1122334455667788ull;

View sample_view() {
    View v;
    v.epoch = 2;
    v.claim = 7;
    v.seq = 99;
    v.n = 12;
    v.head = Addr::v4(0x0a000001, 9000);
    v.add_move(gray(11), 98);
    v.add_move(gray(3), 99);
    return v;
}

const std::uint8_t kPayload[] = {'h', 'e', 'l', 'l', 'o'};

std::vector<std::pair<const char*, Message>> samples() {
    const Addr a = Addr::v4(0x0a000002, 9001);
    Data d;
    d.src = 5; d.incarnation = 0xdeadbeef; d.root = 5; d.kind = Kind::all; d.dest = 0;
    d.seq = 42; d.ttl = 10; d.payload = kPayload;
    Data dn = d;
    dn.kind = Kind::node; dn.dest = 9;
    return {
        {"join_req", JoinReq{a, 0x0102030405060708ull, 32}},
        {"join_ack", JoinAck{gray(11), gray(10), 77, sample_view()}},
        {"ping", Ping{gray(4), 0, sample_view()}},
        {"ping_reply", Ping{gray(4), Ping::kReply, sample_view()}},
        {"seek", Seek{gray(6), gray(2), a, 30}},
        {"report", Report{gray(3), gray(2), a, 2, 97, 0, 32}},
        {"report_leave", Report{gray(3), gray(3), a, 2, 97, Report::kLeave, 32}},
        {"leave", Leave{gray(9)}},
        {"conflict", Conflict{gray(9), a}},
        {"decline", Decline{gray(11), 77}},
        {"data_all", d},
        {"data_node", dn},
    };
}

}  // namespace

TEST_CASE("every message type round-trips") {
    std::vector<std::uint8_t> buf, again;
    for (auto& sample : samples()) {
        const auto& name = sample.first;   // a structured binding cannot be captured in C++20
        auto& m = sample.second;
        CAPTURE(name);
        encode(m, kOverlay, buf);
        Message back;
        REQUIRE(parse(buf, kOverlay, back) == ParseResult::ok);
        CHECK(back.index() == m.index());
        encode(back, kOverlay, again);
        CHECK(again == buf);
        // every strict prefix and one trailing byte are malformed
        for (std::size_t len = 0; len < buf.size(); ++len) {
            Message x;
            auto r = parse(std::span(buf.data(), len), kOverlay, x);
            CHECK(r != ParseResult::ok);
        }
        auto longer = buf;
        longer.push_back(0);
        Message x;
        CHECK(parse(longer, kOverlay, x) == ParseResult::malformed);
        // another overlay, protocol, version or magic is foreign
        CHECK(parse(buf, kOverlay + 1, x) == ParseResult::foreign);
        for (std::size_t at : {0u, 2u, 3u}) {
            auto f = buf;
            f[at] ^= 0x40;
            CHECK(parse(f, kOverlay, x) == ParseResult::foreign);
        }
    }
}

TEST_CASE("fields out of range are malformed") {
    std::vector<std::uint8_t> buf;
    Message x;
    auto type_at = gs::overlay::kPrefixSize - 1;
    encode(Leave{1}, kOverlay, buf);
    buf[type_at] = 0x7f;   // unknown type
    CHECK(parse(buf, kOverlay, x) == ParseResult::malformed);
    encode(Leave{1}, kOverlay, buf);
    buf[type_at + 1] = 0x80;   // label >= 2^kMaxDim
    CHECK(parse(buf, kOverlay, x) == ParseResult::malformed);

    encode(Ping{1, 0, sample_view()}, kOverlay, buf);
    auto flags = buf;
    flags[gs::overlay::kPrefixSize + 4] = 0x02;   // unknown flag bit
    CHECK(parse(flags, kOverlay, x) == ParseResult::malformed);
    auto zero_n = buf;
    const std::size_t n_at = gs::overlay::kPrefixSize + 5 + 12;
    for (int i = 0; i < 4; ++i) zero_n[n_at + i] = 0;   // n = 0
    CHECK(parse(zero_n, kOverlay, x) == ParseResult::malformed);
    auto many_moves = buf;
    many_moves[n_at + 4 + 18 + 4] = kMaxMoves + 1;
    CHECK(parse(many_moves, kOverlay, x) == ParseResult::malformed);

    Data d;
    d.payload = kPayload;
    d.kind = Kind::node;
    encode(d, kOverlay, buf);
    auto kind = buf;
    kind[gs::overlay::kPrefixSize + 12] = 3;   // unknown destination kind
    CHECK(parse(kind, kOverlay, x) == ParseResult::malformed);
    auto ttl = buf;
    ttl[gs::overlay::kPrefixSize + 21] = kMaxTtl + 1;
    CHECK(parse(ttl, kOverlay, x) == ParseResult::malformed);
    auto len = buf;
    len[buf.size() - sizeof kPayload - 1] = sizeof kPayload + 1;   // claims one more byte
    CHECK(parse(len, kOverlay, x) == ParseResult::malformed);
}

TEST_CASE("the moves list keeps the newest and raises the floor") {
    View v;
    for (std::uint32_t i = 1; i <= kMaxMoves + 3; ++i) v.add_move(i, i);
    CHECK(v.nmoves == kMaxMoves);
    CHECK(v.moves_floor == 3);
    CHECK(v.moves[0].seq == 4);
    CHECK(v.moves[kMaxMoves - 1].seq == kMaxMoves + 3);
}

TEST_CASE("seed corpus for overlay_hc_fuzz") {
    // Writes the corpus only when asked: HC_CORPUS_DIR=tests/fuzz/corpus/overlay_hc
    const char* dir = std::getenv("HC_CORPUS_DIR");
    std::vector<std::uint8_t> buf;
    for (auto& [name, m] : samples()) {
        encode(m, kOverlay, buf);
        CHECK(buf.size() > gs::overlay::kPrefixSize);
        if (!dir) continue;
        std::string path = std::string(dir) + "/" + name + ".bin";
        FILE* f = std::fopen(path.c_str(), "wb");
        REQUIRE(f != nullptr);
        CHECK(std::fwrite(buf.data(), 1, buf.size(), f) == buf.size());
        std::fclose(f);
    }
}
