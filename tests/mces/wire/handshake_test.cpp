// The handshake end to end, in memory: happy path, version negotiation,
// RETRY then ACCEPT, cookie expiry and binding, key rotation, a spoofed
// flood, admission refusal, client retransmission and give-up; the 1-RTT
// path (RetryPolicy::under_load) and its switch to RETRY under load.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "core/mces/wire/handshake.h"
#include "tests/mces/wire/alloc_counter.h"
#include "tests/mces/wire/samples.h"

using namespace gs::mces::wire;
using gs::sansio::Addr;
using gs::sansio::kMillisecond;
using gs::sansio::kNever;
using gs::sansio::kSecond;
using gs::sansio::Time;
namespace t = gs::mces::wire::test;

namespace {

using Kind = ServerReply::Kind;

// The cookie path, as every server took it before RetryPolicy::under_load:
// the tests below are about RETRY and cookies, so they ask for it.
ServerConfig cookie_first() {
    ServerConfig c;
    c.retry = RetryPolicy::always;
    return c;
}

ClientConfig client_config() {
    ClientConfig c;
    c.cid = t::client_cid();
    c.service_class = 2;
    c.qos.rate = 5'000'000;
    c.qos.latency_us = 20'000;
    c.qos.dscp = 34;
    return c;
}

// Runs the client's transmissions through the server and the replies back,
// until nothing is left to send; returns the server's last decision.
Kind exchange(ClientHandshake& cl, ServerHandshake& sv, const Addr& from, Time now,
              AcceptInfo* info = nullptr) {
    Kind last = Kind::drop;
    std::vector<std::uint8_t> d;
    for (int guard = 0; guard < 10 && cl.poll_transmit(d); ++guard) {
        ServerReply r = sv.on_initial(from, d, now);
        last = r.kind;
        if (info && (r.kind == Kind::accept || r.kind == Kind::refuse)) *info = r.info;
        if (r.kind != Kind::drop) cl.on_datagram(r.bytes(), now);
    }
    return last;
}

// One INITIAL with `token`, built without a client (for crafted floods).
std::size_t build_initial(std::span<std::uint8_t> buf, const ConnectionId& cid,
                          std::span<const std::uint8_t> token, std::uint32_t version = kVersion1) {
    PacketWriter pw(buf);
    pw.begin_long(PacketType::initial, version, ConnectionId{}, cid, 0, 1);
    HelloFrame h;
    h.versions[0] = version;
    h.version_count = 1;
    h.service_class = 1;
    h.token = token;
    write_hello(pw.body(), h);
    pw.pad_to(kMinInitialSize);
    const int n = pw.finish();
    return n > 0 ? static_cast<std::size_t>(n) : 0;
}

}  // namespace

TEST_CASE("happy path: INITIAL, RETRY, INITIAL with cookie, ACCEPT") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    ClientHandshake cl(client_config());
    const Addr from = t::client_addr();
    const Time now = 100 * kSecond;
    cl.start(now);

    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    CHECK(d.size() >= kMinInitialSize);
    ServerReply r1 = sv.on_initial(from, d, now);
    REQUIRE(r1.kind == Kind::send);
    CHECK(r1.len <= 3 * d.size());
    PacketView v;
    REQUIRE(parse_packet(r1.bytes(), 8, v) == ParseError::ok);
    CHECK(v.hdr.type == PacketType::retry);
    REQUIRE(cl.on_datagram(r1.bytes(), now));
    CHECK(cl.state() == ClientHandshake::State::connecting);

    REQUIRE(cl.poll_transmit(d));
    ServerReply r2 = sv.on_initial(from, d, now + 5 * kMillisecond);
    REQUIRE(r2.kind == Kind::accept);
    CHECK(r2.info.client_cid == t::client_cid());
    CHECK(r2.info.server_cid.len == 8);
    CHECK(r2.info.asked_class == 2);
    CHECK(r2.info.granted_class == 2);
    CHECK(r2.info.granted == client_config().qos);   // no callback: granted as asked
    REQUIRE(cl.on_datagram(r2.bytes(), now));
    CHECK(cl.state() == ClientHandshake::State::established);
    CHECK(cl.server_cid() == r2.info.server_cid);
    CHECK(cl.version() == kVersion1);
    CHECK(cl.granted() == client_config().qos);
    CHECK(cl.next_timeout() == kNever);
    CHECK_FALSE(cl.poll_transmit(d));

    const ServerCounters& c = sv.counters();
    CHECK(c.cookies_issued == 1);
    CHECK(c.cookies_accepted == 1);
    CHECK(c.admitted == 1);
    CHECK(c.parse.total() == 0);

    // The same INITIAL again (its ACCEPT was lost): the same answer, same ID.
    ServerReply r3 = sv.on_initial(from, d, now + 10 * kMillisecond);
    REQUIRE(r3.kind == Kind::accept);
    CHECK(r3.info.server_cid == r2.info.server_cid);
    // A late duplicate at the client is ignored.
    CHECK_FALSE(cl.on_datagram(r3.bytes(), now));
}

TEST_CASE("version negotiation: the client falls back to a version both speak") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    ClientConfig cc = client_config();
    cc.versions = {0x4D430002, kVersion1};   // prefers a version the server lacks
    ClientHandshake cl(cc);
    cl.start(0);
    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    ServerReply r = sv.on_initial(t::client_addr(), d, 0);
    REQUIRE(r.kind == Kind::send);
    PacketView v;
    REQUIRE(parse_packet(r.bytes(), 8, v) == ParseError::ok);
    CHECK(v.hdr.type == PacketType::version_negotiation);
    REQUIRE(v.vn_count() == 1);
    CHECK(v.vn_version(0) == kVersion1);
    CHECK(r.len <= 3 * d.size());
    REQUIRE(cl.on_datagram(r.bytes(), 0));
    CHECK(cl.version() == kVersion1);
    CHECK(exchange(cl, sv, t::client_addr(), 0) == Kind::accept);
    CHECK(cl.state() == ClientHandshake::State::established);
    CHECK(cl.version() == kVersion1);
    CHECK(sv.counters().version_negotiations == 1);
    CHECK(cl.counters().version_negotiations == 1);
}

TEST_CASE("version negotiation: no common version is a clear error") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    ClientConfig cc = client_config();
    cc.versions = {0x4D430002};
    ClientHandshake cl(cc);
    cl.start(0);
    exchange(cl, sv, t::client_addr(), 0);
    CHECK(cl.state() == ClientHandshake::State::failed);
    CHECK(cl.error() == HandshakeError::version_mismatch);
    CHECK(cl.message().find("0x4d430001") != std::string::npos);
    CHECK(cl.message().find("0x4d430002") != std::string::npos);
}

TEST_CASE("a version the client did not prefer is a downgrade and is dropped") {
    ServerConfig cfg = cookie_first();
    cfg.versions = {kVersion1, 0x4D430002};
    ServerHandshake sv(cfg, t::test_key(1));
    std::vector<std::uint8_t> buf(kMaxPacketSize);
    PacketWriter pw(buf);
    pw.begin_long(PacketType::initial, 0x4D430002, ConnectionId{}, t::client_cid(), 0, 1);
    HelloFrame h;
    h.versions = {kVersion1, 0x4D430002};   // prefers v1, yet speaks v2
    h.version_count = 2;
    write_hello(pw.body(), h);
    pw.pad_to(kMinInitialSize);
    const int n = pw.finish();
    REQUIRE(n > 0);
    ServerReply r = sv.on_initial(t::client_addr(), std::span(buf).first(n), 0);
    CHECK(r.kind == Kind::drop);
    CHECK(sv.counters().version_downgrades == 1);
}

TEST_CASE("an expired cookie gets a fresh RETRY, and the client then succeeds") {
    ServerConfig cfg = cookie_first();
    cfg.cookie_lifetime = 10 * kSecond;
    ServerHandshake sv(cfg, t::test_key(1));
    ClientConfig cc = client_config();
    cc.give_up_after = 60 * kSecond;
    ClientHandshake cl(cc);
    const Addr from = t::client_addr();
    cl.start(0);
    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    ServerReply r = sv.on_initial(from, d, 0);
    REQUIRE(cl.on_datagram(r.bytes(), 0));
    REQUIRE(cl.poll_transmit(d));                  // carries the cookie
    const Time late = 12 * kSecond;                // delivered after the lifetime
    r = sv.on_initial(from, d, late);
    CHECK(r.kind == Kind::send);                   // a RETRY, not an ACCEPT
    CHECK(sv.counters().cookies_rejected_expired == 1);
    CHECK(sv.counters().cookies_issued == 2);
    REQUIRE(cl.on_datagram(r.bytes(), late));
    CHECK(exchange(cl, sv, from, late) == Kind::accept);
    CHECK(cl.state() == ClientHandshake::State::established);
    CHECK(cl.counters().retries == 2);
}

TEST_CASE("a cookie presented from another address or port is rejected") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    ClientHandshake cl(client_config());
    const Addr from = t::client_addr();
    cl.start(0);
    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    REQUIRE(cl.on_datagram(sv.on_initial(from, d, 0).bytes(), 0));
    REQUIRE(cl.poll_transmit(d));   // the INITIAL with the cookie, replayed elsewhere:

    Addr other_port = from;
    other_port.port = static_cast<std::uint16_t>(from.port + 1);
    Addr other_ip = Addr::v4(0x0a000003, from.port);
    for (const Addr& a : {other_port, other_ip}) {
        ServerReply r = sv.on_initial(a, d, 0);
        CHECK(r.kind == Kind::send);   // a RETRY to the new address, no ACCEPT
        PacketView v;
        REQUIRE(parse_packet(r.bytes(), 8, v) == ParseError::ok);
        CHECK(v.hdr.type == PacketType::retry);
    }
    CHECK(sv.counters().cookies_rejected_bad_mac == 2);
    CHECK(sv.counters().cookies_accepted == 0);
    CHECK(sv.counters().admitted == 0);
    // from the right address it still works
    CHECK(sv.on_initial(from, d, 0).kind == Kind::accept);
}

TEST_CASE("key rotation: a cookie survives one rotation, not two") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    const Addr from = t::client_addr();
    auto cookie_initial = [&](std::vector<std::uint8_t>& d) {
        ClientHandshake cl(client_config());
        cl.start(0);
        REQUIRE(cl.poll_transmit(d));
        REQUIRE(cl.on_datagram(sv.on_initial(from, d, 0).bytes(), 0));
        REQUIRE(cl.poll_transmit(d));
    };
    std::vector<std::uint8_t> d1, d2;
    cookie_initial(d1);
    sv.cookies().rotate(t::test_key(2));
    CHECK(sv.on_initial(from, d1, kSecond).kind == Kind::accept);   // previous key
    cookie_initial(d2);                                             // made with key 2
    sv.cookies().rotate(t::test_key(3));
    CHECK(sv.on_initial(from, d1, kSecond).kind == Kind::send);     // key 1: gone
    CHECK(sv.counters().cookies_rejected_unknown_key == 1);
    CHECK(sv.on_initial(from, d2, kSecond).kind == Kind::accept);   // key 2: previous
}

TEST_CASE("spoofed-source flood: 100,000 INITIALs, no state, at most 3x bytes per address") {
    std::size_t admissions = 0;
    ServerHandshake sv(cookie_first(), t::test_key(1), [&](const AdmissionRequest&) {
        ++admissions;
        return Admission{};
    });
    constexpr std::size_t kFlood = 100'000;
    std::array<std::uint8_t, 2048> buf{};
    std::array<std::uint8_t, kCookieLen> forged{};
    std::uint64_t received = 0, sent = 0, worst_ratio_x1000 = 0;
    std::size_t bad_builds = 0, accepts = 0, over_budget = 0;

    const std::size_t allocs_before = t::alloc_count();
    for (std::size_t i = 0; i < kFlood; ++i) {
        // distinct address and port per packet; one in four carries a forged cookie
        const Addr from = Addr::v4(0x0a000000u + static_cast<std::uint32_t>(i),
                                   static_cast<std::uint16_t>(1024 + i % 60000));
        std::array<std::uint8_t, 8> id;
        for (std::size_t k = 0; k < 8; ++k) id[k] = static_cast<std::uint8_t>(i >> (k * 3));
        for (std::size_t k = 0; k < forged.size(); ++k)
            forged[k] = static_cast<std::uint8_t>(i * 7 + k);
        const bool forge = i % 4 == 0;
        const std::size_t n = build_initial(buf, ConnectionId::from(id),
                                            forge ? std::span<const std::uint8_t>(forged)
                                                  : std::span<const std::uint8_t>());
        const ServerReply r = sv.on_initial(from, std::span(buf).first(n), Time(i) * 1000);
        // No doctest assertions in here: they may allocate, and the point is
        // to count the server's allocations.
        if (n < kMinInitialSize) ++bad_builds;
        if (r.kind == Kind::accept || r.kind == Kind::refuse) ++accepts;
        // each address sent exactly this one datagram: its budget is 3x of it
        if (r.len > 3 * n) ++over_budget;
        received += n;
        sent += r.len;
        worst_ratio_x1000 = std::max<std::uint64_t>(worst_ratio_x1000, n ? r.len * 1000 / n : 0);
    }
    const std::size_t allocs = t::alloc_count() - allocs_before;

    CHECK(bad_builds == 0);
    CHECK(accepts == 0);
    CHECK(over_budget == 0);
    CHECK(allocs == 0);   // nothing was stored, not even temporarily on the heap
    CHECK(admissions == 0);
    const ServerCounters& c = sv.counters();
    CHECK(c.datagrams == kFlood);
    CHECK(c.cookies_accepted == 0);
    CHECK(c.admitted == 0);
    CHECK(c.cookies_rejected_bad_mac + c.cookies_rejected_unknown_key == kFlood / 4);
    CHECK(c.cookies_issued == kFlood);
    CHECK(c.bytes_in == received);
    CHECK(c.bytes_out == sent);
    CHECK(sent <= 3 * received);
    MESSAGE("flood: " << kFlood << " INITIALs, " << received << " B in, " << sent
                      << " B out, worst reply/request = " << worst_ratio_x1000 / 1000.0
                      << ", heap allocations " << allocs);

    // afterwards a real client still gets through
    ClientHandshake cl(client_config());
    cl.start(kSecond);
    CHECK(exchange(cl, sv, t::client_addr(), kSecond) == Kind::accept);
    CHECK(admissions == 1);
    CHECK(cl.granted_class() == 2);   // Admission{}: the class as asked
    CHECK_FALSE(cl.granted().rate.has_value());   // ...and no QoS granted
}

TEST_CASE("small INITIALs get no answer; replies over the amplification budget are suppressed") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    std::array<std::uint8_t, 64> small{};
    PacketWriter pw(small);
    pw.begin_long(PacketType::initial, kVersion1, ConnectionId{}, t::client_cid(), 0, 1);
    HelloFrame h;
    h.versions[0] = kVersion1;
    h.version_count = 1;
    write_hello(pw.body(), h);
    const int n = pw.finish();
    REQUIRE(n > 0);
    const auto pkt = std::span<const std::uint8_t>(small).first(static_cast<std::size_t>(n));
    CHECK(sv.on_initial(t::client_addr(), pkt, 0).kind == Kind::drop);
    CHECK(sv.counters().initial_too_small == 1);
    CHECK(sv.counters().bytes_out == 0);

    // With no minimum size and a budget of 1x, the ~45-byte RETRY exceeds a
    // ~30-byte INITIAL and must not go out.
    ServerConfig cfg = cookie_first();
    cfg.min_initial_size = 0;
    cfg.amplification_factor = 1;
    ServerHandshake sv2(cfg, t::test_key(1));
    const ServerReply r = sv2.on_initial(t::client_addr(), pkt, 0);
    CHECK(r.kind == Kind::drop);
    CHECK(r.len == 0);
    CHECK(sv2.counters().amplification_limited == 1);
    CHECK(sv2.counters().cookies_issued == 0);
}

TEST_CASE("packets that are not INITIALs, and garbage, are dropped and counted") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    std::size_t parse_errors = 0, not_initial = 0;
    // the INITIAL samples are answered (RETRY, VN); everything else is dropped
    for (const auto& s : t::samples()) {
        const ServerReply r = sv.on_initial(t::client_addr(), s.bytes, 0);
        if (s.type == PacketType::initial) continue;
        CAPTURE(s.name);
        CHECK(r.kind == Kind::drop);
        ++not_initial;
    }
    CHECK(sv.counters().not_initial == not_initial);
    CHECK(sv.counters().initial_too_small == 0);
    std::vector<std::uint8_t> junk(1300, 0x41);
    CHECK(sv.on_initial(t::client_addr(), junk, 0).kind == Kind::drop);
    ++parse_errors;
    CHECK(sv.counters().parse.total() == parse_errors);
    CHECK(sv.counters().parse[ParseError::bad_checksum] == 1);
}

TEST_CASE("admission refusal: the client learns what it asked and what is available") {
    const std::uint64_t capacity = 1'000'000;
    ServerHandshake sv(cookie_first(), t::test_key(1), [&](const AdmissionRequest& req) {
        Admission a;
        if (req.qos.rate && *req.qos.rate > capacity) {
            a.admitted = false;
            a.code = 1;
            a.available.rate = capacity;
            a.reason = "host capacity";
        } else {
            a.service_class = req.service_class;
            a.granted = req.qos;
        }
        return a;
    });
    ClientHandshake cl(client_config());   // asks 5,000,000 B/s
    cl.start(0);
    AcceptInfo info;
    CHECK(exchange(cl, sv, t::client_addr(), 0, &info) == Kind::refuse);
    CHECK(cl.state() == ClientHandshake::State::failed);
    CHECK(cl.error() == HandshakeError::refused);
    CHECK(cl.available().rate == capacity);
    CHECK(cl.refuse_code() == 1);
    const std::string& m = cl.message();
    MESSAGE("client sees: " << m);
    CHECK(m.find("asked class 2") != std::string::npos);
    CHECK(m.find("rate=5000000B/s") != std::string::npos);
    CHECK(m.find("available rate=1000000B/s") != std::string::npos);
    CHECK(m.find("host capacity") != std::string::npos);
    CHECK(sv.counters().refused == 1);
    CHECK(cl.next_timeout() == kNever);

    // a request within capacity is granted
    ClientConfig cc = client_config();
    cc.qos.rate = 800'000;
    ClientHandshake ok(cc);
    ok.start(0);
    CHECK(exchange(ok, sv, t::client_addr(), 0) == Kind::accept);
    CHECK(ok.granted().rate == 800'000u);
}

TEST_CASE("admission may grant less; the client sees the grant") {
    ServerHandshake sv(cookie_first(), t::test_key(1), [](const AdmissionRequest&) {
        Admission a;
        a.service_class = std::uint8_t{1};   // downgraded class
        a.granted.rate = 100;
        return a;
    });
    ClientHandshake cl(client_config());
    cl.start(0);
    AcceptInfo info;
    CHECK(exchange(cl, sv, t::client_addr(), 0, &info) == Kind::accept);
    CHECK(cl.granted_class() == 1);
    CHECK(cl.granted().rate == 100u);
    CHECK_FALSE(cl.granted().dscp.has_value());
    CHECK(info.asked == client_config().qos);
}

TEST_CASE("client: retransmits with back-off, then gives up with a clear error") {
    ClientConfig cc = client_config();
    cc.initial_rto = 250 * kMillisecond;
    cc.max_rto = 1 * kSecond;
    cc.give_up_after = 4 * kSecond;
    ClientHandshake cl(cc);
    const Time t0 = 7 * kSecond;
    cl.start(t0);
    std::vector<std::uint8_t> d;
    std::vector<Time> sends;
    std::vector<std::uint64_t> pns;
    Time now = t0;
    for (int guard = 0; guard < 100 && cl.state() == ClientHandshake::State::connecting;
         ++guard) {
        while (cl.poll_transmit(d)) {
            sends.push_back(now);
            PacketView v;
            REQUIRE(parse_packet(d, 8, v) == ParseError::ok);
            pns.push_back(v.hdr.pn_truncated);
        }
        now = cl.next_timeout();
        cl.on_timeout(now);
    }
    // sent at 0, 0.25, 0.75, 1.75, 2.75, 3.75 s; failed at 4 s
    const std::vector<Time> want = {0, 250 * kMillisecond, 750 * kMillisecond,
                                    1750 * kMillisecond, 2750 * kMillisecond,
                                    3750 * kMillisecond};
    REQUIRE(sends.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        CHECK(sends[i] - t0 == want[i]);
        CHECK(pns[i] == i);   // each retransmission is a new packet number
    }
    CHECK(cl.state() == ClientHandshake::State::failed);
    CHECK(cl.error() == HandshakeError::timeout);
    CHECK(cl.message().find("after 4000 ms (6 INITIALs sent)") != std::string::npos);
    CHECK(cl.next_timeout() == kNever);
    CHECK_FALSE(cl.poll_transmit(d));
}

TEST_CASE("client: replies for another connection ID, or garbage, are ignored") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    ClientHandshake cl(client_config());
    cl.start(0);
    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    // someone else's RETRY
    ClientConfig oc = client_config();
    oc.cid.bytes[0] ^= 0xff;
    ClientHandshake other(oc);
    other.start(0);
    std::vector<std::uint8_t> od;
    REQUIRE(other.poll_transmit(od));
    const ServerReply r = sv.on_initial(t::client_addr(), od, 0);
    CHECK_FALSE(cl.on_datagram(r.bytes(), 0));
    CHECK(cl.counters().ignored == 1);
    std::vector<std::uint8_t> junk(60, 0xc3);
    CHECK_FALSE(cl.on_datagram(junk, 0));
    CHECK(cl.counters().parse.total() == 1);
    CHECK(cl.state() == ClientHandshake::State::connecting);
}

TEST_CASE("client: a server that keeps sending RETRY is given up on") {
    ServerHandshake sv(cookie_first(), t::test_key(1));
    ClientConfig cc = client_config();
    cc.max_retries = 2;
    ClientHandshake cl(cc);
    cl.start(0);
    std::vector<std::uint8_t> d;
    // each INITIAL is answered from a different port, so the cookie never fits
    for (std::uint16_t p = 1; p < 10 && cl.poll_transmit(d); ++p)
        cl.on_datagram(sv.on_initial(Addr::v4(0x0a000002, p), d, 0).bytes(), 0);
    CHECK(cl.error() == HandshakeError::too_many_retries);
    CHECK(cl.counters().retries == 2);
}

namespace {

// Whether the HELLO in an INITIAL lists the no-checksum offer (last).
bool hello_offers(std::span<const std::uint8_t> initial) {
    PacketView v;
    REQUIRE(parse_packet(initial, 0, v) == ParseError::ok);
    FrameReader fr(PacketType::initial, v.payload);
    Frame f;
    while (fr.next(f) == ParseError::ok && !fr.done()) {
        if (f.type != FrameType::hello) continue;
        const auto& h = f.hello;
        return h.version_count > 0 && h.versions[h.version_count - 1] == kOfferNoChecksum;
    }
    return false;
}

}  // namespace

TEST_CASE("no checksum: offered in HELLO, agreed in ACCEPT only when both want it") {
    const Addr from = t::client_addr();
    const Time now = 100 * kSecond;
    for (const bool offer : {false, true}) {
        for (const bool agree : {false, true}) {
            CAPTURE(offer);
            CAPTURE(agree);
            bool seen_offer = false;
            ServerHandshake sv(cookie_first(), t::test_key(1), [&](const AdmissionRequest& r) {
                seen_offer = r.no_checksum_offered;
                Admission a;
                a.granted = r.qos;
                a.no_checksum = agree;
                return a;
            });
            ClientConfig cc = client_config();
            cc.offer_no_checksum = offer;
            ClientHandshake cl(cc);
            cl.start(now);
            std::vector<std::uint8_t> d;
            REQUIRE(cl.poll_transmit(d));
            CHECK(hello_offers(d) == offer);
            cl.on_datagram(sv.on_initial(from, d, now).bytes(), now);   // RETRY
            AcceptInfo info;
            REQUIRE(exchange(cl, sv, from, now, &info) == Kind::accept);
            REQUIRE(cl.state() == ClientHandshake::State::established);
            CHECK(seen_offer == offer);
            CHECK(info.no_checksum == (offer && agree));
            CHECK(cl.no_checksum() == (offer && agree));
            CHECK(sv.counters().no_checksum_offered == (offer ? 1u : 0u));
            CHECK(sv.counters().no_checksum_agreed == (offer && agree ? 1u : 0u));
        }
    }
}

TEST_CASE("no checksum: the offer is never a version, and an unsolicited agreement is refused") {
    const Addr from = t::client_addr();
    const Time now = 100 * kSecond;
    // A server that predates the offer (no callback: it agrees to nothing)
    // admits a client that offers: the offer is skipped like an unknown version.
    {
        ServerHandshake sv(cookie_first(), t::test_key(1));
        ClientConfig cc = client_config();
        cc.offer_no_checksum = true;
        ClientHandshake cl(cc);
        cl.start(now);
        AcceptInfo info;
        CHECK(exchange(cl, sv, from, now, &info) == Kind::accept);
        CHECK(cl.state() == ClientHandshake::State::established);
        CHECK_FALSE(cl.no_checksum());
        CHECK_FALSE(info.no_checksum);
        CHECK(sv.counters().version_downgrades == 0);
    }
    // Listed as a "version" by a misconfigured side: stripped, never spoken.
    {
        ServerConfig sc = cookie_first();
        sc.versions = {kOfferNoChecksum, kVersion1};
        ServerHandshake sv(sc, t::test_key(1));
        CHECK(sv.config().versions == std::vector<std::uint32_t>{kVersion1});
        ClientConfig cc = client_config();
        cc.versions = {kOfferNoChecksum};
        ClientHandshake cl(cc);
        CHECK(cl.config().versions == std::vector<std::uint32_t>{kVersion1});
    }
    // Eight versions leave no slot: nothing is offered.
    {
        ClientConfig cc = client_config();
        cc.offer_no_checksum = true;
        cc.versions.clear();
        for (std::uint32_t i = 1; i <= 8; ++i) cc.versions.push_back(kVersionMagic | i);
        ClientHandshake cl(cc);
        cl.start(now);
        std::vector<std::uint8_t> d;
        REQUIRE(cl.poll_transmit(d));
        CHECK_FALSE(hello_offers(d));
    }
    // An ACCEPT that agrees to what the client did not offer is not an
    // answer: counted, the client keeps waiting.
    {
        ClientHandshake cl(client_config());   // no offer
        cl.start(now);
        std::vector<std::uint8_t> buf(256);
        PacketWriter pw(buf);
        pw.begin_long(PacketType::accept, kVersion1, t::client_cid(), t::server_cid(), 0, 1);
        write_accept(pw.body(), 2, Qos{});
        write_params(pw.body(), kParamNoChecksum);
        const int n = pw.finish();
        REQUIRE(n > 0);
        buf.resize(static_cast<std::size_t>(n));
        CHECK_FALSE(cl.on_datagram(buf, now));
        CHECK(cl.counters().parse[ParseError::bad_handshake] == 1);
        CHECK(cl.state() == ClientHandshake::State::connecting);
    }
}

namespace {
std::shared_ptr<gs::mces::auth::HandshakeProof> proof_for(std::uint8_t fill) {
    gs::mces::auth::Psk psk;
    std::array<std::uint8_t, gs::mces::auth::kPskLen> b;
    b.fill(fill);
    REQUIRE(psk.set(b) == 0);
    auto p = std::make_shared<gs::mces::auth::HandshakeProof>();
    REQUIRE(p->init(psk) == 0);
    return p;
}
}  // namespace

TEST_CASE("authenticated: proofs both ways, nonces exchanged; another key gets nothing, without allocating") {
    ServerConfig sc = cookie_first();
    sc.proof = proof_for(1);
    gs::mces::auth::HandshakeNonce server_nonce;
    server_nonce.fill(0x55);
    ServerHandshake sv(sc, t::test_key(1), [&](const AdmissionRequest&) {
        Admission a;
        a.server_nonce = server_nonce;
        a.no_checksum = true;   // never honoured: an authenticated client does not offer
        return a;
    });
    ClientConfig cc = client_config();
    cc.proof = proof_for(1);
    cc.nonce.fill(0x22);
    cc.offer_no_checksum = false;
    ClientHandshake cl(cc);
    cl.start(kSecond);
    AcceptInfo info;
    REQUIRE(exchange(cl, sv, t::client_addr(), kSecond, &info) == Kind::accept);
    CHECK(cl.state() == ClientHandshake::State::established);
    CHECK(info.client_nonce == cc.nonce);
    CHECK(info.server_nonce == server_nonce);
    CHECK(cl.server_nonce() == server_nonce);
    CHECK(sv.counters().cookies_issued == 1);
    CHECK(sv.counters().bad_proof == 0);

    // A client with another key: no answer, no cookie, no allocation.
    ClientConfig other = client_config();
    other.proof = proof_for(2);
    ClientHandshake stranger(other);
    stranger.start(kSecond);
    std::vector<std::uint8_t> d;
    REQUIRE(stranger.poll_transmit(d));
    const std::size_t before = t::alloc_count();
    const ServerReply r = sv.on_initial(t::client_addr(), d, kSecond);
    const std::size_t allocs = t::alloc_count() - before;
    CHECK(r.kind == Kind::drop);
    CHECK(allocs == 0);
    CHECK(sv.counters().bad_proof == 1);
    CHECK(sv.counters().cookies_issued == 1);

    // A keyless INITIAL, and a reply from a server with another key.
    ClientHandshake keyless(client_config());
    keyless.start(kSecond);
    REQUIRE(keyless.poll_transmit(d));
    CHECK(sv.on_initial(t::client_addr(), d, kSecond).kind == Kind::drop);
    CHECK(sv.counters().parse[ParseError::missing_auth] == 1);
    ServerConfig sc2 = cookie_first();
    sc2.proof = proof_for(2);
    ServerHandshake sv2(sc2, t::test_key(1));
    ClientHandshake cl2(cc);
    cl2.start(kSecond);
    REQUIRE(cl2.poll_transmit(d));
    // The other server drops it (bad_proof); a RETRY it made for its own
    // client is refused by ours.
    CHECK(sv2.on_initial(t::client_addr(), d, kSecond).kind == Kind::drop);
    ClientConfig cc2 = cc;
    cc2.proof = sc2.proof;
    ClientHandshake own2(cc2);
    own2.start(kSecond);
    REQUIRE(own2.poll_transmit(d));
    const ServerReply rr = sv2.on_initial(t::client_addr(), d, kSecond);
    REQUIRE(rr.kind == Kind::send);
    CHECK_FALSE(cl2.on_datagram(rr.bytes(), kSecond));
    CHECK(cl2.counters().bad_proof == 1);
    CHECK(cl2.state() == ClientHandshake::State::connecting);
}

TEST_CASE("under_load (the default): an INITIAL without a cookie is admitted at once, unvalidated") {
    const Addr from = t::client_addr();
    const Time now = 100 * kSecond;
    std::vector<AdmissionRequest> seen;
    ServerHandshake sv(ServerConfig{}, t::test_key(1), [&](const AdmissionRequest& r) {
        seen.push_back(r);
        Admission a;
        a.granted = r.qos;
        return a;
    });
    CHECK(sv.config().retry == RetryPolicy::under_load);
    CHECK(sv.config().max_unvalidated == 64);
    ClientHandshake cl(client_config());
    cl.start(now);
    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    const ServerReply r = sv.on_initial(from, d, now);
    REQUIRE(r.kind == Kind::accept);   // no RETRY: one round trip
    CHECK_FALSE(r.info.validated);
    CHECK(r.len <= 3 * d.size());
    REQUIRE(seen.size() == 1);
    CHECK_FALSE(seen[0].validated);
    REQUIRE(cl.on_datagram(r.bytes(), now));
    CHECK(cl.state() == ClientHandshake::State::established);
    CHECK(cl.server_cid() == r.info.server_cid);
    CHECK(cl.counters().retries == 0);
    const ServerCounters& c = sv.counters();
    CHECK(c.cookies_issued == 0);
    CHECK(c.cookies_accepted == 0);
    CHECK(c.admitted == 1);
    CHECK(c.admitted_unvalidated == 1);

    // The INITIAL resent (its ACCEPT lost) gets the same ID, seconds later
    // too: derived from the address and client ID, not the time.
    const ServerReply again = sv.on_initial(from, d, now + 3 * kSecond);
    REQUIRE(again.kind == Kind::accept);
    CHECK(again.info.server_cid == r.info.server_cid);
    // Another client ID, or the same from another port: another ID.
    const Addr other{from.ip, static_cast<std::uint16_t>(from.port + 1)};
    CHECK_FALSE(sv.on_initial(other, d, now).info.server_cid == r.info.server_cid);
    // An owner that has a connection for the client pins its ID.
    ServerHandshake pinned(ServerConfig{}, t::test_key(1), [](const AdmissionRequest&) {
        Admission a;
        a.server_cid = ConnectionId::from(std::array<std::uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8});
        return a;
    });
    const ServerReply p = pinned.on_initial(from, d, now);
    REQUIRE(p.kind == Kind::accept);
    CHECK(p.info.server_cid == ConnectionId::from(std::array<std::uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST_CASE("under_load: at max_unvalidated the server sends RETRY, and a cookie admits validated") {
    const Addr from = t::client_addr();
    const Time now = 100 * kSecond;
    ServerConfig sc;
    sc.max_unvalidated = 4;
    ServerHandshake sv(sc, t::test_key(1));
    sv.set_unvalidated(3);
    {
        ClientHandshake cl(client_config());
        cl.start(now);
        AcceptInfo info;
        REQUIRE(exchange(cl, sv, from, now, &info) == Kind::accept);
        CHECK_FALSE(info.validated);
    }
    sv.set_unvalidated(4);   // the owner now holds 4 unproved connections
    ClientConfig cc = client_config();
    cc.cid = ConnectionId::from(std::array<std::uint8_t, 8>{9, 9, 9, 9, 9, 9, 9, 9});
    ClientHandshake cl(cc);
    cl.start(now);
    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    const ServerReply r1 = sv.on_initial(from, d, now);
    REQUIRE(r1.kind == Kind::send);
    PacketView v;
    REQUIRE(parse_packet(r1.bytes(), 8, v) == ParseError::ok);
    CHECK(v.hdr.type == PacketType::retry);
    CHECK(sv.counters().retries_under_load == 1);
    REQUIRE(cl.on_datagram(r1.bytes(), now));
    REQUIRE(cl.poll_transmit(d));
    const ServerReply r2 = sv.on_initial(from, d, now);   // with the cookie: admitted, proved
    REQUIRE(r2.kind == Kind::accept);
    CHECK(r2.info.validated);
    CHECK(sv.counters().cookies_accepted == 1);
    CHECK(sv.counters().admitted_unvalidated == 1);
    REQUIRE(cl.on_datagram(r2.bytes(), now));
    CHECK(cl.counters().retries == 1);

    // retry = always: a RETRY whatever the count.
    ServerHandshake always(cookie_first(), t::test_key(1));
    ClientHandshake cl3(client_config());
    cl3.start(now);
    REQUIRE(cl3.poll_transmit(d));
    CHECK(always.on_initial(from, d, now).kind == Kind::send);
    CHECK(always.counters().retries_under_load == 0);
    CHECK(always.counters().cookies_issued == 1);
}

TEST_CASE("under_load: an owner that would reserve for the client gets a RETRY first, then admits it proved") {
    const Addr from = t::client_addr();
    const Time now = 100 * kSecond;
    std::vector<bool> asked;   // AdmissionRequest::validated, per call
    ServerHandshake sv(ServerConfig{}, t::test_key(1), [&](const AdmissionRequest& r) {
        asked.push_back(r.validated);
        Admission a;
        if (!r.validated) {
            a.admitted = false;
            a.prove_address = true;   // as the engine's ledger admission does for a rate
        }
        return a;
    });
    ClientHandshake cl(client_config());
    cl.start(now);
    std::vector<std::uint8_t> d;
    REQUIRE(cl.poll_transmit(d));
    const ServerReply r1 = sv.on_initial(from, d, now);
    REQUIRE(r1.kind == Kind::send);
    PacketView v;
    REQUIRE(parse_packet(r1.bytes(), 8, v) == ParseError::ok);
    CHECK(v.hdr.type == PacketType::retry);   // not a REFUSE
    CHECK(sv.counters().retries_to_prove == 1);
    CHECK(sv.counters().admitted_unvalidated == 0);
    REQUIRE(cl.on_datagram(r1.bytes(), now));
    REQUIRE(cl.poll_transmit(d));
    const ServerReply r2 = sv.on_initial(from, d, now);
    REQUIRE(r2.kind == Kind::accept);
    CHECK(r2.info.validated);
    CHECK(asked == std::vector<bool>{false, true});
}

TEST_CASE("under_load, authenticated: another key or none still gets no answer and no admission") {
    ServerConfig sc;   // under_load: nothing but the cookie step changes
    sc.proof = proof_for(1);
    int admissions = 0;
    ServerHandshake sv(sc, t::test_key(1), [&](const AdmissionRequest&) {
        ++admissions;
        return Admission{};
    });
    ClientConfig other = client_config();
    other.proof = proof_for(2);
    ClientHandshake stranger(other);
    stranger.start(kSecond);
    std::vector<std::uint8_t> d;
    REQUIRE(stranger.poll_transmit(d));
    const std::size_t before = t::alloc_count();
    CHECK(sv.on_initial(t::client_addr(), d, kSecond).kind == Kind::drop);
    CHECK(t::alloc_count() - before == 0);
    ClientHandshake keyless(client_config());
    keyless.start(kSecond);
    REQUIRE(keyless.poll_transmit(d));
    CHECK(sv.on_initial(t::client_addr(), d, kSecond).kind == Kind::drop);
    CHECK(admissions == 0);
    CHECK(sv.counters().bad_proof == 1);
    CHECK(sv.counters().parse[ParseError::missing_auth] == 1);
    CHECK(sv.counters().admitted == 0);
    // The right key: admitted in one round trip, proofs both ways.
    ClientConfig cc = client_config();
    cc.proof = proof_for(1);
    cc.nonce.fill(0x33);
    ClientHandshake cl(cc);
    cl.start(kSecond);
    AcceptInfo info;
    REQUIRE(exchange(cl, sv, t::client_addr(), kSecond, &info) == Kind::accept);
    CHECK(cl.state() == ClientHandshake::State::established);
    CHECK_FALSE(info.validated);
    CHECK(admissions == 1);
}
