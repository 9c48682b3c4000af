// The overlay server protocol and logic without sockets: the wire format
// both ways, strict decoding, every operation of server.h, leases, bounds,
// the state file.
#include "core/overlay/config/server_wire.h"
#include "tools/gsoverlayd/server.h"

#include <doctest/doctest.h>

#include <cerrno>

using namespace gs::overlay;
using namespace gs::overlay::server;
using gs::sansio::Addr;
using gs::sansio::kMillisecond;
using gs::sansio::kNever;
using gs::sansio::kSecond;
using gs::sansio::Time;

namespace {

const Addr kClient = Addr::v4(0x7f000001, 40000);

Attributes attrs(std::initializer_list<std::pair<const char*, const char*>> kv) {
    Attributes a;
    for (const auto& [k, v] : kv) a.set(k, v);
    return a;
}

Response call(Server& s, const Request& q, Time now = 0, const Addr& from = kClient) {
    std::vector<std::uint8_t> reply;
    REQUIRE(s.handle(from, encode_request(q), now, reply));
    CHECK(reply.size() <= kMaxDatagram);
    Response a;
    REQUIRE(decode_response(reply, a) == 0);
    CHECK(a.txid == q.txid);
    CHECK(a.op == q.op);
    CHECK(a.overlay == q.overlay);
    return a;
}

Request create(std::uint64_t id, Attributes a) {
    Request q;
    q.op = Op::create;
    q.txid = 7;
    q.overlay = id;
    q.attrs = std::move(a);
    return q;
}

Request member_op(Op op, std::uint64_t id, const Addr& m, std::uint32_t lease_ms = 0, std::uint8_t want = 8) {
    Request q;
    q.op = op;
    q.txid = 9;
    q.overlay = id;
    q.member = m;
    q.lease_ms = lease_ms;
    q.want = want;
    return q;
}

Addr member(int i) { return Addr::v4(0x0a000000 + static_cast<std::uint32_t>(i), 9000); }

}  // namespace

TEST_CASE("wire: every request round-trips") {
    std::vector<Request> qs;
    qs.push_back(create(1234, attrs({{"OverlayID", "1234"}, {"Protocol", "DT"}})));
    qs.push_back(member_op(Op::join, 5, member(1), 1500, 32));
    qs.push_back(member_op(Op::renew, 5, member(2), 0, 0));
    qs.push_back(member_op(Op::leave, 5, member(3), 0, 0));
    Request g;
    g.op = Op::get;
    g.overlay = 3;
    qs.push_back(g);
    Request l;
    l.op = Op::list;
    l.cursor = 77;
    qs.push_back(l);
    l.overlay = 8;
    l.cursor = 0;
    qs.push_back(l);
    Request st;
    st.op = Op::stats;
    qs.push_back(st);
    for (const Request& q : qs) {
        CAPTURE(name(q.op));
        Request d;
        const auto bytes = encode_request(q);
        REQUIRE(decode_request(bytes, d) == 0);
        CHECK(d.op == q.op);
        CHECK(d.txid == q.txid);
        CHECK(d.overlay == q.overlay);
        CHECK(d.attrs.to_text() == q.attrs.to_text());
        if (q.op == Op::join || q.op == Op::renew || q.op == Op::leave) CHECK(d.member == q.member);
        if (q.op == Op::join || q.op == Op::renew) CHECK(d.lease_ms == q.lease_ms);
        if (q.op == Op::join) CHECK(d.want == q.want);
        if (q.op == Op::list) CHECK(d.cursor == q.cursor);
        // Every proper prefix and one byte more are refused, never read past the end.
        for (std::size_t n = 0; n < bytes.size(); ++n) {
            CAPTURE(n);
            CHECK(decode_request(std::span(bytes.data(), n), d) != 0);
        }
        auto longer = bytes;
        longer.push_back(0);
        CHECK(decode_request(longer, d) == kMalformed);
    }
}

TEST_CASE("wire: every answer round-trips") {
    std::vector<Response> as;
    Response a;
    a.op = Op::create;
    a.txid = 1;
    a.overlay = 1234;
    a.created = true;
    a.attrs = attrs({{"OverlayID", "1234"}, {"Protocol", "HC"}});
    as.push_back(a);
    a = Response{};
    a.op = Op::join;
    a.overlay = 9;
    a.lease_ms = 30000;
    for (int i = 0; i < 32; ++i) a.members.push_back({member(i), 0});
    as.push_back(a);
    a = Response{};
    a.op = Op::list;
    a.more = true;
    for (int i = 0; i < 64; ++i) a.overlays.push_back({static_cast<std::uint64_t>(i + 1), 3, 1});
    as.push_back(a);
    a = Response{};
    a.op = Op::list;
    a.overlay = 4;
    for (int i = 0; i < 60; ++i) a.members.push_back({member(i), 1000u * static_cast<unsigned>(i)});
    as.push_back(a);
    a = Response{};
    a.op = Op::stats;
    a.stats = {{"requests", 5}, {"malformed", 1}};
    as.push_back(a);
    a = Response{};
    a.op = Op::get;
    a.overlay = 5;
    a.status = Status::conflict;
    a.message = "key attribute Protocol differs";
    as.push_back(a);
    for (const Response& r : as) {
        CAPTURE(name(r.op));
        const auto bytes = encode_response(r);
        CHECK(bytes.size() <= kMaxDatagram);
        Response d;
        REQUIRE(decode_response(bytes, d) == 0);
        CHECK(d.op == r.op);
        CHECK(d.status == r.status);
        CHECK(d.message == r.message);
        CHECK(d.created == r.created);
        CHECK(d.attrs.to_text() == r.attrs.to_text());
        CHECK(d.lease_ms == r.lease_ms);
        REQUIRE(d.members.size() == r.members.size());
        for (std::size_t i = 0; i < d.members.size(); ++i) {
            CHECK(d.members[i].addr == r.members[i].addr);
            CHECK(d.members[i].remaining_ms == r.members[i].remaining_ms);
        }
        CHECK(d.overlays.size() == r.overlays.size());
        CHECK(d.more == r.more);
        CHECK(d.stats == r.stats);
        for (std::size_t n = 0; n < bytes.size(); ++n) CHECK(decode_response(std::span(bytes.data(), n), d) != 0);
    }
}

TEST_CASE("wire: strict decoding") {
    Request d;
    auto ok = encode_request(create(1, attrs({{"Protocol", "DT"}})));
    struct Case { const char* what; std::size_t at; std::uint8_t value; int result; };
    const Case cases[] = {
        {"bad magic", 0, 0x00, kNotOurs},
        {"an answer", 3, 0x81, kNotOurs},
        {"version 2", 2, 2, kBadVersion},
        {"unknown op", 3, 9, kMalformed},
        {"op 0", 3, 0, kMalformed},
        {"count over the bound", 16, 65, kMalformed},
        {"name not a word", 18, '-', kMalformed},
        {"value length past the end", 26, 0xff, kMalformed},
    };
    for (const Case& c : cases) {
        CAPTURE(c.what);
        auto b = ok;
        b[c.at] = c.value;
        CHECK(decode_request(b, d) == c.result);
    }
    // The same name twice.
    Request twice = create(1, {});
    twice.attrs.set("Protocol", "DT");
    auto b = encode_request(twice);
    b[16] = 2;
    b.insert(b.end(), b.begin() + 17, b.end());
    CHECK(decode_request(b, d) == kMalformed);
    // want > 32, overlay 0 where one is needed, a control character in a value.
    auto j = encode_request(member_op(Op::join, 1, member(1)));
    j.back() = 33;
    CHECK(decode_request(j, d) == kMalformed);
    Request g;
    g.op = Op::get;
    CHECK(decode_request(encode_request(g), d) == kMalformed);
    CHECK(decode_request(encode_request(create(1, attrs({{"Server", "a\nb:1"}}))), d) == kMalformed);
    // Too big a datagram.
    std::vector<std::uint8_t> big(kMaxDatagram + 1, 0);
    std::copy(ok.begin(), ok.begin() + 16, big.begin());
    CHECK(decode_request(big, d) == kMalformed);
}

TEST_CASE("server: CREATE, GET, and a conflict that names the key attribute") {
    Server s;
    Response a = call(s, create(1234, attrs({{"KeyAttributes", "Protocol,DataTransport"},
                                             {"Protocol", "dt"}, {"HelloFast", "100"}})));
    REQUIRE(a.status == Status::ok);
    CHECK(a.created);
    CHECK(s.dirty());
    const std::string stored =
        "OverlayID = 1234\nKeyAttributes = DataTransport,KeyAttributes,OverlayID,Protocol\n"
        "Protocol = DT\nDataTransport = UDP\nHelloFast = 100ms\n";
    CHECK(a.attrs.to_text() == stored);

    Request g;
    g.op = Op::get;
    g.overlay = 1234;
    a = call(s, g);
    REQUIRE(a.status == Status::ok);
    CHECK(a.attrs.to_text() == stored);

    // Same key attributes, other configurable ones: accepted, the stored ones win.
    s.clear_dirty();
    a = call(s, create(1234, attrs({{"KeyAttributes", "DataTransport"}, {"HelloFast", "50ms"}})));
    REQUIRE(a.status == Status::ok);
    CHECK(!a.created);
    CHECK(a.attrs.to_text() == stored);
    CHECK(!s.dirty());

    a = call(s, create(1234, attrs({{"KeyAttributes", "DataTransport"}, {"DataTransport", "TCP"}})));
    CHECK(a.status == Status::conflict);
    CHECK(a.message == "key attribute DataTransport differs: overlay 1234 has DataTransport = UDP, "
                       "the request has DataTransport = TCP");
    a = call(s, create(1234, attrs({{"Protocol", "HC"}})));
    CHECK(a.status == Status::conflict);
    CHECK(a.message == "key attribute KeyAttributes differs: overlay 1234 has KeyAttributes = "
                       "DataTransport,KeyAttributes,OverlayID,Protocol, the request has "
                       "KeyAttributes = KeyAttributes,OverlayID,Protocol");
    CHECK(s.stats().conflicts == 2);
    CHECK(s.stats().created == 1);

    g.overlay = 99;
    a = call(s, g);
    CHECK(a.status == Status::unknown_overlay);
    CHECK(a.message == "no overlay 99 here: CREATE it first");
}

TEST_CASE("server: CREATE refuses bad attributes with the configuration's message") {
    Server s;
    struct Case { Attributes a; const char* message; };
    const Case cases[] = {
        {attrs({{"Protocol", "XY"}}), "CREATE: Protocol = XY: expected DT or HC"},
        {attrs({{"OverlayID", "5"}}), "OverlayID = 5 differs from the request's overlay 1"},
        {attrs({{"NodeAddress", ":1"}}), "NodeAddress is set per member: the server does not keep it"},
        {attrs({{"Bogus", "1"}, {"HelloFast", "x"}}),
         "CREATE: unknown attribute Bogus (docs/overlay.md lists the attributes) (and 1 more)"},
        {attrs({{"HelloSlow", "10s"}}),
         "CREATE: HelloSlow = 10s: must be shorter than NeighborTimeout (4s), or neighbours time out "
         "between Hellos"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.message);
        const Response a = call(s, create(1, c.a));
        CHECK(a.status == Status::bad_attributes);
        CHECK(a.message == c.message);
    }
    CHECK(s.overlay_count() == 0);
    CHECK(s.stats().bad_attributes == 5);
}

TEST_CASE("server: JOIN 8 members, freshest first; RENEW, LEAVE, leases") {
    Limits lim;
    lim.lease_min = 1 * kSecond;
    Server s(lim);
    REQUIRE(call(s, create(7, {})).status == Status::ok);
    for (int i = 1; i <= 8; ++i) {
        const Response a = call(s, member_op(Op::join, 7, member(i), 2000, 5), i * kMillisecond);
        REQUIRE(a.status == Status::ok);
        CHECK(a.lease_ms == 2000);
        // The others, freshest first, at most `want`.
        REQUIRE(a.members.size() == static_cast<std::size_t>(std::min(i - 1, 5)));
        for (std::size_t k = 0; k < a.members.size(); ++k) CHECK(a.members[k].addr == member(i - 1 - static_cast<int>(k)));
    }
    CHECK(s.member_count() == 8);
    CHECK(s.stats().joins == 8);
    CHECK(s.next_expiry() == 1 * kMillisecond + 2 * kSecond);

    // A lease below the minimum is raised; 0 asks for the default.
    CHECK(call(s, member_op(Op::renew, 7, member(1), 10), 1 * kSecond).lease_ms == 1000);
    CHECK(call(s, member_op(Op::renew, 7, member(2), 0), 1 * kSecond).lease_ms == 30000);
    // Renewing makes a member the freshest.
    Response a = call(s, member_op(Op::join, 7, member(9), 2000, 2), 1 * kSecond);
    REQUIRE(a.members.size() == 2);
    CHECK(a.members[0].addr == member(1));   // renewed at the same time as 2: ties by address
    CHECK(a.members[1].addr == member(2));

    // Leases end: 1 at 2 s (renewed with 1 s at 1 s), 3..8 at 2 s + 3..8 ms.
    s.expire(2 * kSecond + 5 * kMillisecond);
    CHECK(s.stats().expired == 4);   // members 1, 3, 4, 5
    s.expire(2 * kSecond + 8 * kMillisecond);
    CHECK(s.stats().expired == 7);
    CHECK(s.member_count() == 2);    // 2 (to 31 s), 9 (to 3 s)
    s.expire(3 * kSecond);
    CHECK(s.member_count() == 1);

    // LIST of the overlay: live members with what remains of their lease.
    Request l;
    l.op = Op::list;
    l.overlay = 7;
    a = call(s, l, 3 * kSecond);
    REQUIRE(a.members.size() == 1);
    CHECK(a.members[0].addr == member(2));
    CHECK(a.members[0].remaining_ms == 28000);

    // LEAVE removes, twice is fine; RENEW of an unknown member registers it
    // (a restarted server learns its members back).
    CHECK(call(s, member_op(Op::leave, 7, member(2)), 3 * kSecond).status == Status::ok);
    CHECK(call(s, member_op(Op::leave, 7, member(2)), 3 * kSecond).status == Status::ok);
    CHECK(s.member_count() == 0);
    CHECK(call(s, member_op(Op::renew, 7, member(4), 5000), 3 * kSecond).status == Status::ok);
    CHECK(s.member_count() == 1);
    CHECK(s.next_expiry() == 8 * kSecond);

    // "0.0.0.0:port": the address the request came from; port 0 is refused.
    CHECK(call(s, member_op(Op::join, 7, Addr::v4(0, 5555)), 3 * kSecond,
               Addr::v4(0xc0a80001, 1)).status == Status::ok);
    a = call(s, l, 3 * kSecond);
    REQUIRE(a.members.size() == 2);
    CHECK(a.members[0].addr == member(4));   // both renewed at 3 s: by address
    CHECK(a.members[1].addr == Addr::v4(0xc0a80001, 5555));
    a = call(s, member_op(Op::join, 7, Addr::v4(0x0a000001, 0)), 3 * kSecond);
    CHECK(a.status == Status::malformed);
    CHECK(a.message == "member port 0");
    CHECK(call(s, member_op(Op::join, 8, member(1))).status == Status::unknown_overlay);
}

TEST_CASE("server: bounds on overlays and members; LIST pages") {
    Limits lim;
    lim.max_overlays = 70;
    lim.max_members = 3;
    Server s(lim);
    for (int i = 1; i <= 70; ++i) REQUIRE(call(s, create(static_cast<std::uint64_t>(i), {})).status == Status::ok);
    Response a = call(s, create(71, {}));
    CHECK(a.status == Status::full);
    CHECK(a.message == "the server holds its maximum of 70 overlays");
    for (int i = 1; i <= 3; ++i) REQUIRE(call(s, member_op(Op::join, 1, member(i))).status == Status::ok);
    a = call(s, member_op(Op::join, 1, member(4)));
    CHECK(a.status == Status::full);
    CHECK(a.message == "overlay 1 has its maximum of 3 members");
    CHECK(a.members.empty());
    CHECK(call(s, member_op(Op::join, 1, member(3))).status == Status::ok);   // a known one renews
    CHECK(s.stats().full == 2);

    Request l;
    l.op = Op::list;
    a = call(s, l);
    REQUIRE(a.overlays.size() == kMaxListOverlays);
    CHECK(a.more);
    CHECK(a.overlays[0].id == 1);
    CHECK(a.overlays[0].members == 3);
    CHECK(a.overlays[0].protocol == 1);
    l.cursor = a.overlays.back().id;
    a = call(s, l);
    CHECK(a.overlays.size() == 6);
    CHECK(!a.more);
    CHECK(a.overlays[0].id == 65);
}

TEST_CASE("server: malformed requests are answered or dropped, and counted") {
    Server s;
    std::vector<std::uint8_t> reply;
    CHECK(!s.handle(kClient, std::vector<std::uint8_t>{1, 2, 3}, 0, reply));
    CHECK(s.stats().dropped == 1);
    auto bad = encode_request(member_op(Op::join, 1, member(1)));
    bad.pop_back();
    REQUIRE(s.handle(kClient, bad, 0, reply));
    Response a;
    REQUIRE(decode_response(reply, a) == 0);
    CHECK(a.status == Status::malformed);
    CHECK(a.message == "malformed request (op JOIN, 38 bytes)");
    CHECK(a.txid == 9);
    bad[2] = 3;
    REQUIRE(s.handle(kClient, bad, 0, reply));
    REQUIRE(decode_response(reply, a) == 0);
    CHECK(a.status == Status::version);
    CHECK(s.stats().malformed == 1);
    CHECK(s.stats().bad_version == 1);
    // An answer sent to the server is never answered (no ping-pong between servers).
    Response r;
    r.op = Op::get;
    r.overlay = 1;
    CHECK(!s.handle(kClient, encode_response(r), 0, reply));
    CHECK(s.stats().dropped == 2);

    Request st;
    st.op = Op::stats;
    a = call(s, st);
    auto value = [&](const char* n) {
        for (const auto& [k, v] : a.stats)
            if (k == n) return v;
        FAIL("no counter ", n);
        return std::uint64_t{0};
    };
    CHECK(value("malformed") == 1);
    CHECK(value("dropped") == 2);
    CHECK(value("requests") == 5);
}

TEST_CASE("server: the state file round-trips; a damaged one is refused with its line") {
    Server s;
    REQUIRE(call(s, create(1234, attrs({{"Protocol", "HC"}, {"PingInterval", "2s"}, {"FailureTimeout", "9s"}}))).created);
    REQUIRE(call(s, create(9, attrs({{"KeyAttributes", "MaxPayload"}, {"MaxPayload", "512"}}))).created);
    REQUIRE(call(s, member_op(Op::join, 9, member(1))).status == Status::ok);
    const std::string text = s.save();
    Server t;
    std::vector<std::string> e;
    REQUIRE(t.load(text, "state", e) == 0);
    CHECK(e.empty());
    CHECK(t.overlay_count() == 2);
    CHECK(t.member_count() == 0);   // members are not kept
    CHECK(t.save() == text);
    REQUIRE(t.attributes(1234));
    CHECK(t.attributes(1234)->to_text() == s.attributes(1234)->to_text());
    // The restarted server refuses the same conflicts.
    CHECK(call(t, create(9, attrs({{"KeyAttributes", "MaxPayload"}, {"MaxPayload", "513"}}))).status ==
          Status::conflict);

    struct Case { const char* text; const char* first; };
    const Case bad[] = {
        {"[overlay]\nOverlayID = 1\n", "state: no '[state]' section with Format = 1"},
        {"[state]\nFormat = 2\n", "state:2: Format = 2: expected Format = 1"},
        {"[state]\nFormat = 1\n[overlay]\nOverlayID = 1\nProtocol = X\n",
         "state:5: Protocol = X: expected DT or HC"},
        {"[state]\nFormat = 1\n[overlay]\nOverlayID = 1\n[overlay]\nOverlayID = 1\n",
         "state:6: overlay 1 given twice"},
        {"[state]\nFormat = 1\nbroken\n", "state:3: expected '[overlay]' or 'Attribute = value'"},
        {"[state]\nFormat = 1\n[overlay]\nProtocol = DT\n",
         "state: OverlayID is required: add OverlayID = 1..9223372036854775808"},
    };
    for (const Case& c : bad) {
        CAPTURE(c.text);
        Server u;
        REQUIRE(call(u, create(5, {})).created);
        e.clear();
        CHECK(u.load(c.text, "state", e) == -EINVAL);
        REQUIRE(!e.empty());
        CHECK(e[0] == c.first);
        CHECK(u.overlay_count() == 1);   // unchanged
    }
}

TEST_CASE("server: events are logged one line each, bounded") {
    Limits lim;
    lim.max_events = 4;
    Server s(lim);
    REQUIRE(call(s, create(1, {})).created);
    std::string line;
    REQUIRE(s.poll_event(line));
    CHECK(line.rfind("created overlay 1 (DT, key hash 0x", 0) == 0);
    CHECK(!s.poll_event(line));
    for (int i = 0; i < 10; ++i) call(s, member_op(Op::join, 1, member(i)));
    REQUIRE(s.poll_event(line));
    CHECK(line == "6 log lines dropped (too many events at once)");
    int n = 0;
    while (s.poll_event(line)) ++n;
    CHECK(n == 4);
    CHECK(line == "join overlay 1: 10.0.0.9:9000 (10 members)");
}
