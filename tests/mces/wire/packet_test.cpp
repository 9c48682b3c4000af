// Packet headers: round trips of every form, every truncation and every
// corrupted byte rejected, the header checks, packet number encoding.
#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <random>
#include <set>
#include <vector>

#include "core/mces/wire/crc32c.h"
#include "core/mces/wire/frame.h"
#include "core/mces/wire/packet.h"
#include "tests/mces/wire/samples.h"

using namespace gs::mces::wire;
using gs::mces::wire::test::samples;

namespace {

// Recomputes the trailer after a test edits a header field, so the parser
// gets past the checksum to the check under test.
void reseal(std::vector<std::uint8_t>& b) {
    const std::size_t n = b.size() - kChecksumLen;
    const std::uint32_t c = crc32c(std::span<const std::uint8_t>(b).first(n));
    for (int i = 0; i < 4; ++i) b[n + i] = static_cast<std::uint8_t>(c >> (24 - 8 * i));
}

}  // namespace

TEST_CASE("every sample parses, with its type, and its frames validate") {
    const auto all = samples();
    std::set<PacketType> types;
    for (const auto& s : all) {
        CAPTURE(s.name);
        REQUIRE(!s.bytes.empty());
        PacketView v;
        REQUIRE(parse_packet(s.bytes, 8, v) == ParseError::ok);
        CHECK(v.hdr.type == s.type);
        types.insert(v.hdr.type);
        if (s.type != PacketType::version_negotiation)
            CHECK(validate_payload(v.hdr.type, v.payload) == ParseError::ok);
    }
    CHECK(types.size() == 6);   // every packet type
}

TEST_CASE("long header round-trips every field") {
    for (std::uint8_t t = 0; t <= 3; ++t) {
        for (std::uint8_t pn_len = 1; pn_len <= 4; ++pn_len) {
            std::vector<std::uint8_t> dc(20), sc(3);
            for (std::size_t i = 0; i < dc.size(); ++i) dc[i] = static_cast<std::uint8_t>(i + t);
            for (std::size_t i = 0; i < sc.size(); ++i) sc[i] = static_cast<std::uint8_t>(0xa0 + i);
            std::vector<std::uint8_t> buf(200);
            PacketWriter pw(buf);
            const std::uint64_t pn = 0x0102030405ull;
            pw.begin_long(static_cast<PacketType>(t), 0x4D43ABCD, ConnectionId::from(dc),
                          ConnectionId::from(sc), pn, pn_len);
            write_padding(pw.body(), 5);
            const int n = pw.finish();
            REQUIRE(n > 0);
            buf.resize(static_cast<std::size_t>(n));
            PacketView v;
            REQUIRE(parse_packet(buf, 0, v) == ParseError::ok);
            CHECK(static_cast<std::uint8_t>(v.hdr.type) == t);
            CHECK(v.hdr.version == 0x4D43ABCDu);
            CHECK(v.hdr.dcid == ConnectionId::from(dc));
            CHECK(v.hdr.scid == ConnectionId::from(sc));
            CHECK(v.hdr.pn_len == pn_len);
            CHECK(v.hdr.pn_truncated == (pn & ((std::uint64_t{1} << (8 * pn_len)) - 1)));
            CHECK(v.payload.size() == 5);
        }
    }
}

TEST_CASE("short header round-trips; the receiver supplies the ID length") {
    for (std::size_t cid_len : {0u, 1u, 8u, 20u}) {
        std::vector<std::uint8_t> id(cid_len, 0x77);
        std::vector<std::uint8_t> buf(100);
        PacketWriter pw(buf);
        pw.begin_short(ConnectionId::from(id), 0xBEEF, 2);
        write_ping(pw.body());
        const int n = pw.finish();
        REQUIRE(n == static_cast<int>(1 + cid_len + 2 + 1 + 4));
        buf.resize(static_cast<std::size_t>(n));
        PacketView v;
        REQUIRE(parse_packet(buf, cid_len, v) == ParseError::ok);
        CHECK(v.hdr.type == PacketType::data);
        CHECK(v.hdr.dcid == ConnectionId::from(id));
        CHECK(v.hdr.pn_truncated == 0xBEEFu);
        REQUIRE(v.payload.size() == 1);
        CHECK(v.payload[0] == 0x01);
    }
}

TEST_CASE("version negotiation round-trips; its bounds are checked") {
    const std::uint32_t vs[] = {kVersion1, 0x4D430002, 0x4D430003};
    std::vector<std::uint8_t> buf(100);
    PacketWriter pw(buf);
    pw.begin_version_negotiation(ConnectionId::from(std::vector<std::uint8_t>{1, 2, 3, 4}), {}, vs);
    const int n = pw.finish();
    REQUIRE(n > 0);
    buf.resize(static_cast<std::size_t>(n));
    PacketView v;
    REQUIRE(parse_packet(buf, 0, v) == ParseError::ok);
    CHECK(v.hdr.type == PacketType::version_negotiation);
    REQUIRE(v.vn_count() == 3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(v.vn_version(i) == vs[i]);

    // a partial version, or no version at all
    std::vector<std::uint8_t> odd(buf.begin(), buf.end() - 4);
    odd.push_back(0x4D);
    odd.resize(odd.size() + 4);
    reseal(odd);
    CHECK(parse_packet(odd, 0, v) == ParseError::truncated);
    std::vector<std::uint8_t> none(buf.begin(), buf.end() - 4 - 12);
    none.resize(none.size() + 4);
    reseal(none);
    CHECK(parse_packet(none, 0, v) == ParseError::bad_version_list);
    // 17 versions: over kMaxVnVersions
    std::vector<std::uint32_t> many(kMaxVnVersions + 1, kVersion1);
    std::vector<std::uint8_t> big(200);
    PacketWriter pw2(big);
    pw2.begin_version_negotiation({}, {}, many);
    CHECK(pw2.finish() == -EINVAL);
}

TEST_CASE("every truncation of every valid packet is rejected") {
    std::size_t checked = 0, total = 0;
    for (const auto& s : samples()) {
        total += s.bytes.size();
        CAPTURE(s.name);
        for (std::size_t n = 0; n < s.bytes.size(); ++n) {
            PacketView v;
            const ParseError e =
                parse_packet(std::span<const std::uint8_t>(s.bytes).first(n), 8, v);
            CHECK(e != ParseError::ok);
            ++checked;
        }
    }
    CHECK(checked == total);   // every prefix, of every sample
}

TEST_CASE("a corrupted byte anywhere is a checksum failure") {
    std::mt19937 rng(42);
    for (const auto& s : samples()) {
        CAPTURE(s.name);
        for (std::size_t i = 0; i < s.bytes.size(); ++i) {
            auto b = s.bytes;
            std::uint8_t x;
            do x = static_cast<std::uint8_t>(rng()); while (x == 0);
            if (i == 0) x &= 0x9f;   // keep the fixed and auth bits: those have their own errors
            if (x == 0) x = 0x01;
            b[i] ^= x;
            PacketView v;
            CHECK(parse_packet(b, 8, v) == ParseError::bad_checksum);
        }
    }
}

TEST_CASE("header checks: fixed bit, auth flag, reserved bits, magic, ID length") {
    const auto all = samples();
    const auto& init = all[0].bytes;   // initial_hello
    PacketView v;
    struct Case { const char* what; std::size_t at; std::uint8_t set, clear; ParseError want; };
    const Case cases[] = {
        {"fixed bit 0", 0, 0x00, 0x40, ParseError::bad_fixed_bit},
        {"auth flag", 0, 0x20, 0x00, ParseError::unsupported_auth},
        {"long reserved bit", 0, 0x04, 0x00, ParseError::reserved_bits},
        {"version without MC magic", 1, 0x00, 0xff, ParseError::bad_magic},
        {"dcid length 21", 5, 21, 0xff, ParseError::bad_cid_length},
    };
    for (const auto& c : cases) {
        CAPTURE(c.what);
        auto b = init;
        b[c.at] = static_cast<std::uint8_t>((b[c.at] & ~c.clear) | c.set);
        reseal(b);
        CHECK(parse_packet(b, 8, v) == c.want);
    }
    // short header reserved bits
    for (const auto& s : all) {
        if (s.type != PacketType::data) continue;
        auto b = s.bytes;
        b[0] |= 0x10;
        reseal(b);
        CHECK(parse_packet(b, 8, v) == ParseError::reserved_bits);
        break;
    }
    // a short header cannot be read with an ID length over 20
    CHECK(parse_packet(init, 21, v) == ParseError::bad_cid_length);
    // fewer than flags + checksum
    const std::uint8_t tiny[] = {0x40, 0, 0, 0};
    CHECK(parse_packet(tiny, 0, v) == ParseError::truncated);
}

TEST_CASE("packet numbers: RFC 9000 A.3 example and round trips") {
    CHECK(decode_packet_number(0xa82f30ea, 0x9b32, 2) == 0xa82f9b32ull);
    CHECK(packet_number_length(0xac5c02, 0xabe8b3) == 2);   // RFC 9000 A.2
    CHECK(packet_number_length(0xace8fe, 0xabe8b3) == 3);
    std::mt19937_64 rng(3);
    for (int i = 0; i < 20000; ++i) {
        const std::int64_t acked = static_cast<std::int64_t>(rng() % (1ull << 40)) - 1;
        const std::uint64_t pn =
            static_cast<std::uint64_t>(acked + 1) + rng() % (1u << (rng() % 24));
        const std::uint8_t len = packet_number_length(pn, acked);
        const auto trunc = static_cast<std::uint32_t>(pn & ((std::uint64_t{1} << (8 * len)) - 1));
        // the receiver has seen anything from acked up to pn - 1
        const std::int64_t largest_rx =
            acked + static_cast<std::int64_t>(rng() % (pn - static_cast<std::uint64_t>(acked)));
        CHECK(decode_packet_number(largest_rx, trunc, len) == pn);
    }
}

TEST_CASE("parse error names are distinct counter names") {
    std::set<std::string> names;
    for (std::size_t i = 0; i < kParseErrorCount; ++i) {
        const std::string n = name(static_cast<ParseError>(i));
        CHECK(n != "?");
        names.insert(n);
    }
    CHECK(names.size() == kParseErrorCount);
}

TEST_CASE("no checksum: a short packet 4 bytes shorter, read to its last byte; long packets always checked") {
    const std::vector<std::uint8_t> id(8, 0x5e);
    const ConnectionId cid = ConnectionId::from(id);
    auto build = [&](Checksum c) {
        std::vector<std::uint8_t> buf(100);
        PacketWriter pw(buf);
        pw.begin_short(cid, 0xBEEF, 2, c);
        CHECK(pw.trailer() == (c == Checksum::none ? 0u : kChecksumLen));
        write_ping(pw.body());
        write_max_data(pw.body(), 77);
        const int n = pw.finish();
        REQUIRE(n > 0);
        buf.resize(static_cast<std::size_t>(n));
        return buf;
    };
    const auto with = build(Checksum::crc32c), without = build(Checksum::none);
    REQUIRE(without.size() + kChecksumLen == with.size());
    CHECK(std::equal(without.begin(), without.end(), with.begin()));   // the same bytes, no trailer

    PacketView v;
    REQUIRE(parse_packet(without, 8, v, Checksum::none) == ParseError::ok);
    CHECK(v.hdr.pn_truncated == 0xBEEFu);
    CHECK(v.payload.size() == without.size() - 1 - 8 - 2);
    CHECK(validate_payload(PacketType::data, v.payload) == ParseError::ok);
    // The same bytes where a CRC is expected: its last four bytes are not one.
    CHECK(parse_packet(without, 8, v) == ParseError::bad_checksum);
    // A CRC packet where none is expected: the trailer is read as frames
    // (four more payload bytes), never past the end.
    REQUIRE(parse_packet(with, 8, v, Checksum::none) == ParseError::ok);
    CHECK(v.payload.size() == with.size() - 1 - 8 - 2);
    // A corrupted byte goes unnoticed without the CRC (UDP's checksum is
    // what guards such packets), and is caught with it.
    auto flipped = without;
    flipped.back() ^= 0x01;
    CHECK(parse_packet(flipped, 8, v, Checksum::none) == ParseError::ok);

    // Every truncation of a no-checksum packet: an error or a shorter
    // payload, never a read past the end (ASan builds check).
    for (std::size_t n = 0; n < without.size(); ++n) {
        const ParseError e = parse_packet(std::span<const std::uint8_t>(without).first(n), 8, v, Checksum::none);
        if (n < 1 + 8 + 2) CHECK(e == ParseError::truncated);
        else CHECK((e == ParseError::ok && v.payload.size() == n - 11));
    }

    // Long headers keep the CRC whatever the caller asks: every sample still
    // fails on a corrupted byte, and still parses.
    for (const auto& s : samples()) {
        if (s.type == PacketType::data) continue;
        CAPTURE(s.name);
        REQUIRE(parse_packet(s.bytes, 8, v, Checksum::none) == ParseError::ok);
        auto b = s.bytes;
        b[b.size() / 2] ^= 0x10;
        CHECK(parse_packet(b, 8, v, Checksum::none) == ParseError::bad_checksum);
    }
    // begin_long after a no-checksum begin_short: the handshake keeps its CRC.
    std::vector<std::uint8_t> buf(200);
    PacketWriter pw(buf);
    pw.begin_short(cid, 1, 1, Checksum::none);
    pw.begin_long(PacketType::retry, kVersion1, cid, ConnectionId{}, 0, 1);
    CHECK(pw.trailer() == kChecksumLen);

    // Zero-copy: the header is all that finish() writes; the payload ends the packet.
    std::vector<std::uint8_t> hb(64);
    PacketWriter zw(hb);
    zw.begin_short(cid, 5, 1, Checksum::none);
    write_stream_header(zw.body(), 0, 6, false);
    const std::uint8_t a[] = {'a', 'b', 'c'}, b2[] = {'d', 'e', 'f'};
    const int here = zw.finish(a, b2);
    REQUIRE(here == static_cast<int>(zw.body().size()));
    hb.resize(static_cast<std::size_t>(here));
    hb.insert(hb.end(), std::begin(a), std::end(a));
    hb.insert(hb.end(), std::begin(b2), std::end(b2));
    REQUIRE(parse_packet(hb, 8, v, Checksum::none) == ParseError::ok);
    FrameReader fr(PacketType::data, v.payload);
    Frame f;
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.data.size() == 6);
    CHECK(f.data[5] == 'f');
}

TEST_CASE("auth: bit 5 and the auth trailers, both ways of a mismatch dropped") {
    std::vector<std::uint8_t> buf(200);
    const ConnectionId dcid = ConnectionId::from(std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    PacketView v;
    // Short: the 16-byte tag (here zeros: parse does not verify it).
    {
        PacketWriter pw(buf);
        pw.begin_short(dcid, 300, 2, Checksum::crc32c, Auth::on);
        CHECK(pw.trailer() == kAuthTagLen);
        CHECK(pw.header_len() == 1 + 8 + 2);
        write_ping(pw.body());
        const int n = pw.finish();
        REQUIRE(n == 1 + 8 + 2 + 1 + 16);
        const std::span<const std::uint8_t> p(buf.data(), static_cast<std::size_t>(n));
        CHECK((p[0] & 0x20) != 0);
        REQUIRE(parse_packet(p, 8, v, Checksum::crc32c, Auth::on) == ParseError::ok);
        CHECK(v.payload.size() == 1);                         // the frames, between header and tag
        CHECK(v.payload.data() - p.data() == 11);             // the AEAD's associated data
        CHECK(parse_packet(p, 8, v, Checksum::none, Auth::on) == ParseError::ok);   // checksum ignored
        CHECK(parse_packet(p, 8, v) == ParseError::unsupported_auth);               // a keyless receiver
        // Every prefix is rejected or parsed within bounds.
        for (int k = 0; k < n; ++k) {
            const ParseError e = parse_packet(p.first(static_cast<std::size_t>(k)), 8, v, Checksum::crc32c, Auth::on);
            if (e == ParseError::ok) CHECK(v.payload.data() + v.payload.size() <= p.data() + k);
        }
        // zero-copy finish is refused: sealing needs the whole packet
        PacketWriter pz(buf);
        pz.begin_short(dcid, 1, 1, Checksum::crc32c, Auth::on);
        const std::uint8_t a[4] = {};
        CHECK(pz.finish(a, {}) < 0);
    }
    // A keyless packet at a keyed receiver.
    {
        PacketWriter pw(buf);
        pw.begin_short(dcid, 5, 1);
        write_ping(pw.body());
        const int n = pw.finish();
        REQUIRE(n > 0);
        CHECK(parse_packet(std::span(buf).first(static_cast<std::size_t>(n)), 8, v, Checksum::crc32c, Auth::on) ==
              ParseError::missing_auth);
    }
    // Long: the 32-byte proof.
    {
        PacketWriter pw(buf);
        pw.begin_long(PacketType::retry, kVersion1, dcid, ConnectionId{}, 0, 1, Auth::on);
        CHECK(pw.trailer() == kAuthProofLen);
        write_ping(pw.body());
        const int n = pw.finish();
        REQUIRE(n > 0);
        const std::span<const std::uint8_t> p(buf.data(), static_cast<std::size_t>(n));
        REQUIRE(parse_packet(p, 8, v, Checksum::crc32c, Auth::on) == ParseError::ok);
        CHECK(v.hdr.type == PacketType::retry);
        CHECK(v.payload.data() + v.payload.size() == p.data() + p.size() - 32);
        CHECK(parse_packet(p, 8, v) == ParseError::unsupported_auth);
    }
    // VERSION_NEGOTIATION is never authenticated: CRC, bit 5 clear, in both modes.
    {
        PacketWriter pw(buf);
        const std::uint32_t versions[] = {kVersion1};
        pw.begin_version_negotiation(dcid, ConnectionId{}, versions);
        const int n = pw.finish();
        REQUIRE(n > 0);
        const std::span<const std::uint8_t> p(buf.data(), static_cast<std::size_t>(n));
        CHECK(parse_packet(p, 8, v, Checksum::crc32c, Auth::on) == ParseError::ok);
        CHECK(v.hdr.type == PacketType::version_negotiation);
        auto b = std::vector<std::uint8_t>(p.begin(), p.end());
        b[0] |= 0x20;
        reseal(b);
        CHECK(parse_packet(b, 8, v, Checksum::crc32c, Auth::on) == ParseError::unsupported_auth);
    }
}
