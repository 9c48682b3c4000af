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
    v.cube = 0x0102030405060708ull;
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
        {"merge", Merge{0x1111222233334444ull, 12, a, 0, 32}},
        {"merge_order", Merge{0x5555666677778888ull, 40, a, Merge::kOrder, 31}},
        {"dissolve", Dissolve{0x1111222233334444ull, a}},
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
    many_moves[n_at + 4 + 8 + 18 + 4] = kMaxMoves + 1;   // n, cube, head, moves_floor
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

TEST_CASE("merge and dissolve: byte layout and strict fields") {
    std::vector<std::uint8_t> buf;
    Message x;
    const Addr a = Addr::v4(0x0a000002, 9001);
    encode(Merge{0x1111222233334444ull, 12, a, Merge::kOrder, 32}, kOverlay, buf);
    // prefix 13 · cube u64 · n u32 · head 18 · flags u8 · ttl u8
    REQUIRE(buf.size() == gs::overlay::kPrefixSize + 32);
    CHECK(buf[12] == 0x09);
    CHECK(buf[13] == 0x11);
    CHECK(buf[24] == 12);
    CHECK(buf[25 + 15] == 2);          // 10.0.0.2
    CHECK(buf[25 + 17] == 0x29);       // port 9001 = 0x2329
    CHECK(buf[43] == Merge::kOrder);
    CHECK(buf[44] == 32);
    REQUIRE(parse(buf, kOverlay, x) == ParseResult::ok);
    CHECK(std::get<Merge>(x).cube == 0x1111222233334444ull);
    auto bad = buf;
    bad[43] = 0x02;   // unknown flag
    CHECK(parse(bad, kOverlay, x) == ParseResult::malformed);
    bad = buf;
    bad[21] = bad[22] = bad[23] = bad[24] = 0;   // n = 0
    CHECK(parse(bad, kOverlay, x) == ParseResult::malformed);
    bad = buf;
    bad[41] = bad[42] = 0;   // head port 0
    CHECK(parse(bad, kOverlay, x) == ParseResult::malformed);
    bad = buf;
    bad[44] = kMaxTtl + 1;
    CHECK(parse(bad, kOverlay, x) == ParseResult::malformed);

    encode(Dissolve{7, a}, kOverlay, buf);
    // prefix 13 · cube u64 · target 18
    REQUIRE(buf.size() == gs::overlay::kPrefixSize + 26);
    CHECK(buf[12] == 0x0a);
    CHECK(buf[20] == 7);
    REQUIRE(parse(buf, kOverlay, x) == ParseResult::ok);
    bad = buf;
    bad[37] = bad[38] = 0;   // target port 0
    CHECK(parse(bad, kOverlay, x) == ParseResult::malformed);

    // The view carries the cube id right after n.
    View v;
    v.n = 3;
    v.cube = 0xabcdef;
    v.head = a;
    encode(Ping{1, 0, v}, kOverlay, buf);
    const std::size_t cube_at = gs::overlay::kPrefixSize + 5 + 16;   // sender, flags, epoch..n
    CHECK(buf[cube_at + 7] == 0xef);
    CHECK(buf.size() == gs::overlay::kPrefixSize + 5 + 47);
    REQUIRE(parse(buf, kOverlay, x) == ParseResult::ok);
    CHECK(std::get<Ping>(x).view.cube == 0xabcdef);
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
