// Frames: every type round-trips; every bound an attacker could push on is
// checked with crafted bytes.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "core/mces/wire/frame.h"

using namespace gs::mces::wire;

namespace {

std::span<const std::uint8_t> text(const char* s) {
    return {reinterpret_cast<const std::uint8_t*>(s), std::strlen(s)};
}

std::string str(std::span<const std::uint8_t> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Encodes f alone, parses it back in a packet of type `in`.
Frame round_trip(const Frame& f, PacketType in, std::vector<std::uint8_t>& buf) {
    buf.assign(4096, 0xee);
    Writer w(buf);
    write_frame(w, f);
    REQUIRE(w.ok());
    buf.resize(w.size());
    FrameReader fr(in, buf);
    Frame out;
    REQUIRE(fr.next(out) == ParseError::ok);
    REQUIRE_FALSE(fr.done());
    Frame end;
    REQUIRE(fr.next(end) == ParseError::ok);
    CHECK(fr.done());   // nothing left over
    CHECK(out.type == f.type);
    return out;
}

// Parses raw frame bytes; returns the first error (ok if all frames parse).
ParseError parse_raw(PacketType in, std::vector<std::uint8_t> bytes) {
    return validate_payload(in, bytes);
}

Qos some_qos() {
    Qos q;
    q.rate = 12'500'000;
    q.latency_us = 50'000;
    q.loss_ppm = 1'000'000;
    q.priority = 0;   // present and zero is not absent
    q.dscp = 63;
    return q;
}

}  // namespace

TEST_CASE("round trip: every frame type") {
    std::vector<std::uint8_t> buf;

    Frame f;
    f.type = FrameType::padding;
    f.padding_len = 17;
    CHECK(round_trip(f, PacketType::data, buf).padding_len == 17);

    f = Frame{};
    f.type = FrameType::ping;
    round_trip(f, PacketType::data, buf);

    f = Frame{};
    f.type = FrameType::ack;
    f.ack.largest = kVarintMax;
    f.ack.ack_delay_us = 12345;
    f.ack.count = kMaxAckRanges;
    std::uint64_t top = kVarintMax;
    for (std::size_t i = 0; i < kMaxAckRanges; ++i) {
        f.ack.ranges[i] = {top - i, top};   // widths 0..31, gaps of 1..
        top = top - i - 2 - i;
    }
    {
        Frame g = round_trip(f, PacketType::data, buf);
        CHECK(g.ack.largest == f.ack.largest);
        CHECK(g.ack.ack_delay_us == 12345);
        REQUIRE(g.ack.count == kMaxAckRanges);
        for (std::size_t i = 0; i < g.ack.count; ++i) CHECK(g.ack.ranges[i] == f.ack.ranges[i]);
    }

    f = Frame{};
    f.type = FrameType::reset;
    f.value = 99;
    f.final_size = 1ull << 40;
    {
        Frame g = round_trip(f, PacketType::data, buf);
        CHECK(g.value == 99);
        CHECK(g.final_size == (1ull << 40));
    }

    for (bool fin : {false, true}) {
        f = Frame{};
        f.type = fin ? FrameType::stream_fin : FrameType::stream;
        f.offset = 1ull << 33;
        f.data = text("stream bytes");
        Frame g = round_trip(f, PacketType::data, buf);
        CHECK(g.fin == fin);
        CHECK(g.offset == f.offset);
        CHECK(str(g.data) == "stream bytes");
    }

    f = Frame{};
    f.type = FrameType::datagram;
    f.data = text("a message, boundaries kept");
    CHECK(str(round_trip(f, PacketType::data, buf).data) == "a message, boundaries kept");

    f = Frame{};
    f.type = FrameType::max_data;
    f.value = 1ull << 50;
    CHECK(round_trip(f, PacketType::data, buf).value == (1ull << 50));

    f = Frame{};
    f.type = FrameType::close;
    f.value = 3;
    f.reason = text("done");
    {
        Frame g = round_trip(f, PacketType::data, buf);
        CHECK(g.value == 3);
        CHECK(str(g.reason) == "done");
    }

    f = Frame{};
    f.type = FrameType::hello;
    f.hello.version_count = kMaxHelloVersions;
    for (std::size_t i = 0; i < kMaxHelloVersions; ++i)
        f.hello.versions[i] = kVersion1 + static_cast<std::uint32_t>(i);
    f.hello.service_class = 3;
    f.hello.qos = some_qos();
    const std::vector<std::uint8_t> tok(kMaxTokenLen, 0xab);
    f.hello.token = tok;
    {
        Frame g = round_trip(f, PacketType::initial, buf);
        CHECK(g.hello.version_count == kMaxHelloVersions);
        CHECK(g.hello.versions == f.hello.versions);
        CHECK(g.hello.service_class == 3);
        CHECK(g.hello.qos == some_qos());
        CHECK(g.hello.qos.priority.has_value());
        CHECK(std::equal(g.hello.token.begin(), g.hello.token.end(), tok.begin(), tok.end()));
    }

    f = Frame{};
    f.type = FrameType::retry_token;
    f.token = text("cookie");
    CHECK(str(round_trip(f, PacketType::retry, buf).token) == "cookie");

    f = Frame{};
    f.type = FrameType::accept;
    f.service_class = 4;
    f.qos.burst = 10;
    {
        Frame g = round_trip(f, PacketType::accept, buf);
        CHECK(g.service_class == 4);
        CHECK(g.qos == f.qos);
        CHECK_FALSE(g.qos.rate.has_value());
    }

    f = Frame{};
    f.type = FrameType::refuse;
    f.refuse.code = 7;
    f.refuse.service_class = 2;
    f.refuse.asked = some_qos();
    f.refuse.available.rate = 1;
    f.refuse.reason = text("no capacity");
    {
        Frame g = round_trip(f, PacketType::refuse, buf);
        CHECK(g.refuse.code == 7);
        CHECK(g.refuse.service_class == 2);
        CHECK(g.refuse.asked == some_qos());
        CHECK(g.refuse.available == f.refuse.available);
        CHECK(str(g.refuse.reason) == "no capacity");
    }
}

TEST_CASE("ACK: range count is bounded, ranges may not run below zero") {
    // largest 100, delay 0, 32 extra ranges (one too many), first 0
    CHECK(parse_raw(PacketType::data, {0x02, 0x40, 100, 0x00, 32, 0x00}) ==
          ParseError::too_many_ranges);
    // a huge count is refused before anything it governs is read
    CHECK(parse_raw(PacketType::data, {0x02, 0x40, 100, 0x00, 0xbf, 0xff, 0xff, 0xff, 0}) ==
          ParseError::too_many_ranges);
    // first range longer than largest
    CHECK(parse_raw(PacketType::data, {0x02, 5, 0, 0, 6}) == ParseError::bad_ack_range);
    // largest 10, first range 2 (8..10), gap 6 -> next last would be 0, length 1 -> below 0
    CHECK(parse_raw(PacketType::data, {0x02, 10, 0, 1, 2, 6, 1}) == ParseError::bad_ack_range);
    // the same with length 0 is fine: ranges 8..10, 0..0
    CHECK(parse_raw(PacketType::data, {0x02, 10, 0, 1, 2, 6, 0}) == ParseError::ok);
    // gap too large
    CHECK(parse_raw(PacketType::data, {0x02, 10, 0, 1, 2, 7, 0}) == ParseError::bad_ack_range);
    // truncated inside the ranges
    CHECK(parse_raw(PacketType::data, {0x02, 10, 0, 2, 2, 1, 0}) == ParseError::truncated);
}

TEST_CASE("ACK encoder refuses ranges the receiver could not read") {
    std::array<std::uint8_t, 256> buf{};
    AckFrame a;
    a.largest = 10;
    a.count = 2;
    a.ranges[0] = {5, 10};
    a.ranges[1] = {3, 4};   // adjacent to the first: should have been merged
    Writer w(buf);
    write_ack(w, a);
    CHECK(w.error() == -EINVAL);
    a.ranges[1] = {0, 3};
    Writer w2(buf);
    write_ack(w2, a);
    CHECK(w2.ok());
    a.ranges[0] = {5, 9};   // does not end at largest
    Writer w3(buf);
    write_ack(w3, a);
    CHECK(w3.error() == -EINVAL);
    a.count = 0;
    Writer w4(buf);
    write_ack(w4, a);
    CHECK(w4.error() == -EINVAL);
}

TEST_CASE("lengths: checked against the payload and the fixed bounds") {
    // STREAM claiming 2^62-1 bytes at offset 0: truncated, nothing allocated
    CHECK(parse_raw(PacketType::data, {0x04, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 'x'}) == ParseError::truncated);
    // offset + length past 2^62
    CHECK(parse_raw(PacketType::data, {0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0x01, 'x'}) == ParseError::bad_length);
    // DATAGRAM length past the payload
    CHECK(parse_raw(PacketType::data, {0x06, 0x05, 'a', 'b'}) == ParseError::truncated);
    // CLOSE reason over kMaxReasonLen (257)
    {
        std::vector<std::uint8_t> b = {0x08, 0x00, 0x41, 0x01};
        b.resize(b.size() + 257, 'r');
        CHECK(parse_raw(PacketType::data, b) == ParseError::bad_length);
    }
    // RETRY_TOKEN empty, and over kMaxTokenLen
    CHECK(parse_raw(PacketType::retry, {0x11, 0x00}) == ParseError::bad_length);
    {
        std::vector<std::uint8_t> b = {0x11, 65};
        b.resize(b.size() + 65, 't');
        CHECK(parse_raw(PacketType::retry, b) == ParseError::bad_length);
    }
    // encoders refuse what the parser would refuse
    std::vector<std::uint8_t> buf(1024);
    Writer w(buf);
    std::string long_reason(kMaxReasonLen + 1, 'r');
    write_close(w, 0, text(long_reason.c_str()));
    CHECK(w.error() == -EINVAL);
}

TEST_CASE("HELLO, ACCEPT, REFUSE: version list, class and QoS ranges") {
    // HELLO with no versions, with 9
    CHECK(parse_raw(PacketType::initial, {0x10, 0x00}) == ParseError::bad_version_list);
    CHECK(parse_raw(PacketType::initial, {0x10, 0x09}) == ParseError::bad_version_list);
    // one version, class 5
    CHECK(parse_raw(PacketType::initial, {0x10, 0x01, 0x4D, 0x43, 0x00, 0x01, 0x05, 0x00, 0x00}) ==
          ParseError::bad_service_class);
    // class 1, QoS with the reserved presence bit
    CHECK(parse_raw(PacketType::initial, {0x10, 0x01, 0x4D, 0x43, 0x00, 0x01, 0x01, 0x80, 0x00}) ==
          ParseError::bad_qos);
    // QoS dscp (bit 6) = 64
    CHECK(parse_raw(PacketType::accept, {0x12, 0x01, 0x40, 0x40, 0x40}) == ParseError::bad_qos);
    // QoS loss (bit 4) = 1,000,001 ppm
    CHECK(parse_raw(PacketType::accept, {0x12, 0x01, 0x10, 0x80, 0x0f, 0x42, 0x41}) ==
          ParseError::bad_qos);
    // QoS priority (bit 5) = 8
    CHECK(parse_raw(PacketType::accept, {0x12, 0x01, 0x20, 0x08}) == ParseError::bad_qos);
    // QoS latency (bit 2) over 32 bits
    CHECK(parse_raw(PacketType::accept, {0x12, 0x01, 0x04, 0xc0, 0, 0, 1, 0, 0, 0, 0}) ==
          ParseError::bad_qos);
    // valid: class 1, dscp 63
    CHECK(parse_raw(PacketType::accept, {0x12, 0x01, 0x40, 0x3f}) == ParseError::ok);
    // QoS field missing
    CHECK(parse_raw(PacketType::accept, {0x12, 0x01, 0x41, 0x05}) == ParseError::truncated);
    // encoders refuse out-of-range QoS
    std::vector<std::uint8_t> buf(256);
    Writer w(buf);
    Qos q;
    q.dscp = 64;
    write_accept(w, 1, q);
    CHECK(w.error() == -EINVAL);
}

TEST_CASE("frames are only accepted in their packet type; unknown types are refused") {
    CHECK(parse_raw(PacketType::initial, {0x04, 0, 0}) == ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::data, {0x10}) == ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::retry, {0x01}) == ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::accept, {0x13}) == ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::data, {0x0d}) == ParseError::unknown_frame);
    CHECK(parse_raw(PacketType::data, {0x01, 0x00, 0x00, 0xff}) == ParseError::unknown_frame);
    // padding runs are one frame; the payload may end in padding
    std::vector<std::uint8_t> p = {0x00, 0x00, 0x00, 0x01, 0x00};
    FrameReader fr(PacketType::data, p);
    Frame f;
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::padding);
    CHECK(f.padding_len == 3);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::ping);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.padding_len == 1);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(fr.done());
    // after an error the reader stays failed
    const std::vector<std::uint8_t> junk = {0x0d, 0x01};
    FrameReader bad(PacketType::data, junk);
    CHECK(bad.next(f) == ParseError::unknown_frame);
    CHECK(bad.next(f) == ParseError::unknown_frame);
}

TEST_CASE("describe(Qos) names each set field") {
    CHECK(describe(Qos{}) == "none");
    Qos q;
    q.rate = 1000;
    q.dscp = 46;
    CHECK(describe(q) == "rate=1000B/s dscp=46");
}

TEST_CASE("STREAM written as a header plus a payload filled in place equals write_stream") {
    const auto payload = text("bytes copied straight from the send buffer");
    for (const bool fin : {false, true}) {
        for (const std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{70000}, std::uint64_t{1} << 40}) {
            std::vector<std::uint8_t> a(256, 0xee), b(256, 0xee);
            Writer wa(a), wb(b);
            write_stream(wa, offset, payload, fin);
            write_stream_header(wb, offset, payload.size(), fin);
            CHECK(wb.size() == stream_overhead(offset, payload.size()));
            const std::span<std::uint8_t> dst = wb.take(payload.size());
            REQUIRE(dst.size() == payload.size());
            std::memcpy(dst.data(), payload.data(), payload.size());
            REQUIRE((wa.ok() && wb.ok()));
            CHECK(str(wa.written()) == str(wb.written()));
            FrameReader fr(PacketType::data, wb.written());
            Frame f;
            REQUIRE(fr.next(f) == ParseError::ok);
            CHECK(f.offset == offset);
            CHECK(f.fin == fin);
            CHECK(str(f.data) == str(payload));
        }
    }
    // take() past the end fails the writer and hands out nothing.
    std::vector<std::uint8_t> small(8);
    Writer w(small);
    write_stream_header(w, 0, 100, false);
    CHECK(w.take(100).empty());
    CHECK(w.error() == -EMSGSIZE);
}

TEST_CASE("PARAMS: round trip, only known flags, only in ACCEPT") {
    std::vector<std::uint8_t> buf;
    Frame f;
    f.type = FrameType::params;
    f.value = kParamNoChecksum;
    CHECK(round_trip(f, PacketType::accept, buf).value == kParamNoChecksum);
    f.value = 0;
    CHECK(round_trip(f, PacketType::accept, buf).value == 0);
    CHECK(parse_raw(PacketType::accept, {0x14, 0x02}) == ParseError::reserved_bits);
    CHECK(parse_raw(PacketType::accept, {0x14}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::initial, {0x14, 0x01}) == ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::data, {0x14, 0x01}) == ParseError::frame_not_allowed);
    std::vector<std::uint8_t> b(8);
    Writer w(b);
    write_params(w, 2);
    CHECK_FALSE(w.ok());
}

TEST_CASE("MESSAGE, MESSAGE_LAST, REPAIR, TIMESTAMP (class realtime): layout, round trip, bounds") {
    // MESSAGE seq 0x12345 (the low 16 bits go), body = stamp 0x01020304 + "hi".
    std::vector<std::uint8_t> body = {1, 2, 3, 4, 'h', 'i'};
    std::vector<std::uint8_t> buf(64);
    Writer w(buf);
    write_message(w, 0x12345, body);
    write_repair(w, std::span<const std::uint8_t>(body).first(3));
    write_timestamp(w, 300);
    write_message(w, 0x2345 + 1, body, true);   // the last frame: no length
    REQUIRE(w.ok());
    const std::vector<std::uint8_t> expect = {0x09, 0x23, 0x45, 0x06, 1, 2, 3, 4, 'h', 'i',
                                              0x0a, 0x03, 1, 2, 3,
                                              0x0b, 0x41, 0x2c,
                                              0x0c, 0x23, 0x46, 1, 2, 3, 4, 'h', 'i'};
    CHECK(std::vector<std::uint8_t>(buf.begin(), buf.begin() + w.size()) == expect);
    FrameReader fr(PacketType::data, {buf.data(), w.size()});
    Frame f;
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::message);
    CHECK(f.seq == 0x2345);
    CHECK(f.value == 0x01020304u);
    CHECK(f.body.size() == 6);
    CHECK(std::string(f.data.begin(), f.data.end()) == "hi");
    CHECK(message_overhead(body.size()) == 4);
    CHECK(message_overhead(body.size(), true) == 3);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::repair);
    CHECK(f.body.size() == 3);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::timestamp);
    CHECK(f.value == 300);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::message_last);
    CHECK(f.seq == 0x2346);
    CHECK(f.value == 0x01020304u);
    CHECK(std::string(f.data.begin(), f.data.end()) == "hi");
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(fr.done());
    // Round trips through write_frame, both forms.
    for (FrameType t : {FrameType::message, FrameType::message_last}) {
        Frame m;
        m.type = t;
        m.seq = 0xfffe;
        m.body = body;
        std::vector<std::uint8_t> rb;
        const Frame back = round_trip(m, PacketType::data, rb);
        CHECK(back.type == t);
        CHECK(back.seq == 0xfffe);
        CHECK(back.value == 0x01020304u);
        CHECK(back.data.size() == 2);
    }
    // A body shorter than the stamp; truncations; not in handshake packets.
    CHECK(parse_raw(PacketType::data, {0x09, 0x00, 0x01, 0x03, 1, 2, 3}) == ParseError::bad_length);
    CHECK(parse_raw(PacketType::data, {0x09, 0x00, 0x01, 0x05, 1, 2, 3}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x09, 0x00}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x09}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x0c, 0x00, 0x01, 1, 2, 3}) == ParseError::bad_length);
    CHECK(parse_raw(PacketType::data, {0x0c, 0x00}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x0c, 0x00, 0x01}) == ParseError::bad_length);
    CHECK(parse_raw(PacketType::data, {0x0c, 0x00, 0x01, 1, 2, 3, 4}) == ParseError::ok);   // an empty message
    CHECK(parse_raw(PacketType::data, {0x0a, 0x05, 1}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x0b}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::initial, {0x0b, 0x00}) == ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::accept, {0x09, 0x00, 0x00, 0x04, 0, 0, 0, 0}) ==
          ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::initial, {0x0c, 0x00, 0x00, 0, 0, 0, 0}) == ParseError::frame_not_allowed);
    // MESSAGE_LAST takes everything after it: a frame written behind it
    // would be read as its message (the writer never does that).
    {
        std::vector<std::uint8_t> b2(32);
        Writer w2(b2);
        write_message(w2, 7, body, true);
        write_ping(w2);
        FrameReader r2(PacketType::data, {b2.data(), w2.size()});
        REQUIRE(r2.next(f) == ParseError::ok);
        CHECK(f.data.size() == 3);   // "hi" and the PING's byte
        REQUIRE(r2.next(f) == ParseError::ok);
        CHECK(r2.done());
    }
    // The writer refuses a body without its stamp.
    Writer bad(buf);
    write_message(bad, 1, std::span<const std::uint8_t>(body).first(3));
    CHECK(bad.error() == -EINVAL);
    Writer bad2(buf);
    write_message(bad2, 1, std::span<const std::uint8_t>(body).first(3), true);
    CHECK(bad2.error() == -EINVAL);
    // The stamp: big-endian, the low 32 bits of the time.
    std::uint8_t st[4];
    put_stamp(st, 0x1'a1b2c3d4ull);
    CHECK(st[0] == 0xa1);
    CHECK(st[3] == 0xd4);
    CHECK(get_stamp(st) == 0xa1b2c3d4u);
}

TEST_CASE("MESSAGE_LAST ends the payload with or without the packet's CRC or tag") {
    std::vector<std::uint8_t> body = {9, 8, 7, 6, 'x', 'y', 'z'};
    for (Checksum sum : {Checksum::crc32c, Checksum::none}) {
        std::vector<std::uint8_t> buf(128);
        PacketWriter pw(buf);
        ConnectionId dcid;
        const std::uint8_t id[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        dcid = ConnectionId::from(id);
        pw.begin_short(dcid, 3, 1, sum);
        write_timestamp(pw.body(), 5);
        write_message(pw.body(), 40, body, true);
        const int n = pw.finish();
        REQUIRE(n > 0);
        PacketView v;
        REQUIRE(parse_packet({buf.data(), static_cast<std::size_t>(n)}, 8, v, sum) == ParseError::ok);
        FrameReader fr(PacketType::data, v.payload);
        Frame f;
        REQUIRE(fr.next(f) == ParseError::ok);
        REQUIRE(fr.next(f) == ParseError::ok);
        CHECK(f.type == FrameType::message_last);
        CHECK(std::string(f.data.begin(), f.data.end()) == "xyz");   // the CRC is not in it
        REQUIRE(fr.next(f) == ParseError::ok);
        CHECK(fr.done());
    }
}

TEST_CASE("unwrap_stamp: the full time nearest the reference") {
    constexpr std::uint64_t k32 = std::uint64_t{1} << 32;
    // Reference 0 (no TIMESTAMP yet): the connection's first 35 minutes.
    CHECK(unwrap_stamp(0, 0) == 0);
    CHECK(unwrap_stamp(0, 123456) == 123456);
    CHECK(unwrap_stamp(0, 0x7fffffff) == 0x7fffffffu);
    // Above 2^31 with reference 0 would be before the origin: the later one.
    CHECK(unwrap_stamp(0, 0x80000000u) == 0x80000000u);
    CHECK(unwrap_stamp(0, 0xffffffffu) == 0xffffffffu);
    // Before and after the reference, within the same 2^32 period.
    CHECK(unwrap_stamp(5'000'000, 4'000'000) == 4'000'000);
    CHECK(unwrap_stamp(5'000'000, 6'000'000) == 6'000'000);
    // Across the wrap: the reference just after it, a stamp just before it,
    // and the reverse.
    CHECK(unwrap_stamp(k32 + 100, 0xffffff00u) == k32 - 256);
    CHECK(unwrap_stamp(k32 - 100, 50) == k32 + 50);
    CHECK(unwrap_stamp(7 * k32 + 10, 0xfffffff0u) == 7 * k32 - 16);
    CHECK(unwrap_stamp(7 * k32 - 10, 5) == 7 * k32 + 5);
    // Half a period away: the nearest, within [ref - 2^31, ref + 2^31).
    CHECK(unwrap_stamp(3 * k32, 0x7fffffffu) == 3 * k32 + 0x7fffffffu);
    CHECK(unwrap_stamp(3 * k32, 0x80000000u) == 3 * k32 - 0x80000000u);
    // Every time within 2^31 of the reference comes back from its low 32 bits.
    for (std::uint64_t ref : {std::uint64_t{0}, std::uint64_t{1} << 31, k32 - 1, k32, 5 * k32 + 12345}) {
        for (std::int64_t d : {std::int64_t{-(1ll << 31)}, std::int64_t{-1}, std::int64_t{0}, std::int64_t{1},
                               std::int64_t{(1ll << 31) - 1}}) {
            const std::int64_t t = static_cast<std::int64_t>(ref) + d;
            if (t < 0) continue;
            CAPTURE(ref);
            CAPTURE(d);
            CHECK(unwrap_stamp(ref, static_cast<std::uint64_t>(t) & 0xffffffffu) == static_cast<std::uint64_t>(t));
        }
    }
}

TEST_CASE("decode_message_seq: 16 bits against the largest received, across the wrap") {
    // Nothing received yet: 0 .. 32768 come out as they are.
    CHECK(decode_message_seq(-1, 0) == 0);
    CHECK(decode_message_seq(-1, 5) == 5);
    CHECK(decode_message_seq(-1, 32768) == 32768);
    // Across the 2^16 wrap, forwards and backwards.
    CHECK(decode_message_seq(65535, 0) == 65536);
    CHECK(decode_message_seq(65530, 3) == 65539);
    CHECK(decode_message_seq(65540, 65530) == 65530);
    CHECK(decode_message_seq(3 * 65536 + 2, 65535) == 3 * 65536 - 1);
    // The window's edges. A sender keeps kMaxMessageSpan (32767) messages
    // at most, so a copy is at most 32766 behind the newest it sent, and so
    // behind the largest received; the timing buffer holds up to 32767 from
    // its next seq (at most largest + 1). Both ends decode right.
    constexpr std::int64_t largest = 5 * 65536 + 100;
    static_assert(kMaxMessageSpan == 32767);
    for (std::int64_t d = -static_cast<std::int64_t>(kMaxMessageSpan - 1); d <= static_cast<std::int64_t>(kMaxMessageSpan);
         d += 1) {
        const std::uint64_t seq = static_cast<std::uint64_t>(largest + d);
        if (decode_message_seq(largest, seq & 0xffff) != seq) {
            CAPTURE(d);
            CHECK(false);
        }
    }
    // Older than that, a copy is named wrong, a whole 2^16 ahead (such a
    // copy is past its deadline: Connection drops it as late first).
    CHECK(decode_message_seq(largest, static_cast<std::uint64_t>(largest - 32767) & 0xffff) ==
          static_cast<std::uint64_t>(largest - 32767 + 65536));
    CHECK(decode_message_seq(largest, static_cast<std::uint64_t>(largest + 32769) & 0xffff) ==
          static_cast<std::uint64_t>(largest + 32769));
}
