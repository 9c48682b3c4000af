#include "tests/mces/wire/samples.h"

#include <cstring>

#include "core/mces/wire/frame.h"

namespace gs::mces::wire::test {

ConnectionId client_cid() {
    const std::uint8_t b[8] = {0xc1, 0x1e, 0x47, 0x00, 0x01, 0x02, 0x03, 0x04};
    return ConnectionId::from(b);
}

ConnectionId server_cid() {
    const std::uint8_t b[8] = {0x5e, 0x4e, 0x4e, 0x00, 0x0a, 0x0b, 0x0c, 0x0d};
    return ConnectionId::from(b);
}

CookieJar::Key test_key(std::uint8_t seed) {
    CookieJar::Key k{};
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed * 31 + i);
    return k;
}

sansio::Addr client_addr() { return sansio::Addr::v4(0x0a000002, 40000); }

namespace {

template <typename Body>
Sample build_long(std::string name, PacketType t, std::uint32_t version, const ConnectionId& d,
                  const ConnectionId& s, std::uint64_t pn, std::size_t pad, Body body) {
    std::vector<std::uint8_t> buf(kMaxPacketSize);
    PacketWriter pw(buf);
    pw.begin_long(t, version, d, s, pn, packet_number_length(pn, -1));
    body(pw.body());
    if (pad) pw.pad_to(pad);
    const int n = pw.finish();
    buf.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return {std::move(name), t, std::move(buf)};
}

template <typename Body>
Sample build_short(std::string name, std::uint64_t pn, std::int64_t largest_acked, Body body) {
    std::vector<std::uint8_t> buf(kMaxPacketSize);
    PacketWriter pw(buf);
    pw.begin_short(server_cid(), pn, packet_number_length(pn, largest_acked));
    body(pw.body());
    const int n = pw.finish();
    buf.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return {std::move(name), PacketType::data, std::move(buf)};
}

std::span<const std::uint8_t> text(const char* s) {
    return {reinterpret_cast<const std::uint8_t*>(s), std::strlen(s)};
}

Qos full_qos() {
    Qos q;
    q.rate = 2'500'000;
    q.burst = 64'000;
    q.latency_us = 120'000;
    q.jitter_us = 10'000;
    q.loss_ppm = 1000;
    q.priority = 6;
    q.dscp = 34;
    return q;
}

}  // namespace

std::vector<Sample> samples() {
    std::vector<Sample> out;
    const ConnectionId none;
    const ConnectionId c = client_cid(), s = server_cid();

    HelloFrame h;
    h.versions[0] = kVersion1;
    h.version_count = 1;
    h.service_class = 2;
    h.qos = full_qos();
    out.push_back(build_long("initial_hello", PacketType::initial, kVersion1, none, c, 0,
                             kMinInitialSize, [&](Writer& w) { write_hello(w, h); }));

    std::array<std::uint8_t, kCookieLen> cookie;
    CookieJar jar(test_key(1), 10 * sansio::kSecond);
    jar.issue(client_addr(), c, 5 * sansio::kSecond, cookie);
    HelloFrame hc = h;
    hc.token = cookie;
    out.push_back(build_long("initial_cookie", PacketType::initial, kVersion1, none, c, 1,
                             kMinInitialSize, [&](Writer& w) {
                                 write_ping(w);
                                 write_hello(w, hc);
                             }));

    // A HELLO that offers short packets without the CRC32C (after its versions).
    HelloFrame ho = hc;
    ho.versions[1] = kOfferNoChecksum;
    ho.version_count = 2;
    out.push_back(build_long("initial_no_checksum_offer", PacketType::initial, kVersion1, none, c, 2,
                             kMinInitialSize, [&](Writer& w) { write_hello(w, ho); }));

    HelloFrame hv;
    hv.versions = {0x4D43FFFF, kVersion1};
    hv.version_count = 2;
    hv.service_class = 0;
    out.push_back(build_long("initial_unknown_version", PacketType::initial, 0x4D43FFFF, none, c,
                             0, kMinInitialSize, [&](Writer& w) { write_hello(w, hv); }));

    out.push_back(build_long("retry", PacketType::retry, kVersion1, c, none, 0, 0,
                             [&](Writer& w) { write_retry_token(w, cookie); }));

    Qos granted;
    granted.rate = 1'000'000;
    granted.dscp = 34;
    out.push_back(build_long("accept", PacketType::accept, kVersion1, c, s, 0, 0,
                             [&](Writer& w) { write_accept(w, 2, granted); }));
    // An ACCEPT that agrees to the client's no-checksum offer (PARAMS).
    out.push_back(build_long("accept_no_checksum", PacketType::accept, kVersion1, c, s, 0, 0,
                             [&](Writer& w) {
                                 write_accept(w, 1, Qos{});
                                 write_params(w, kParamNoChecksum);
                             }));

    RefuseFrame rf;
    rf.code = 1;
    rf.service_class = 2;
    rf.asked = full_qos();
    rf.available.rate = 500'000;
    rf.reason = text("host capacity reserved");
    out.push_back(build_long("refuse", PacketType::refuse, kVersion1, c, none, 0, 0,
                             [&](Writer& w) { write_refuse(w, rf); }));

    {
        std::vector<std::uint8_t> buf(256);
        PacketWriter pw(buf);
        const std::uint32_t versions[] = {kVersion1, 0x4D430002};
        pw.begin_version_negotiation(c, none, versions);
        buf.resize(static_cast<std::size_t>(pw.finish()));
        out.push_back({"version_negotiation", PacketType::version_negotiation, std::move(buf)});
    }

    out.push_back(build_short("short_ping", 7, -1, [](Writer& w) { write_ping(w); }));
    AckFrame a;
    a.largest = 1000;
    a.ack_delay_us = 250;
    a.ranges[0] = {990, 1000};
    a.ranges[1] = {900, 980};
    a.ranges[2] = {5, 5};
    a.ranges[3] = {0, 3};
    a.count = 4;
    out.push_back(build_short("short_ack", 70000, 65000, [&](Writer& w) { write_ack(w, a); }));
    out.push_back(build_short("short_stream", 8, 1, [](Writer& w) {
        write_stream(w, 100000, text("hello, stream"), false);
    }));
    out.push_back(build_short("short_stream_fin", 9, 1, [](Writer& w) {
        write_stream(w, 0, text("last bytes"), true);
    }));
    out.push_back(build_short("short_datagram", 10, 1, [](Writer& w) {
        write_datagram(w, text("one message"));
        write_datagram(w, text(""));
    }));
    out.push_back(build_short("short_max_data", 11, 1,
                              [](Writer& w) { write_max_data(w, 1u << 20); }));
    out.push_back(build_short("short_close", 12, 1,
                              [](Writer& w) { write_close(w, 0, text("bye")); }));
    out.push_back(build_short("short_reset", 13, 1, [](Writer& w) { write_reset(w, 7, 4096); }));
    out.push_back(build_short("short_mixed", 300, 1, [&](Writer& w) {
        write_ack(w, a);
        write_padding(w, 3);
        write_stream(w, 5, text("abc"), false);
        write_max_data(w, 99);
        write_ping(w);
    }));
    // Class realtime: a TIMESTAMP, two messages (seq 0x1fffe and 0x1ffff go
    // as their low 16 bits; stamps are the low 32 bits of the send time),
    // the second one the packet's last frame, without a length; a REPAIR.
    static const std::uint8_t m1[] = {0x12, 0x34, 0x56, 0x78, 'f', 'r', 'a', 'm', 'e'};
    static const std::uint8_t m2[] = {0x12, 0x34, 0x56, 0x79, 'l', 'a', 's', 't'};
    out.push_back(build_short("short_message", 14, 1, [](Writer& w) {
        write_timestamp(w, 0x1'12345680ull);
        write_message(w, 0x1fffe, m1);
        write_message(w, 0x1ffff, m2, true);
    }));
    static const std::uint8_t rep[] = {0x01, 0x02, 0x03, 0x04, 0x05};
    out.push_back(build_short("short_repair", 15, 1, [](Writer& w) { write_repair(w, rep); }));
    return out;
}

}  // namespace gs::mces::wire::test
