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
    CHECK(parse_raw(PacketType::data, {0x0c}) == ParseError::unknown_frame);
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
    const std::vector<std::uint8_t> junk = {0x0c, 0x01};
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

TEST_CASE("MESSAGE, REPAIR, TIMESTAMP (class realtime): layout, round trip, bounds") {
    // MESSAGE seq 5, body = stamp 0x0102030405060708 + "hi".
    std::vector<std::uint8_t> body = {1, 2, 3, 4, 5, 6, 7, 8, 'h', 'i'};
    std::vector<std::uint8_t> buf(64);
    Writer w(buf);
    write_message(w, 5, body);
    write_repair(w, std::span<const std::uint8_t>(body).first(3));
    write_timestamp(w, 300);
    REQUIRE(w.ok());
    const std::vector<std::uint8_t> expect = {0x09, 0x05, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 'h', 'i',
                                              0x0a, 0x03, 1, 2, 3,
                                              0x0b, 0x41, 0x2c};
    CHECK(std::vector<std::uint8_t>(buf.begin(), buf.begin() + w.size()) == expect);
    FrameReader fr(PacketType::data, {buf.data(), w.size()});
    Frame f;
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::message);
    CHECK(f.seq == 5);
    CHECK(f.value == 0x0102030405060708ull);
    CHECK(f.body.size() == 10);
    CHECK(std::string(f.data.begin(), f.data.end()) == "hi");
    CHECK(message_overhead(5, body.size()) == 3);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::repair);
    CHECK(f.body.size() == 3);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(f.type == FrameType::timestamp);
    CHECK(f.value == 300);
    REQUIRE(fr.next(f) == ParseError::ok);
    CHECK(fr.done());
    // A body shorter than the stamp; truncations; not in handshake packets.
    CHECK(parse_raw(PacketType::data, {0x09, 0x01, 0x07, 1, 2, 3, 4, 5, 6, 7}) == ParseError::bad_length);
    CHECK(parse_raw(PacketType::data, {0x09, 0x01, 0x09, 1, 2, 3}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x09}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x0a, 0x05, 1}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::data, {0x0b}) == ParseError::truncated);
    CHECK(parse_raw(PacketType::initial, {0x0b, 0x00}) == ParseError::frame_not_allowed);
    CHECK(parse_raw(PacketType::accept, {0x09, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}) ==
          ParseError::frame_not_allowed);
    // The writer refuses a body without its stamp.
    Writer bad(buf);
    write_message(bad, 1, std::span<const std::uint8_t>(body).first(7));
    CHECK(bad.error() == -EINVAL);
}
