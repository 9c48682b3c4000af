// The REPAIR frame body: writing, parsing, and every way a body can be wrong.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "core/mces/fec/repair_frame.h"

using namespace gs::mces::fec;

namespace {

std::vector<std::uint8_t> body(std::uint64_t id, unsigned stride, unsigned k, unsigned r, unsigned index,
                               std::size_t len) {
    std::vector<std::uint8_t> b(kRepairHeaderSize + len);
    REQUIRE(write_repair_header(b, id, stride, k, r, index, len) == 0);
    for (std::size_t i = 0; i < len; ++i) b[kRepairHeaderSize + i] = static_cast<std::uint8_t>(i * 7 + 1);
    return b;
}

ParseError parse(const std::vector<std::uint8_t>& b) {
    RepairView v;
    return parse_repair(b, v);
}

}  // namespace

TEST_CASE("frame: byte layout of a REPAIR body") {
    const auto b = body(0x0102030405060708ull, 4, 10, 3, 2, 5);
    const std::vector<std::uint8_t> head = {0x01, 1, 2, 3, 4, 5, 6, 7, 8, 4, 10, 3, 2, 0x00, 0x05};
    CHECK(std::vector<std::uint8_t>(b.begin(), b.begin() + 15) == head);
    RepairView v;
    REQUIRE(parse_repair(b, v) == ParseError::ok);
    CHECK(v.block_id == 0x0102030405060708ull);
    CHECK(v.stride == 4);
    CHECK(v.k == 10);
    CHECK(v.r == 3);
    CHECK(v.index == 2);
    CHECK(v.symbol.size() == 5);
    CHECK(v.symbol.data() == b.data() + 15);
    CHECK(v.last_seq() == 0x0102030405060708ull + 36);
}

TEST_CASE("frame: limits accepted at the edge, refused past it") {
    CHECK(parse(body(0, kMaxStride, kMaxK, kMaxR, kMaxR - 1, kMinSymbol)) == ParseError::ok);
    CHECK(parse(body(~0ull, 1, 1, 1, 0, kMinSymbol)) == ParseError::ok);       // one source at the last seq
    CHECK(parse(body(~0ull - 9, 1, 10, 1, 0, 2)) == ParseError::ok);

    auto b = body(5, 1, 4, 2, 1, 8);
    auto with = [&](std::size_t at, std::uint8_t v) {
        auto c = b;
        c[at] = v;
        return parse(c);
    };
    CHECK(with(0, 0x00) == ParseError::unknown_scheme);
    CHECK(with(0, 0x02) == ParseError::unknown_scheme);
    CHECK(with(9, 0) == ParseError::bad_stride);
    CHECK(with(9, kMaxStride + 1) == ParseError::bad_stride);
    CHECK(with(10, 0) == ParseError::bad_k);
    CHECK(with(10, kMaxK + 1) == ParseError::bad_k);
    CHECK(with(11, 0) == ParseError::bad_r);
    CHECK(with(11, kMaxR + 1) == ParseError::bad_r);
    CHECK(with(12, 2) == ParseError::bad_index);        // index == r
    CHECK(with(14, 1) == ParseError::bad_length);       // L = 1 < 2
    CHECK(with(14, 9) == ParseError::truncated);        // says 9, has 8
    CHECK(with(14, 7) == ParseError::trailing);         // says 7, has 8
    // block_id + (k - 1) * stride past 2^64 - 1
    auto o = body(~0ull, 1, 1, 1, 0, 2);
    o[10] = 2;
    CHECK(parse(o) == ParseError::bad_range);

    std::vector<std::uint8_t> out(15);
    CHECK(write_repair_header(out, 0, 0, 1, 1, 0, 2) == -EINVAL);
    CHECK(write_repair_header(out, 0, 1, 1, 1, 1, 2) == -EINVAL);
    CHECK(write_repair_header(out, ~0ull, 1, 2, 1, 0, 2) == -EINVAL);
    CHECK(write_repair_header(std::span<std::uint8_t>(out).first(14), 0, 1, 1, 1, 0, 2) == -EMSGSIZE);
    for (ParseError e : {ParseError::ok, ParseError::truncated, ParseError::bad_range})
        CHECK(std::string(to_string(e)).size() > 1);
}

TEST_CASE("frame: every truncation of a valid body is refused") {
    const auto b = body(77, 2, 8, 2, 1, 40);
    for (std::size_t n = 0; n < b.size(); ++n) {
        std::vector<std::uint8_t> c(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
        REQUIRE(parse(c) == ParseError::truncated);
    }
    CHECK(parse(b) == ParseError::ok);
}

TEST_CASE("frame: random bytes parse to ok only when every field is in range") {
    std::mt19937_64 rng(3);
    std::size_t ok = 0;
    for (int i = 0; i < 200000; ++i) {
        std::vector<std::uint8_t> c(rng() % 40);
        for (auto& x : c) x = static_cast<std::uint8_t>(rng());
        if (!c.empty() && rng() % 2) c[0] = 1;
        if (c.size() >= 15 && rng() % 2) {   // make the length match sometimes
            c[13] = 0;
            c[14] = static_cast<std::uint8_t>(c.size() - 15);
        }
        RepairView v;
        if (parse_repair(c, v) != ParseError::ok) continue;
        ++ok;
        REQUIRE(v.stride >= 1);
        REQUIRE(v.stride <= kMaxStride);
        REQUIRE(v.k >= 1);
        REQUIRE(v.index < v.r);
        REQUIRE(v.symbol.size() + 15 == c.size());
        REQUIRE(v.symbol.size() >= kMinSymbol);
    }
    CHECK(ok > 0);
}
