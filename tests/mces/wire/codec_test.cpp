// Varints, byte cursors and CRC32C.
#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/mces/wire/codec.h"
#include "core/mces/wire/crc32c.h"

using namespace gs::mces::wire;

TEST_CASE("varint: boundaries round-trip with the shortest encoding") {
    const std::uint64_t values[] = {0, 1, 63, 64, 16383, 16384, (1u << 30) - 1, 1u << 30,
                                    kVarintMax - 1, kVarintMax};
    const std::size_t sizes[] = {1, 1, 1, 2, 2, 4, 4, 8, 8, 8};
    for (std::size_t i = 0; i < std::size(values); ++i) {
        std::array<std::uint8_t, 8> buf{};
        Writer w(buf);
        w.varint(values[i]);
        REQUIRE(w.ok());
        CHECK(w.size() == sizes[i]);
        CHECK(varint_size(values[i]) == sizes[i]);
        Reader r(w.written());
        std::uint64_t v = 0;
        REQUIRE(r.varint(v));
        CHECK(v == values[i]);
        CHECK(r.empty());
        // every shorter prefix is a truncation, and the cursor does not move
        for (std::size_t n = 0; n < w.size(); ++n) {
            Reader rt(w.written().first(n));
            CHECK_FALSE(rt.varint(v));
            CHECK(rt.left() == n);
        }
    }
}

TEST_CASE("varint: RFC 9000 example encodings decode") {
    struct Ex { std::vector<std::uint8_t> b; std::uint64_t v; };
    const Ex ex[] = {{{0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c}, 151288809941952652ull},
                     {{0x9d, 0x7f, 0x3e, 0x7d}, 494878333},
                     {{0x7b, 0xbd}, 15293},
                     {{0x25}, 37},
                     {{0x40, 0x25}, 37}};   // a non-minimal encoding is still read
    for (const auto& e : ex) {
        Reader r(e.b);
        std::uint64_t v;
        REQUIRE(r.varint(v));
        CHECK(v == e.v);
    }
}

TEST_CASE("writer: overflow and bad values fail sticky") {
    std::array<std::uint8_t, 3> buf{};
    Writer w(buf);
    w.u16(0x1234);
    CHECK(w.ok());
    w.u16(0x5678);   // does not fit
    CHECK(w.error() == -EMSGSIZE);
    w.u8(1);         // would fit, but the writer has failed
    CHECK(w.size() == 2);
    std::array<std::uint8_t, 8> b2{};
    Writer w2(b2);
    w2.varint(kVarintMax + 1);
    CHECK(w2.error() == -EINVAL);
}

TEST_CASE("crc32c: known vectors, table and hardware agree") {
    const char* s = "123456789";
    std::span<const std::uint8_t> b(reinterpret_cast<const std::uint8_t*>(s), 9);
    CHECK(crc32c_table(b) == 0xE3069283u);
    CHECK(crc32c(b) == 0xE3069283u);
    // RFC 3720 B.4: 32 bytes of zeros, of 0xff
    std::array<std::uint8_t, 32> z{};
    CHECK(crc32c_table(z) == 0x8A9136AAu);
    z.fill(0xff);
    CHECK(crc32c_table(z) == 0x62A8AB43u);
    CHECK(crc32c_table({}) == 0u);

    std::mt19937 rng(7);
    std::vector<std::uint8_t> buf(65536 + 16);
    for (auto& x : buf) x = static_cast<std::uint8_t>(rng());
    const std::string paths = std::string("crc32 instruction ") + (crc32c_hw_available() ? "yes" : "no") +
                              ", VPCLMULQDQ folding " + (crc32c_clmul_available() ? "yes" : "no");
    MESSAGE("CRC32C paths on this CPU: " << paths);
    // Around the block sizes of every path: the crc32 lanes (3 x 128, 3 x
    // 2048), the folding (256-byte steps, 64, 16 and 8-byte tails).
    for (std::size_t n : {0u, 1u, 7u, 8u, 9u, 15u, 16u, 17u, 63u, 64u, 255u, 256u, 257u, 271u, 272u, 319u, 320u,
                          383u, 384u, 385u, 391u, 511u, 512u, 513u, 1196u, 1200u, 4099u, 6143u, 6144u, 6145u,
                          9000u, 12289u, 65000u, 65536u}) {
        for (std::size_t at = 0; at < (n > 9000 ? 2u : 9u); ++at) {
            auto part = std::span<const std::uint8_t>(buf).subspan(at, n);
            const std::uint32_t t = crc32c_table(part);
            if (crc32c_hw_available()) CHECK(crc32c_hw(part) == t);
            if (crc32c_clmul_available()) CHECK(crc32c_clmul(part) == t);
            CHECK(crc32c(part) == t);
            // incremental = one shot
            const std::size_t half = n / 2;
            CHECK(crc32c_table(part.subspan(half), crc32c_table(part.first(half))) == t);
            CHECK(crc32c(part.subspan(half), crc32c(part.first(half))) == t);
        }
    }
}
